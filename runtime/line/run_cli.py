"""`daad run`: score a camera, stream, video or image folder against the product's threshold.

Composes the pieces: a source and its capture thread, a backend, the event log, the sinks (NG
images, overlay video, window) and the statistics, then hands them to runtime.line.loop.run_loop.
SIGINT/SIGTERM stop the loop between frames; the event log is flushed and the summary written
on every way out, including a source that is lost for good.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from runtime.atomic import atomic_write_json, check_output_file
from runtime.backends.options import BackendOptions, add_backend_options, not_negative, positive
from runtime.bundle import open_bundle
from runtime.errors import DaadError
from runtime.line.artefacts import QUEUE_DEPTH, ArtefactSettings, open_artefacts
from runtime.line.events import EventLog, last_product, new_run_id
from runtime.line.input_check import InputCheck
from runtime.line.extensions import RunContext, RunExtension, load_extensions
from runtime.line.live_threshold import LiveThreshold
from runtime.line.loop import RunStats, Sink, open_reader, run_line
from runtime.line.products import (Product, ProductLine, open_product, product_names, resolve_threshold,
                                   sharing_backbone)
from runtime.line.sources import MODES, FrameReader, Source, open_source, source_location
from runtime.paths import OutputPathError, check_outputs
from runtime.plant.options import PlantPlan, add_plant_options, add_plant_outputs, plan_plant_outputs
from runtime.signals import STOP_SIGNALS, take

TAKES_HELD_SIGNALS = True  # a stop signal during start-up ends the run with its summary (runtime.signals)


def build_parser(extensions: list[RunExtension] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daad run",
        description="Score every frame of a camera, stream, video or image folder; one JSON line per frame.",
        epilog="Sources: 0 (camera index), /dev/video0, csi://0, rtsp://host/stream, a GStreamer pipeline "
        "ending in appsink, a video file, an image folder or a glob such as 'parts/*.png'.",
    )
    add = parser.add_argument
    judged_by = parser.add_mutually_exclusive_group(required=True)
    judged_by.add_argument("--bundle", type=Path, metavar="DIR", help="bundle folder written by `daad export`")
    judged_by.add_argument("--products", type=Path, metavar="DIR",
                           help="folder of one bundle per product (the folder name is the product's name): the "
                           "line can change product while it runs (docs/RUNTIME.md, 'Product changeover')")
    add("--product", default=None, metavar="NAME",
        help="with --products: the product to start on (default: the one the last line of --events names, so a "
        "restart resumes it; else the folder's only product)")
    add("--source", required=True, metavar="SRC", help="what to read frames from (see below)")
    add_backend_options(parser, batch=False)  # the loop scores one frame at a time
    add("--mode", choices=MODES, default=None,
        help="realtime: newest frame only, drops counted (default for cameras and streams); "
        "lossless: every frame in order (default for files and folders)")
    add("--threshold", type=float, default=None, metavar="T",
        help="override threshold.json (for trials; production runs use the calibrated one)")
    add("--events", type=Path, default=None, metavar="FILE.jsonl", help="append one JSON line per frame to this file")
    add("--summary", type=Path, default=None, metavar="FILE.json",
        help="write the end-of-run summary here (default: next to --events as *.summary.json)")
    add("--save-ng", type=Path, default=None, metavar="DIR", help="save NG frames with a heat map into this folder")
    add("--save-ng-max-mb", type=positive(float), default=500.0, metavar="MB",
        help="disk cap of --save-ng; the oldest images are removed first (default 500)")
    add("--output", type=Path, default=None, metavar="VIDEO", help="write an overlay video (.avi: MJPG, .mp4: mp4v)")
    add("--display", action="store_true", help="show the overlay in a window (q or Esc stops)")
    add("--artefact-queue", type=positive(int), default=QUEUE_DEPTH, metavar="N",
        help=f"frames each picture writer (--save-ng, --output, --display) may hold; beyond that pictures are "
        f"dropped and counted, verdicts never (default {QUEUE_DEPTH})")
    add("--max-frames", type=positive(int), default=None, metavar="N", help="stop after this many frames")
    add("--loop", action="store_true", help="start a video file or image folder again at its end")
    add("--stats-every", type=not_negative, default=5.0, metavar="S",
        help="seconds between stats lines on stderr (0: none)")
    add("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="Python logging level for stderr (default WARNING)")
    for extension in extensions:
        extension.add_arguments(parser)
    add_plant_options(parser)
    return parser


def open_line(args: argparse.Namespace, options: BackendOptions) -> ProductLine:
    """What judges the frames: one --bundle, or --products DIR starting on --product, opened and checked."""
    if args.products is None:
        if args.product is not None:
            raise DaadError("--product chooses among --products DIR: give --products, or drop --product")
        bundle = open_bundle(args.bundle)
        calibration, origin = resolve_threshold(bundle, options, args.threshold)
        live = LiveThreshold(calibration, origin)
        return ProductLine(Product(None, bundle.preprocess, options.open(bundle), live, bundle))
    if args.threshold is not None:
        raise DaadError("--threshold is a trial of one --bundle; with --products every product is judged by its "
                        "own threshold.json: calibrate it, or try it alone with --bundle")
    name = first_product(args.products, args.product, args.events)
    return ProductLine(open_product(args.products, name, options), args.products, options)


def first_product(folder: Path, chosen: str | None, events: Path | None) -> str:
    """--product; else the product the last run on --events ended on (a restart resumes it); else the only one."""
    names = product_names(folder)
    if chosen is not None:
        return chosen
    resumed = last_product(events)
    if resumed is not None:
        if resumed not in names:
            raise DaadError(f"--events {events} ends on product {resumed!r}, which --products {folder} no longer "
                            f"holds: choose the one to start on with --product NAME")
        print(f"daad run: resuming product {resumed}, the last one in --events {events}", file=sys.stderr)
        return resumed
    if len(names) != 1:
        held = ", ".join(names) or "none: no sub-folder holds a model.json"
        raise DaadError(f"--products {folder} holds {len(names)} products ({held}): choose the one to start on "
                        f"with --product NAME")
    return names[0]


def graphs_run(product: Product, products: Path | None) -> str:
    """What the product's backend runs, for the start-up line and the summary; a backbone lent to every
    product taught from its part (a taught bundle on ONNX Runtime) is said with the products that share it."""
    graphs = product.backend.choice.graphs  # type: ignore[attr-defined]
    lease = getattr(product.backend, "backbone", None)
    if lease is None or products is None:
        return graphs
    sharing = sharing_backbone(products, lease.key.sha256)
    return f"{graphs}, one backbone session for the {len(sharing)} product(s) of {products} taught from its part " \
           f"({', '.join(sharing)})"


def check_run_outputs(args: argparse.Namespace) -> None:
    """Refuse, before anything is written, outputs that are the source, a bundle file or each other."""
    check_outputs(
        inputs={"--source": source_location(args.source), "--bundle": args.bundle, "--products": args.products,
                "--mqtt-password-file": args.mqtt_password_file, "--mqtt-ca": args.mqtt_ca,
                "--mqtt-cert": args.mqtt_cert, "--mqtt-key": args.mqtt_key},
        outputs={"--events": args.events, "--summary": summary_path(args), "--save-ng": args.save_ng,
                 "--output": args.output},
    )
    files = {"--events": args.events, "--summary": summary_path(args), "--output": args.output}
    for option, path in files.items():  # a folder that cannot be written is better known now than at the end
        if path is None:
            continue
        if path.exists() and not path.is_file():
            if option == "--events" and not path.is_dir():
                continue  # a pipe or terminal (/dev/stdout): appended to, never replaced
            raise OutputPathError(f"{option} {path} exists and is not a file: choose a file path for {option}.")
        check_output_file(path)


def summary_path(args: argparse.Namespace) -> Path | None:
    if args.summary is not None:
        return args.summary
    if args.events is not None:
        return args.events.with_name(args.events.stem + ".summary.json")
    return None


@contextmanager
def stop_on_signals(stop: threading.Event, reason: dict[str, str]) -> Iterator[None]:
    """SIGINT/SIGTERM set `stop`, so the loop finishes the frame in hand and the logs are closed properly;
    one that came while `daad` was still importing this verb (held by runtime.signals) counts the same."""
    def handle(signum: int, _frame: Any) -> None:
        reason["stopped_by"] = signal.Signals(signum).name
        stop.set()

    held = take()
    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    for signum in held[:1]:
        handle(signum, None)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_counters(reader: FrameReader, source: Source, sinks: list[Sink]) -> dict[str, int]:
    """What the stats line and the summary count beside the verdicts."""
    counts = {
        "read": reader.produced,
        "dropped": reader.dropped,
        "unprocessed": reader.pending,
        "stalls": reader.stalls,
        "read_errors": getattr(source, "read_errors", 0),
        "reconnects": getattr(source, "reconnects", 0),
    }
    if getattr(source, "frames_expected", 0):  # a video file whose container says how long it is
        counts["frames_expected"] = source.frames_expected
    for sink in sinks:
        counts.update(getattr(sink, "counts", {}))
    return counts


def open_sinks(sinks: list[Sink], args: argparse.Namespace, plant: PlantPlan, line: ProductLine, source: Source,
               stop: threading.Event, header: dict[str, Any], counters: Callable[[], dict[str, int]],
               token: str | None) -> None:
    """The loop's outputs in the verdict's priority (reject pin, plant message, metrics), the input
    check, then the pictures' writer, which only enqueues; each is appended as it opens, so what
    opened is closed. `token`: the console's, which changeover commands over MQTT must carry."""
    station = {key: str(header[key]) for key in ("station", "run_id", "precision")}

    def info() -> dict[str, str]:  # at scrape time: the product on the line
        product = line.current
        return {**station, "product": product.name or "", "bundle": str(product.bundle.root),
                "model_sha256": product.bundle.sha256, "backend": product.backend.choice.name}

    bundle = line.current.bundle
    add_plant_outputs(sinks, plant, info, lambda: line.current.threshold.value, counters,
                      line if line.folder is not None else None, token)
    sinks.append(InputCheck(bundle.preprocess))
    pictures = ArtefactSettings(args.save_ng, args.save_ng_max_mb, args.output, args.display, args.artefact_queue,
                                header["run_id"])
    artefacts = open_artefacts(pictures, bundle.preprocess, getattr(source, "fps", 0.0) or 15.0, stop)
    if artefacts is not None:
        sinks.append(artefacts)


@contextmanager
def closing_all(sinks: list[Sink]) -> Iterator[None]:
    """Close every sink on the way out, in order, before the summary counts what they did."""
    try:
        yield
    finally:
        for sink in sinks:
            sink.close()


def start_extensions(extensions: list[RunExtension], args: argparse.Namespace, context: RunContext,
                     stack: ExitStack) -> list[Sink]:
    """The sinks of the extensions asked for (e.g. --console), each closed when the run ends."""
    attached = []
    for extension in extensions:
        sink = extension.start(args, context)
        if sink is not None:
            stack.callback(sink.close)
            attached.append(sink)
    return attached


def write_summary(summary: dict[str, Any], path: Path | None) -> None:
    """Printed first, so the numbers survive a summary file that cannot be written."""
    print(json.dumps(summary, indent=2), flush=True)
    if path is not None:
        atomic_write_json(path, summary)


def main(argv: list[str] | None = None) -> int:
    extensions = load_extensions()
    args = build_parser(extensions).parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="daad run: %(levelname)s %(message)s")
    stop, ending = threading.Event(), {"stopped_by": "end of source"}
    # From the first line on, a signal only asks to stop: one during start-up (imports, opening the
    # model) is answered once the run is set up, with a summary, instead of a half-imported traceback.
    with stop_on_signals(stop, ending), ExitStack() as stack:
        check_run_outputs(args)
        plant = plan_plant_outputs(args)
        options = BackendOptions.from_args(args)
        line = open_line(args, options)
        stack.callback(line.close)
        first = line.current
        bundle, live = first.bundle, first.threshold
        calibration, threshold_from = live.get().calibration, live.get().origin
        threshold = calibration.threshold
        source = open_source(args.source, loop=args.loop, sleep=stop.wait)  # a stop cuts reconnect waits short
        stack.callback(source.close)
        mode = args.mode or ("realtime" if source.live else "lossless")
        choice = first.backend.choice  # type: ignore[attr-defined]
        on = f"product {first.name} of {args.products}: " if first.name else ""
        graphs = graphs_run(first, args.products)
        print(f"daad run: {on}{source.name} ({mode}) -> {choice.name} {args.precision} ({choice.reason}) running "
              f"{graphs}; threshold {threshold:.6g} from {threshold_from}", file=sys.stderr)
        header = {
            "run_id": new_run_id(), "station": args.station,
            "bundle": str(bundle.root), "products": args.products and str(args.products), "product": first.name,
            "model_sha256": bundle.sha256, "source": source.name, "mode": mode,
            "backend": choice.name, "backend_reason": choice.reason, "backend_graphs": graphs,
            "precision": args.precision,
            "fault_action": args.fault_action if getattr(args, "reject", None) else None,  # it acts on the reject pin alone
            "threshold": threshold, "threshold_id": calibration.entry, "threshold_from": threshold_from,
            "events": str(args.events) if args.events else None,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        events = stack.enter_context(EventLog(args.events, header["run_id"]))
        reader = open_reader(source, mode, bundle.preprocess, stop)
        sinks: list[Sink] = []
        attached: list[Sink] = []  # the extensions' sinks (the console's): counted like the others
        counters = lambda: run_counters(reader, source, sinks + attached)  # noqa: E731
        stats = RunStats(args.stats_every, counters=counters)
        context = RunContext(bundle, choice.name, args.precision, live, stats.counters, stop, args.events,
                             header["run_id"], line if line.folder is not None else None)
        attached += start_extensions(extensions, args, context, stack)
        token = next((sink.control_token for sink in attached if getattr(sink, "control_token", None)), None)
        try:
            with closing_all(attached), closing_all(sinks), reader:  # all closed before the summary counts them
                open_sinks(sinks, args, plant, line, source, stop, header, counters, token)
                run_line(reader, line, source.name, events, sinks + attached, stats, args.max_frames)
            if args.max_frames is not None and stats.frames >= args.max_frames:
                ending["stopped_by"] = "max-frames"
        except BaseException as exc:
            ending["stopped_by"] = f"error: {exc}"
            raise
        finally:
            finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
            said = (getattr(source, "warning", None), events.warning, *(getattr(sink, "warning", None) for sink in sinks))
            warnings = [warning for warning in said if warning]
            for warning in warnings:
                print(f"daad run: warning: {warning}", file=sys.stderr)
            write_summary({**header, "finished": finished, **ending, **stats.summary(), "events_lost": events.lost,
                           "warnings": warnings}, summary_path(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
