"""`daad bench`: latency and throughput per stage and per backend, on the same inputs, in one run.

Backends that are not installed here (TensorRT without a GPU, PyTorch on a Jetson) are
reported as skipped with the reason. PyTorch eager is a reference only: runtime/ never imports
torch, so the package that can run it registers it (entry point group `daad.backends`,
`name = "module:callable(checkpoint) -> Backend [extra]"`), and it is loaded only when asked for.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import closing
from dataclasses import replace
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Callable

from runtime.atomic import check_output_file
from runtime.backends.base import Backend
from runtime.backends.options import BackendOptions, add_backend_options, not_negative, positive
from runtime.bench.runner import BackendOpener, BenchConfig, BenchReport, run_bench
from runtime.bench.report import render_markdown, write_json, write_markdown
from runtime.bundle import Bundle, open_bundle
from runtime.bench.environment import collect_environment
from runtime.errors import DaadError, OutputError
from runtime.line.sources import open_source
from runtime.optional import extras_needed
from runtime.paths import check_outputs
from runtime.threshold import read_threshold

REFERENCE_GROUP = "daad.backends"


def reference_backends() -> dict[str, EntryPoint]:
    """Backends registered from outside runtime/ (the PyTorch reference): name -> entry point."""
    return {entry.name: entry for entry in entry_points(group=REFERENCE_GROUP)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daad bench",
        description="Latency per stage (capture/decode, preprocess, host-to-device, compute, device-to-host, "
        "postprocess, end to end) and throughput of each backend on the same inputs. "
        "See docs/BENCHMARKING.md for how to get numbers you can defend on a Jetson.",
    )
    parser.add_argument("--bundle", required=True, type=Path, help="bundle folder (from `daad export`)")
    add_backend_options(parser, compare=("onnxruntime", "tensorrt", *reference_backends()))
    parser.add_argument("--warmup-s", type=not_negative, default=1.0, help="warm-up per case, not measured (default: 1)")
    parser.add_argument("--duration-s", type=not_negative, default=5.0, help="measured time per case (default: 5)")
    parser.add_argument("--iterations", type=int, default=10,
                        help="measure at least this many iterations per case, like trtexec (default: 10)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run everything this many times and report whether the medians agree within 10%%")
    parser.add_argument("--source", default=None,
                        help="benchmark the whole camera loop on this video file, camera index or URI "
                        "(batch 1) instead of fixed 1280x720 frames")
    parser.add_argument("--fps", type=positive(float), default=None, metavar="N",
                        help="with --source FILE: deliver the file at N frames/s, as a camera would, in realtime mode "
                        "(newest frame only, drops counted), to measure realtime latency and drops from a recording")
    parser.add_argument("--save-ng", default=None, metavar="DIR",
                        help="with --source: save NG pictures here as `daad run --save-ng` does, to measure their cost")
    parser.add_argument("--output", default=None, metavar="VIDEO",
                        help="with --source: write the overlay video as `daad run --output` does")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="PyTorch checkpoint for --backend torch (default: the one model.json records)")
    parser.add_argument("--json", type=Path, default=None, help="write every stage and statistic as JSON here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the Markdown tables here")
    return parser


def checkpoint_for(bundle: Bundle, given: Path | None) -> Path:
    """The checkpoint behind the bundle: --checkpoint, else the path model.json's training record names."""
    training = bundle.metadata.training or {}
    recorded = training.get("checkpoint") or training.get("checkpoint_path")
    path = given or (Path(recorded) if recorded else None)
    if path is None:
        raise DaadError(
            f"{bundle.root / 'model.json'} records no checkpoint for the PyTorch reference: pass --checkpoint PATH"
        )
    if not path.is_file():
        raise DaadError(f"checkpoint {path} does not exist: pass --checkpoint PATH to the model's .pt file")
    return path


def resolve_reference(entry: EntryPoint, threads: int | None) -> Callable[[Path], Backend]:
    """Load a registered reference backend now (never at import time); a missing package names its extra."""
    if threads is not None and "torch" not in sys.modules:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # torch sizes its intra-op pool from this at import
    with extras_needed(entry.extras, f"the {entry.name} reference backend"):
        return entry.load()


def make_opener(bundle: Bundle, options: BackendOptions, checkpoint: Path | None) -> BackendOpener:
    """Backend name, precision, batch -> an opened backend with the given threads, providers and checkpoint."""
    references = reference_backends()

    def open_named(name: str, precision: str, batch: int) -> Backend:
        if name in references:
            if precision != "fp32":
                raise DaadError(f"the {name} reference runs at fp32 only, not {precision}")
            return resolve_reference(references[name], options.threads)(checkpoint_for(bundle, checkpoint))
        return replace(options, backend=name, precision=precision, batch=batch).open(bundle)

    return open_named


def bench(args: argparse.Namespace) -> BenchReport:
    source_file = args.source if args.source is not None and Path(args.source).is_file() else None
    check_outputs(
        inputs={"--bundle": args.bundle, "--source": source_file, "--checkpoint": args.checkpoint},
        outputs={"--json": args.json, "--markdown": args.markdown, "--save-ng": args.save_ng, "--output": args.output},
    )
    for path in (args.json, args.markdown):
        if path is not None:
            check_output_file(path)  # now, not after minutes of measuring
    bundle = open_bundle(args.bundle)
    record = read_threshold(bundle)
    config = BenchConfig(
        backends=args.backend,
        precisions=args.precision,
        batches=args.batch,
        warmup_s=args.warmup_s,
        duration_s=args.duration_s,
        min_iterations=args.iterations,
        repeat=args.repeat,
        threshold=record.threshold if record else None,
        source=args.source,
        save_ng=args.save_ng,
        output=args.output,
        fps=args.fps,
    )
    if (args.save_ng or args.output) and args.source is None:
        raise DaadError("--save-ng and --output measure the camera loop's pictures: add --source VIDEO")
    if (args.save_ng or args.output) and record is None:
        raise DaadError(f"--save-ng and --output draw the verdicts, and {bundle.threshold_path} is missing: calibrate "
                        f"the bundle first (`daad calibrate --bundle {bundle.root}`) or drop them")
    open_frames = None
    if args.source is not None:
        with closing(open_source(args.source)) as source:  # a wrong source fails now, not after the first backend
            if args.fps is not None and source.live:
                raise DaadError(f"--fps paces a file like a camera; {args.source} is live and keeps its own rate: "
                                "drop --fps")
        # A paced file runs as a camera does, for the whole --duration-s: from its start again at its end.
        open_frames = lambda: open_source(args.source, loop=args.fps is not None)  # noqa: E731
    elif args.fps is not None:
        raise DaadError("--fps paces a recording: add --source VIDEO (or an image folder)")
    options = BackendOptions(threads=args.threads, providers=args.providers)
    opener = make_opener(bundle, options, args.checkpoint)
    return run_bench(bundle, config, opener, collect_environment(), open_frames)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = bench(args).to_dict()
    print(render_markdown(report), flush=True)  # first: a report file that cannot be written loses no measurement
    for warning in report["warnings"]:
        print(f"daad bench: warning: {warning}", file=sys.stderr)
    if args.json is not None:
        try:
            write_json(report, args.json)
        except OutputError:
            print(json.dumps(report, indent=2))  # every number the file would have held
            raise
    if args.markdown is not None:
        write_markdown(report, args.markdown)
    return 0
