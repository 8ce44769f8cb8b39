"""`daad teach`: teach a product from good parts on the device, without PyTorch, into a calibrated bundle.

Features of the good parts through the backbone part (its TensorRT engine where the device has
one, else ONNX Runtime), a greedy coreset of the kept parts' patches (numpy), the memory written
as constants of a head graph fused onto the backbone, then the threshold from the held-out parts
through `daad calibrate`'s own code, on the backend the line will run (teach/line_backend.py). The
bundle, its threshold and its history are those `daad export` + `daad calibrate` would write.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from calibration.calibrate import CalibrationSettings
from calibration.calibrate_cli import calibrate_and_save, name_list
from calibration.save import Saved
from calibration.scoring import score_images
from patchmemory.backbone_part import BackbonePart, read_backbone_part
from patchmemory.coreset import DEFAULT_MEMORY_SIZE, coreset_rows
from patchmemory.head import DEFAULT_MAP_SIGMA
from runtime.atomic import check_output_folder, remove_orphan_temp_files
from runtime.backends.options import BackendOptions, add_backend_options, positive
from runtime.bundle import open_bundle
from runtime.errors import DaadError
from runtime.lock import exclusive
from runtime.paths import check_outputs
from runtime.threshold import HISTORY_DIR, LOCK_FILE
from teach.features import BackboneRunner
from teach.line_backend import features_engine, open_line_backend
from teach.parts import GoodParts, check_enough_parts, holdout_mask, read_good_parts
from teach.product import (
    TAUGHT_BY,
    ProductGraphs,
    ProductSettings,
    check_assembly,
    check_replaceable,
    head_scores,
    product_graphs,
    write_product,
)

DEFAULT_HOLDOUT = 0.2  # every 5th part calibrates (teach/parts.py says why a held-out share)

EPILOG = """\
examples:
  daad teach --backbone parts/lite0-224 --good good_parts/ --out products/cap
      every image in good_parts/: 4 in 5 kept in the memory, every 5th sets the threshold
  daad teach --backbone parts/lite0-224 --good 0 --parts 200 --out products/cap --name "cap, line 3"
      the next 200 frames of camera 0 (only good parts must pass while it takes them)

Make the backbone part once, where PyTorch is: daad export --backbone lite0 --image-size 224x224 --out parts/lite0-224
See docs/TEACH.md.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daad teach",
        description="Teach a product from good parts, without PyTorch: writes an ordinary, calibrated bundle "
        "(model.onnx, model.json, threshold.json, calibration.png) plus the backbone and the product's memory "
        "head as separate graphs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backbone", required=True, type=Path, metavar="PART",
                        help="backbone part folder (backbone.onnx + backbone.json) from `daad export --backbone`, "
                        "or a bundle taught from one")
    parser.add_argument("--good", required=True, metavar="DIR_OR_SOURCE",
                        help="folder of images of good parts (or an MVTec AD data set: its train/good), or a camera, "
                        "stream or video as `daad run --source` takes it (then --parts is needed)")
    parser.add_argument("--parts", type=positive(int), default=None, metavar="N",
                        help="how many good parts to take (default: every image in the folder)")
    parser.add_argument("--out", required=True, type=Path, metavar="BUNDLE", help="bundle folder to write")
    parser.add_argument("--name", default=None, metavar="PRODUCT", help="the product's name (default: the folder name of --out)")
    parser.add_argument("--memory-size", type=positive(int), default=DEFAULT_MEMORY_SIZE, metavar="K",
                        help=f"patches the memory keeps (default {DEFAULT_MEMORY_SIZE}, as daad train)")
    parser.add_argument("--map-sigma", type=float, default=DEFAULT_MAP_SIGMA, metavar="PX",
                        help=f"smoothing of the anomaly map in input pixels (default {DEFAULT_MAP_SIGMA:g}, as daad train)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the coreset: the same parts and seed keep the same memory")
    parser.add_argument("--holdout", type=float, default=DEFAULT_HOLDOUT, metavar="FRACTION",
                        help=f"share of the parts kept out of the memory to set the threshold (default {DEFAULT_HOLDOUT:g})")
    parser.add_argument("--target-frr", type=float, default=0.005,
                        help="false-reject rate the threshold aims at, as daad calibrate (default 0.005)")
    parser.add_argument("--batch", type=positive(int), default=8, metavar="N", help="frames per inference call (default 8)")
    parser.add_argument("--note", default="", help="free text kept in threshold.json, e.g. who taught it and why")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    add_backend_options(parser, batch=False)  # what calibrates: the backend the line will score the product with
    return parser


def line_options(args: argparse.Namespace) -> BackendOptions:
    """The backend the line will score the product with (teach/line_backend.py): the features come from its
    backbone, the threshold is measured on it."""
    return BackendOptions(args.backend, args.precision, args.threads, args.providers)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    begun = time.perf_counter()
    good_folder = Path(args.good) if Path(args.good).exists() else None
    check_outputs(inputs={"--backbone": args.backbone, "--good": good_folder}, outputs={"--out": args.out})
    settings, calibration = teach_settings(args)
    part = read_backbone_part(args.backbone)
    features_engine(line_options(args), args.backbone, part)  # refuses --backend tensorrt it cannot serve, now
    check_output_folder(args.out)
    check_replaceable(args.out)
    parts = read_good_parts(args.good, args.parts, part.preprocess_config)
    _report_left_out(parts)
    check_enough_parts(parts, args.holdout)
    taught = fit(args, part, parts, settings)
    taught.training["fit_seconds"] = time.perf_counter() - begun
    save_and_calibrate(args, taught, calibration)
    print(f"wrote {args.out} in {time.perf_counter() - begun:.0f} s: run it with "
          f"`daad run --bundle {args.out} --source SRC`")  # fmt: skip
    return 0


def teach_settings(args: argparse.Namespace) -> tuple[ProductSettings, CalibrationSettings]:
    """The product's and the threshold's settings from the arguments, refused in one line when out of range."""
    if not np.isfinite(args.map_sigma) or args.map_sigma < 0:
        raise DaadError(f"--map-sigma must be 0 or more pixels, got {args.map_sigma}")
    try:
        return ProductSettings(args.memory_size, args.map_sigma, args.seed), CalibrationSettings(target_frr=args.target_frr)
    except ValueError as exc:
        raise DaadError(f"{exc}: see `daad teach --help`") from exc


def _quiet(step: str) -> None:
    """No one watches the steps: the command line shows progress bars instead."""


@dataclass
class Taught:
    """A fitted product not yet written: its graphs and what model.json records of it."""

    part: BackbonePart
    parts: GoodParts
    held: np.ndarray  # bool per part: held out for the threshold
    settings: ProductSettings
    graphs: ProductGraphs
    training: dict[str, Any]
    head_scores: np.ndarray  # the head's own scores of the held-out parts, in their order


def fit(args: argparse.Namespace, part: BackbonePart, parts: GoodParts, settings: ProductSettings,
        step: Callable[[str], None] = _quiet) -> Taught:  # fmt: skip
    """Features of every part, the coreset of the kept ones, the graphs, the head's held-out scores.

    `step` is told each step as it begins ("features", "coreset"): the console's page shows it."""
    progress = not args.no_progress
    held = holdout_mask(len(parts.names), args.holdout)
    step("features")
    runner = BackboneRunner(args.backbone, part, args.threads, features_engine(line_options(args), args.backbone, part))
    rows = runner.rows(parts.images, args.batch, progress)
    runner.close()
    held_rows = np.repeat(held, part.grid[0] * part.grid[1])
    step("coreset")
    memory = coreset_rows(rows[~held_rows], settings.memory_size, settings.seed, progress)
    graphs = product_graphs(args.backbone, part, memory, settings.map_sigma)
    scores = head_scores(graphs.head, rows[held_rows], part, args.batch)
    training = {
        "taught_by": TAUGHT_BY,
        "product": args.name or Path(args.out).resolve().name,
        "source": parts.source,
        "backbone_part": {"folder": str(Path(args.backbone).resolve()), "sha256": part.onnx_sha256},
        "parts": len(parts.names),
        "holdout": args.holdout,
        "memory_parts": [name for name, out in zip(parts.names, held) if not out],
        "calibration_parts": [name for name, out in zip(parts.names, held) if out],
        "skipped_images": parts.skipped,
        "grey_images": parts.grey,
        "seed": settings.seed,
        "features_on": runner.name,
        "patches": int((~held_rows).sum()),
        "memory": len(memory),
    }
    return Taught(part, parts, held, settings, graphs, training, scores)


def save_and_calibrate(args: argparse.Namespace, taught: Taught, calibration: CalibrationSettings,
                       step: Callable[[str], None] = _quiet) -> Saved:  # fmt: skip
    """Under the bundle's lock: write the bundle, score the held-out parts with it, save the threshold."""
    step("calibration")
    out, training = Path(args.out), taught.training
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out / LOCK_FILE, f"teaching of {out}") as died:
        if died is not None:
            _warn(f"took over {out / LOCK_FILE} from a calibration or teaching that is no longer running ({died})")
        for folder in (out, out / HISTORY_DIR):
            removed = remove_orphan_temp_files(folder)
            if removed:
                _warn(f"removed {len(removed)} temp file(s) that killed writes left in {folder}: "
                      f"{name_list([path.name for path in removed])}")  # fmt: skip
        scores = taught.head_scores
        score_stats = {"min": float(scores.min()), "median": float(np.median(scores)), "max": float(scores.max()),
                       "images": int(scores.size)}  # fmt: skip
        write_product(out, taught.part, taught.graphs, taught.settings, training, score_stats)
        bundle = open_bundle(out)
        names = training["calibration_parts"]
        with open_line_backend(bundle, line_options(args)) as backend:
            batch = min(args.batch, getattr(backend, "max_batch", args.batch))  # a TensorRT engine's largest batch
            good = score_images(backend, taught.parts.images[taught.held], names, [],
                                f"{taught.parts.source} (held-out parts)", batch, not args.no_progress)  # fmt: skip
            scored = np.isin(names, good.names)  # NaN scores are set aside by name, and named by calibration
            exact = backend.name == "onnxruntime"
            error = check_assembly(taught.head_scores[scored], good.scores, bundle.onnx_path, refuse=exact)
            scorer = "model.onnx" if exact else f"TensorRT ({backend.precision}: the shared backbone and this head's engine)"
            print(f"taught {training['product']}: {training['memory']} of {training['patches']:,} patches from "
                  f"{len(training['memory_parts'])} parts; {len(names)} held-out parts set the threshold on "
                  f"{backend.name} {backend.precision} ({training['fit_seconds']:.0f} s to the memory; {scorer} scores "
                  f"them as the head alone on ONNX Runtime within {error:.2g} of the score)")  # fmt: skip
            return calibrate_and_save(bundle, good, None, calibration, backend,
                                      args.note or f"taught from {taught.parts.source}", _warn)  # fmt: skip


def _report_left_out(parts: GoodParts) -> None:
    """Name every part that could not be used, and a source that gave fewer parts than asked for."""
    if parts.skipped:
        _warn(f"{len(parts.skipped)} image(s) in {parts.source} skipped: {name_list(parts.skipped)}")
    if parts.grey:
        _warn(f"{len(parts.grey)} image(s) in {parts.source} are grey, given to a colour backbone: used with the grey "
              f"in all three channels: {name_list(parts.grey)}")  # fmt: skip
    if parts.wanted is not None:
        _warn(f"{parts.source} gave {len(parts.names) + len(parts.skipped)} parts, not the {parts.wanted} asked for "
              "with --parts: teaching from those")  # fmt: skip


def _warn(text: str) -> None:
    print(f"daad teach: {text}", file=sys.stderr)
