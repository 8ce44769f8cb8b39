"""The real-data benchmark: every model kind on every data set under a folder, for several seeds.

    python -m experiments.realdata --data data/real --out runs/realdata --seeds 0 1 2
    python -m experiments.realdata --data data/real data/synth128 --out runs/realdata --models ae daad+

Each run is `experiments.runs.train_and_evaluate` (the code behind `daad train` / `daad eval`,
no validation during training: the budget alone decides when to stop). Per data set and model
kind it reports the mean ± std over the seeds of image AUROC, pixel AUROC, AUPRO, F1-max and
per-defect image AUROC, and the training time; the first seed's model is exported with
`daad export` and timed with `daad bench`'s runner for GFLOPs per image and ONNX Runtime CPU
latency on one thread at batch 1. Synthetic products (`daad synth` output, which has a
synth.json) also get a "synthetic mean" row. Written into --out: realdata.json (every run),
realdata.md (the table for docs/RESULTS.md, with its budget) and a heat-map grid per data set
and kind, grids/SET-KIND.png, which stays there: real images are licensed for evaluation only.

Runs already finished in --out are scored again with --reuse-runs instead of retrained, so the
work can be split into one process per data set or kind and gathered by a last call.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from experiments.runs import products, train_and_evaluate
from runtime.atomic import atomic_write_json, atomic_write_text
from runtime.preprocess import PreprocessConfig, parse_image_size
from train.config import TrainConfig, read_config_file
from train.families import KINDS, family_for

METRICS = ("image_auroc", "pixel_auroc", "aupro", "f1_max")
COSTS = ("train_seconds", "gflops", "latency_ms", "fastest_ms")
SYNTH_MEAN = "synthetic mean"


def data_sets(roots: list[Path], names: list[str] | None) -> list[Path]:
    """Every data set (a folder with train/ and test/) under the given folders."""
    return [found for root in roots for found in products(root, names)]


def cost(checkpoint: Path, bundle: Path, data: Path, bench_seconds: float) -> dict[str, float]:
    """GFLOPs per image and ONNX Runtime latency (median and fastest ms, 1 thread, batch 1) of the
    exported model; on a shared machine the fastest run is the nearer to the model's own speed."""
    from export.export_cli import export_checkpoint
    from runtime.backends.options import BackendOptions
    from runtime.bench.cli import make_opener
    from runtime.bench.environment import collect_environment
    from runtime.bench.runner import BenchConfig, run_bench
    from runtime.bundle import open_bundle

    exported = export_checkpoint(checkpoint, bundle, eval_data=data, parity_limit=32)
    opened = open_bundle(exported.root)
    config = BenchConfig(batches=(1,), warmup_s=bench_seconds / 5, duration_s=bench_seconds)
    report = run_bench(opened, config, make_opener(opened, BackendOptions(backend="onnxruntime", threads=1), None), collect_environment())
    inference = report.cases[0].stages["inference"]
    return {
        "gflops": exported.metadata.model_stats["flops_per_image"] / 1e9,
        "latency_ms": inference.median,
        "fastest_ms": inference.min,
    }


def synthetic_means(rows: list[dict[str, Any]], synthetic: set[str]) -> list[dict[str, Any]]:
    """Per (kind, seed): each metric averaged over the synthetic products, as one more row."""
    means = []
    groups = {(row["kind"], row["seed"]) for row in rows if row["product"] in synthetic}
    for kind, seed in sorted(groups):
        chosen = [row for row in rows if row["product"] in synthetic and (row["kind"], row["seed"]) == (kind, seed)]
        mean = {name: _mean([row.get(name) for row in chosen]) for name in (*METRICS, *COSTS)}
        means.append({"product": SYNTH_MEAN, "kind": kind, "seed": seed, "per_defect": {}, **mean})
    return means


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (data set, kind): mean and std over seeds of every metric."""
    summary = []
    for product, kind in dict.fromkeys((row["product"], row["kind"]) for row in rows):
        chosen = [row for row in rows if (row["product"], row["kind"]) == (product, kind)]
        record = {"product": product, "kind": kind, "seeds": [row["seed"] for row in chosen]}
        for name in (*METRICS, *COSTS):
            record[name] = _mean_std([row.get(name) for row in chosen])
        defects = dict.fromkeys(defect for row in chosen for defect in row["per_defect"])
        record["per_defect"] = {d: _mean_std([row["per_defect"].get(d) for row in chosen]) for d in defects}
        summary.append(record)
    return summary


def table_markdown(summary: list[dict[str, Any]], budget: str) -> str:
    """Data sets x kinds as rows; mean ± std over seeds (n in the seeds column) as cells."""
    lines = [
        budget,
        "",
        "| data set | model | seeds | image AUROC | pixel AUROC | AUPRO | F1-max | per-defect image AUROC "
        "| train s | GFLOPs | ORT 1 thread ms: median / fastest (fps) |",
        "|" + "---|" * 11,
    ]
    for record in summary:
        defects = ", ".join(f"{d} {_cell(v)}" for d, v in record["per_defect"].items()) or "-"
        latency, fastest = record["latency_ms"][0], record["fastest_ms"][0]
        speed = f"{latency:.2f} / {fastest:.2f} ({1000 / fastest:.0f})" if latency and fastest else "-"
        gflops = record["gflops"][0]
        cells = [
            record["product"], record["kind"], " ".join(map(str, record["seeds"])),
            *(_cell(record[name]) for name in METRICS), defects,
            f"{record['train_seconds'][0]:.0f}", f"{gflops:.3f}" if gflops else "-", speed,
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def budget_text(args: argparse.Namespace, train_config: TrainConfig, rows: list[dict[str, Any]]) -> str:
    sets = dict.fromkeys((r["product"], r["image_size"], r["epochs"]) for r in rows)
    return (
        f"Budget: {train_config.budget} of batch {train_config.batch_size} for the pixel kinds, one fitting pass for "
        "the feature memories "
        f"({'; '.join(f'{p} {size} px, {e} epochs' for p, size, e in sets)}), seeds {' '.join(map(str, args.seeds))}; mean ± std over "
        "the seeds; latency: ONNX Runtime CPU, 1 thread, batch 1, the first seed's model."
    )


def run_all(args: argparse.Namespace, sections: dict[str, Any], train_config: TrainConfig) -> list[dict[str, Any]]:
    """Train and evaluate every (data set, kind, seed); rows saved to --out as they come."""
    from train.train_cli import default_size

    rows: list[dict[str, Any]] = []
    for data in data_sets(args.data, args.products):
        for kind in args.models:
            family = family_for(kind)
            height, width = args.image_size or default_size(data, resume=False, family=family)
            preprocess = PreprocessConfig(height=height, width=width, channels=3)
            model_config = family.config_from_dict({**sections.get("model", {}), "kind": kind})
            for seed in args.seeds:
                run = args.out / "runs" / data.name / kind / f"seed{seed}"
                first = seed == args.seeds[0]
                grid = args.out / "grids" / f"{data.name}-{kind}.png" if first else None
                config = replace(train_config, seed=seed)
                row = train_and_evaluate(data, run, model_config, config, preprocess, args.reuse_runs, grid)
                row.update(seed=seed, image_size=f"{height}x{width}")
                if first:
                    row.update(cost(run / "checkpoint.pt", run / "bundle", data, args.bench_seconds))
                print(_row_text(row), flush=True)
                rows.append(row)
                atomic_write_json(args.out / "realdata.json", rows)
    return rows


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _mean_std(values: list[float | None]) -> list[float | None]:
    known = [v for v in values if v is not None]
    return [_mean(known), statistics.stdev(known) if len(known) > 1 else None]


def _cell(value: list[float | None]) -> str:
    mean, std = value
    if mean is None:
        return "n/a"
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def _row_text(row: dict[str, Any]) -> str:
    values = ", ".join(f"{name} {row[name]:.3f}" for name in METRICS if row[name] is not None)
    return f"{row['product']:>12} {row['kind']:>9} seed {row['seed']}: {values}, {row['train_seconds']:.0f} s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.realdata", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, nargs="+", help="folders of data sets (MVTec AD layout), or data sets")
    parser.add_argument("--out", required=True, type=Path, help="results folder (JSON, table, runs, grids)")
    parser.add_argument("--products", nargs="*", help="only the data sets with these folder names")
    parser.add_argument("--models", nargs="*", default=list(KINDS), choices=KINDS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=TrainConfig.steps, help="training budget in optimiser steps (default %(default)s)")
    parser.add_argument("--epochs", type=int, help="a fixed number of epochs instead of --steps")
    parser.add_argument("--image-size", type=parse_image_size, metavar="HxW",
                        help="input size HEIGHTxWIDTH or one number for a square (default: per data set, as daad train "
                        "chooses it from the training images' aspect)")
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--config", type=Path, help="JSON/YAML with 'model'/'train' sections, as for daad train")
    parser.add_argument("--bench-seconds", type=float, default=3.0, help="timed ONNX Runtime run per model (default 3)")
    parser.add_argument("--reuse-runs", action="store_true", help="score finished runs in --out again instead of retraining")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sections = read_config_file(args.config) if args.config else {}
    train_config = TrainConfig.from_dict(
        {**sections.get("train", {}), "steps": args.steps, "epochs": args.epochs, "batch_size": args.batch_size, "validate_every": 0}
    )
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run_all(args, sections, train_config)
    synthetic = {data.name for data in data_sets(args.data, args.products) if (data / "synth.json").is_file()}
    summary = summarise(rows + synthetic_means(rows, synthetic))
    atomic_write_json(args.out / "summary.json", summary)
    table = table_markdown(summary, budget_text(args, train_config, rows))
    atomic_write_text(args.out / "realdata.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    from runtime.cli import run_script

    run_script(main, "python -m experiments.realdata")
