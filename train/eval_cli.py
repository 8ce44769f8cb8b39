"""`daad eval`: metrics of a checkpoint or a bundle on a data set's test split, plus a picture.

A bundle is scored through a runtime backend, so the numbers are those of the graph, engine and
precision that run on the line, not of the PyTorch model they came from.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from runtime.atomic import atomic_write_json
from runtime.backends.options import BackendOptions, add_backend_options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daad eval",
        description="Image AUROC, pixel AUROC, AUPRO, F1-max and per-defect AUROC of a checkpoint or a "
        "bundle on DIR/test (MVTec AD layout), and a PNG grid of good and defective examples.",
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", type=Path, help="RUN/checkpoint.pt from `daad train` (PyTorch)")
    model.add_argument("--bundle", type=Path, help="bundle folder from `daad export`, scored through --backend")
    parser.add_argument("--data", required=True, type=Path, help="product folder with test/ (and ground_truth/)")
    parser.add_argument("--json", type=Path, help="also write the metrics to this JSON file")
    parser.add_argument("--grid", type=Path, help="where to write the example grid (default: eval_grid.png next to the checkpoint, or in the bundle)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="with --checkpoint: PyTorch device")
    add_backend_options(parser)  # with --bundle
    return parser


def format_table(metrics: dict[str, Any]) -> str:
    def cell(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    rows = [(name, cell(metrics[name])) for name in ("image_auroc", "pixel_auroc", "aupro", "f1_max")]
    rows += [(f"  {defect}", cell(value)) for defect, value in metrics["per_defect"].items()]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.bundle is not None:
        evaluation, kind, grid = _evaluate_bundle(args)
    else:
        evaluation, kind, grid = _evaluate_checkpoint(args)
    print(f"{kind} on {args.data}")
    print(format_table(evaluation.metrics))
    print(f"examples: {grid}")
    if args.json:
        atomic_write_json(args.json, evaluation.metrics)
        print(f"metrics: {args.json}")
    return 0


def _evaluate_checkpoint(args: argparse.Namespace) -> tuple[Any, str, Path]:
    from train.checkpoint import load_checkpoint
    from train.evaluate import evaluate, save_grid
    from train.families import family_for
    from train.torch_backend import TorchBackend

    loaded = load_checkpoint(args.checkpoint, device=args.device)
    with TorchBackend(loaded.model, device=args.device) as backend:
        evaluation = evaluate(backend, args.data, loaded.preprocess, progress=True)
    grid = save_grid(args.grid or args.checkpoint.parent / "eval_grid.png", evaluation, family_for(loaded.model_config.kind).reconstructor(loaded.model))
    return evaluation, loaded.model_config.kind, grid


def _evaluate_bundle(args: argparse.Namespace) -> tuple[Any, str, Path]:
    from runtime.bundle import open_bundle
    from runtime.score_scale import ScoreScale
    from runtime.threshold import read_threshold
    from train.evaluate import evaluate, save_grid

    bundle = open_bundle(args.bundle)
    options = BackendOptions.from_args(args)
    with options.open(bundle) as backend:
        evaluation = evaluate(backend, args.data, bundle.preprocess, batch_size=options.batch, progress=True)
        kind = f"{bundle.metadata.model_kind} ({backend.name} {backend.precision})"
    record = read_threshold(bundle)  # colours fixed to the product's calibration, when it has one
    scale = ScoreScale.from_calibration(record.threshold, record.score_stats) if record is not None else None
    grid = save_grid(args.grid or bundle.root / "eval_grid.png", evaluation, scale=scale)
    return evaluation, kind, grid
