"""`daad eval`: metrics of a checkpoint on a data set's test split, plus a picture."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from runtime.atomic import atomic_write_json


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daad eval",
        description="Image AUROC, pixel AUROC, AUPRO, F1-max and per-defect AUROC of a checkpoint on "
        "DIR/test (MVTec AD layout), and a PNG grid of good and defective examples.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="RUN/checkpoint.pt from `daad train`")
    parser.add_argument("--data", required=True, type=Path, help="product folder with test/ (and ground_truth/)")
    parser.add_argument("--json", type=Path, help="also write the metrics to this JSON file")
    parser.add_argument("--grid", type=Path, help="where to write the example grid (default: next to the checkpoint, eval_grid.png)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    return parser


def format_table(metrics: dict[str, Any]) -> str:
    def cell(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    rows = [(name, cell(metrics[name])) for name in ("image_auroc", "pixel_auroc", "aupro", "f1_max")]
    rows += [(f"  {defect}", cell(value)) for defect, value in metrics["per_defect"].items()]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    from train.checkpoint import load_checkpoint
    from train.evaluate import checkpoint_scorer, evaluate, save_grid

    args = build_parser().parse_args(argv)
    loaded = load_checkpoint(args.checkpoint, device=args.device)
    score_fn, reconstruct_fn = checkpoint_scorer(loaded.model)
    evaluation = evaluate(score_fn, args.data, loaded.preprocess, progress=True)
    grid = save_grid(args.grid or args.checkpoint.parent / "eval_grid.png", evaluation, reconstruct_fn)
    print(f"{loaded.model_config.kind} on {args.data}")
    print(format_table(evaluation.metrics))
    print(f"examples: {grid}")
    if args.json:
        atomic_write_json(args.json, evaluation.metrics)
        print(f"metrics: {args.json}")
    return 0

