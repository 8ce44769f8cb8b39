"""The two experiments of docs/RESULTS.md, re-runnable from the command line.

    python -m experiments.runs table        --data SYNTH --out DIR   # ae/memae/daad/daad+ per product
    python -m experiments.runs granularity  --data SYNTH --out DIR   # image AUROC vs block size
    python -m experiments.runs scoring      --checkpoint RUN/checkpoint.pt --data PRODUCT
                                             # score-side knobs (gamma, reduction) of one model
    python -m experiments.runs curve        --data SYNTH --out DIR   # image AUROC vs epochs

Each run trains with `train.pixel.trainer.train` and evaluates with `train.evaluate.evaluate`, the
same code as `daad train` / `daad eval`, and writes JSON (and a plot) into --out.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from runtime.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from runtime.dataset import has_test_split
from runtime.errors import DataError
from runtime.optional import require
from runtime.preprocess import PreprocessConfig, parse_image_size
from train.config import TrainConfig, read_config_file
from train.pixel.config import MODEL_KINDS, ModelConfig

GRANULARITY_BLOCKS = (1, 2, 4, 8, 16, 32)  # block side in input pixels
GRANULARITY_BUDGET = 16384  # floats per memory bank (N * D)


def products(root: Path, names: list[str] | None) -> list[Path]:
    """Product folders under `root` (those with a test split), or `root` itself if it is one."""
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist: write one with `daad synth --out {root}`")
    if has_test_split(root):
        return [root]
    found = sorted(p for p in root.iterdir() if p.is_dir() and has_test_split(p))
    if names:
        found = [p for p in found if p.name in names]
    if not found:
        raise DataError(f"no product folders with train/ and test/ under {root}: run `daad synth --out {root}`")
    return found


SCORE_SIDE = ("diff_sigma", "map_sigma", "score_reduction", "gamma")  # change no weight


def train_and_evaluate(
    product: Path,
    run: Path,
    model_config: ModelConfig,
    train_config: TrainConfig,
    preprocess: PreprocessConfig,
    reuse: bool = False,
    grid: Path | None = None,
) -> dict[str, Any]:
    """Train one model on one product and return its test metrics and the training time.

    With `reuse`, a finished run in `run` whose training settings match is scored again
    instead of retrained (training is deterministic, so that is what a retrain would give).
    A reused run's score constants are fitted again on the training images, as training ends,
    so it is scored as this code scores. With `grid`, the picture of `daad eval` is written too.
    """
    from train.checkpoint import load_checkpoint
    from train.evaluate import evaluate, save_grid
    from train.families import family_for
    from train.pixel.family import PIXEL
    from train.pixel.model import build_model
    from train.torch_backend import TorchBackend
    from train.fitting import batches, detect_channels, load_split
    from train.pixel.trainer import train

    family = family_for(model_config.kind)
    preprocess = family.preprocess(preprocess.height, preprocess.width, detect_channels(product))
    if not family.trains_by_steps:
        return fit_and_evaluate(product, run, model_config, train_config, preprocess, grid)
    checkpoint = run / "checkpoint.pt"
    started = time.perf_counter()
    seconds = None
    if reuse and checkpoint.is_file():
        loaded = load_checkpoint(checkpoint)
        history = loaded.meta.get("history", [])
        same_training = (
            {k: v for k, v in loaded.model_config.to_dict().items() if k not in SCORE_SIDE}
            == {k: v for k, v in model_config.to_dict().items() if k not in SCORE_SIDE}
            and _weights_settings(loaded.train_config) == _weights_settings(train_config)
            and loaded.preprocess == preprocess
            and loaded.state.get("epoch") == loaded.state.get("budget_epochs", loaded.train_config.epochs)
        )
        if same_training:
            seconds = sum(record["seconds"] for record in history)
    if seconds is None:
        train(product, run, model_config, train_config, preprocess, progress=False)
        seconds = time.perf_counter() - started
    loaded = load_checkpoint(checkpoint)
    model = build_model(model_config, preprocess)
    model.load_state_dict(loaded.model.state_dict())
    model.eval()
    if reuse:
        model.fit_score_stats(batches(load_split(product, "train", preprocess, False).images, 32, next(model.parameters()).device))
    evaluation = evaluate(TorchBackend(model), product, preprocess)
    if grid is not None:
        save_grid(grid, evaluation, PIXEL.reconstructor(model))
    metrics = evaluation.metrics
    return {
        "product": product.name,
        "kind": model_config.kind,
        **{name: metrics[name] for name in ("image_auroc", "pixel_auroc", "aupro", "f1_max", "per_defect")},
        "train_seconds": round(seconds, 1),
        "epochs": loaded.state.get("epoch"),
        **curve_fields(run, train_config),
    }


def fit_and_evaluate(product: Path, run: Path, model_config: Any, train_config: TrainConfig,
                     preprocess: PreprocessConfig, grid: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """A one-pass family (patchcore, daad-f): fit as `daad train` does, score the test split as `daad eval`."""
    from train.checkpoint import load_checkpoint
    from train.evaluate import evaluate, save_grid
    from train.families import family_for
    from train.torch_backend import TorchBackend

    result = family_for(model_config.kind).fit(product, run, model_config, train_config, preprocess, False, False)
    evaluation = evaluate(TorchBackend(load_checkpoint(result.checkpoint).model), product, preprocess)
    if grid is not None:
        save_grid(grid, evaluation)
    metrics = evaluation.metrics
    return {
        "product": product.name,
        "kind": model_config.kind,
        **{name: metrics[name] for name in ("image_auroc", "pixel_auroc", "aupro", "f1_max", "per_defect")},
        "train_seconds": round(result.history[0]["fit_seconds"], 1),
        "epochs": 1,
    }


def _weights_settings(train_config: TrainConfig) -> dict[str, Any]:
    """The settings that change the trained weights: not validation, nor a step budget that a
    fixed epoch count overrides."""
    settings = train_config.to_dict()
    settings.pop("validate_every")
    if train_config.epochs is not None:
        settings.pop("steps")
    return settings


def curve_fields(run: Path, train_config: TrainConfig) -> dict[str, Any]:
    """With validation during training: the curve, and its plateau (mean of the last third).

    One validation point swings by a few hundredths from epoch to epoch (docs/RESULTS.md);
    the plateau is what models and block sizes are compared by.
    """
    if not train_config.validate_every:
        return {}
    points = learning_curve(run)
    late = [auroc for epoch, auroc in points if epoch in last_third([e for e, _ in points])]
    return {"curve": points, "plateau_image_auroc": sum(late) / len(late) if late else None}


def last_third(epochs: list[int]) -> list[int]:
    """The validated epochs in the last third of the run: where its plateau is measured."""
    return [e for e in epochs if e > 2 * epochs[-1] / 3] if epochs else []


def learning_curve(run: Path) -> list[list[float]]:
    """[epoch, validation image AUROC] pairs recorded in a run's checkpoint history."""
    from train.checkpoint import load_checkpoint

    history = load_checkpoint(run / "checkpoint.pt").meta.get("history", [])
    return [[record["epoch"], record["val_image_auroc"]] for record in history if "val_image_auroc" in record]


def granularity_config(base: ModelConfig, side: int, budget: int, image_size: int) -> ModelConfig:
    """Every memory covers `side` x `side` input pixels per block, with N = budget / D slots."""
    memories = []
    for index, (memory, width) in enumerate(zip(base.memories, base.widths)):
        size = image_size // 2 ** (index + 1)
        block = max(1, min(size, side // 2 ** (index + 1)))
        slots = max(1, budget // (block * block * width))
        memories.append(replace(memory, block_h=block, block_w=block, block_c=0, slots=slots))
    return replace(base, memories=tuple(memories))


def every_model(args: argparse.Namespace, base: ModelConfig, train_config: TrainConfig, preprocess: PreprocessConfig, name: str) -> list[dict[str, Any]]:
    """Train and evaluate each of `--models` on each product; rows saved to --out/<name> as they come."""
    rows = []
    for product in products(args.data, args.products):
        for kind in args.models:
            run = args.out / "runs" / product.name / kind
            row = train_and_evaluate(product, run, replace(base, kind=kind), train_config, preprocess, args.reuse_runs)
            print(_row_text(row), flush=True)
            rows.append(row)
            atomic_write_json(args.out / name, rows)
    return rows


def table(args: argparse.Namespace, base: ModelConfig, train_config: TrainConfig, preprocess: PreprocessConfig) -> list[dict[str, Any]]:
    rows = every_model(args, base, train_config, preprocess, "table.json")
    atomic_write_text(args.out / "table.md", table_markdown(rows, args.models))
    print(table_markdown(rows, args.models))
    return rows


def granularity(args: argparse.Namespace, base: ModelConfig, train_config: TrainConfig, preprocess: PreprocessConfig) -> list[dict[str, Any]]:
    rows = []
    for product in products(args.data, args.products):
        for side in args.blocks:
            config = granularity_config(replace(base, kind=args.kind), side, args.budget,
                                        min(preprocess.height, preprocess.width))
            run = args.out / "runs" / product.name / f"block{side}"
            row = train_and_evaluate(product, run, config, train_config, preprocess, args.reuse_runs)
            row.update(block=side, memories=[[m.block_h, m.block_w, m.slots] for m in config.memories])
            print(_row_text(row), flush=True)
            rows.append(row)
            atomic_write_json(args.out / "granularity.json", rows)
    plot_granularity(rows, args.out / "granularity.png", args.budget)
    atomic_write_text(args.out / "granularity.md", granularity_markdown(rows))
    print(granularity_markdown(rows))
    return rows


def curve(args: argparse.Namespace, base: ModelConfig, train_config: TrainConfig, preprocess: PreprocessConfig) -> list[dict[str, Any]]:
    """Validation image AUROC every `--every` epochs of one run per (product, model).

    The learning rate is constant and the batch order depends only on (seed, epoch), so the
    model after epoch e of this run is the model a run of e epochs ends with: one run gives
    the table at every budget, and the budget of a comparison can be read off, not guessed.
    """
    rows = every_model(args, base, train_config, preprocess, "curve.json")
    plot_curve(rows, args.out / "curve.png")
    atomic_write_text(args.out / "curve.md", curve_markdown(rows))
    print(curve_markdown(rows))
    return rows


def scoring(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Image AUROC of one trained model under other score-side settings (no retraining)."""
    from train.checkpoint import load_checkpoint
    from train.evaluate import evaluate
    from train.pixel.model import build_model
    from train.torch_backend import TorchBackend

    loaded = load_checkpoint(args.checkpoint)
    rows = []
    for reduction in ("max", "mean"):
        for gamma in args.gammas if loaded.model_config.has_discriminator else [loaded.model_config.gamma]:
            config = replace(loaded.model_config, score_reduction=reduction, gamma=gamma)
            model = build_model(config, loaded.preprocess)
            model.load_state_dict(loaded.model.state_dict())
            metrics = evaluate(TorchBackend(model), args.data, loaded.preprocess).metrics
            rows.append({"reduction": reduction, "gamma": gamma, "image_auroc": metrics["image_auroc"]})
            print(f"reduction={reduction} gamma={gamma:.2f}: image AUROC {metrics['image_auroc']:.3f}", flush=True)
    return rows


def table_markdown(rows: list[dict[str, Any]], kinds: list[str]) -> str:
    """Products as rows, image / pixel AUROC per model as columns, and the mean."""
    names = list(dict.fromkeys(row["product"] for row in rows))
    lookup = {(row["product"], row["kind"]): row for row in rows}
    header = "| product | " + " | ".join(f"{k} image / pixel" for k in kinds) + " |"
    lines = [header, "|" + "---|" * (len(kinds) + 1)]
    for name in names + ["**mean**"]:
        cells = []
        for kind in kinds:
            chosen = [lookup[(n, kind)] for n in names if (n, kind) in lookup] if name == "**mean**" else (
                [lookup[(name, kind)]] if (name, kind) in lookup else []
            )
            if not chosen:
                cells.append("-")
                continue
            image = sum(r["image_auroc"] for r in chosen) / len(chosen)
            pixels = [r["pixel_auroc"] for r in chosen if r["pixel_auroc"] is not None]
            pixel = f"{sum(pixels) / len(pixels):.3f}" if pixels else "n/a"
            cells.append(f"{image:.3f} / {pixel}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def mean_curves(rows: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Model -> (epoch, image AUROC averaged over the products) at the epochs all products share."""
    means = {}
    for kind in dict.fromkeys(row["kind"] for row in rows):
        curves = [dict((int(e), a) for e, a in row["curve"]) for row in rows if row["kind"] == kind]
        epochs = sorted(set.intersection(*(set(c) for c in curves)))
        means[kind] = [(e, sum(c[e] for c in curves) / len(curves)) for e in epochs]
    return means


def curve_markdown(rows: list[dict[str, Any]]) -> str:
    """Epochs as rows, mean image AUROC per model as columns."""
    means = mean_curves(rows)
    kinds = list(means)
    epochs = sorted({e for points in means.values() for e, _ in points})
    lookup = {(k, e): a for k, points in means.items() for e, a in points}
    lines = ["| epochs | " + " | ".join(f"{k} mean image AUROC" for k in kinds) + " |", "|" + "---|" * (len(kinds) + 1)]
    for epoch in epochs:
        cells = [f"{lookup[(k, epoch)]:.3f}" if (k, epoch) in lookup else "-" for k in kinds]
        lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    late = last_third(epochs)  # the plateau row, as `curve_fields`
    cells = []
    for kind in kinds:
        values = [lookup[(kind, e)] for e in late if (kind, e) in lookup]
        cells.append(f"**{sum(values) / len(values):.3f}**" if values else "-")
    lines.append(f"| mean of {', '.join(map(str, late))} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def load_pyplot(purpose: str) -> Any:
    matplotlib = require("matplotlib", purpose)
    matplotlib.use("Agg")
    return require("matplotlib.pyplot", purpose)


def finish_plot(plt: Any, figure: Any, axis: Any, path: Path) -> Path:
    """Grid, legend, tight layout; the PNG written atomically; the figure closed."""
    import io

    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return atomic_write_bytes(path, buffer.getvalue())


def plot_curve(rows: list[dict[str, Any]], path: Path) -> Path:
    """Mean image AUROC against epochs per model (thick), each product thin behind it."""
    plt = load_pyplot("the learning-curve plot")
    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    colours = {}
    for kind, points in mean_curves(rows).items():
        (line,) = axis.plot([e for e, _ in points], [a for _, a in points], marker="o", linewidth=2, label=f"{kind} (mean)")
        colours[kind] = line.get_color()
    for row in rows:
        axis.plot([e for e, _ in row["curve"]], [a for _, a in row["curve"]], color=colours[row["kind"]], alpha=0.3, linewidth=1)
    axis.set_xlabel("epochs")
    axis.set_ylabel("image AUROC (thin: one product)")
    axis.set_title("validation image AUROC during training", fontsize=10)
    return finish_plot(plt, figure, axis, path)


def _has_plateau(rows: list[dict[str, Any]]) -> bool:
    return any(row.get("plateau_image_auroc") is not None for row in rows)


def _image_auroc(row: dict[str, Any]) -> float:
    """The plateau when the run validated during training, else the final evaluation."""
    plateau = row.get("plateau_image_auroc")
    return row["image_auroc"] if plateau is None else plateau


def granularity_markdown(rows: list[dict[str, Any]]) -> str:
    """Block sides as rows; image AUROC per product (plateau if measured), their mean, mean pixel AUROC."""
    names = list(dict.fromkeys(row["product"] for row in rows))
    blocks = sorted({row["block"] for row in rows})
    lookup = {(row["product"], row["block"]): row for row in rows}
    kind = "plateau image AUROC" if _has_plateau(rows) else "image AUROC"
    lines = [f"| block side (px) | memories (side / N) | " + " | ".join(names) + f" | mean {kind} | mean pixel AUROC |"]
    lines.append("|" + "---|" * (len(names) + 4))
    for block in blocks:
        chosen = [lookup[(n, block)] for n in names if (n, block) in lookup]
        memories = ", ".join(f"{h}/{slots}" for h, _, slots in chosen[0]["memories"])
        cells = [f"{_image_auroc(lookup[(n, block)]):.3f}" if (n, block) in lookup else "-" for n in names]
        image = sum(_image_auroc(r) for r in chosen) / len(chosen)
        pixels = [r["pixel_auroc"] for r in chosen if r["pixel_auroc"] is not None]
        pixel = f"{sum(pixels) / len(pixels):.3f}" if pixels else "n/a"
        lines.append(f"| {block} | {memories} | " + " | ".join(cells) + f" | {image:.3f} | {pixel} |")
    return "\n".join(lines) + "\n"


def plot_granularity(rows: list[dict[str, Any]], path: Path, budget: int) -> Path:
    plt = load_pyplot("the granularity plot")
    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    for name in dict.fromkeys(row["product"] for row in rows):
        chosen = sorted((row for row in rows if row["product"] == name), key=lambda row: row["block"])
        axis.plot([r["block"] for r in chosen], [_image_auroc(r) for r in chosen], marker="o", label=name)
    axis.set_xscale("log", base=2)
    axis.set_xlabel("block side in input pixels (all four memories)")
    axis.set_ylabel("image AUROC" + (" (plateau)" if _has_plateau(rows) else ""))
    axis.set_title(f"granularity at a fixed memory budget (N x D = {budget})", fontsize=10)
    return finish_plot(plt, figure, axis, path)


def _row_text(row: dict[str, Any]) -> str:
    pixel = "n/a" if row["pixel_auroc"] is None else f"{row['pixel_auroc']:.3f}"
    block = f" block {row['block']}" if "block" in row else ""
    plateau = "" if row.get("plateau_image_auroc") is None else f" (plateau {row['plateau_image_auroc']:.3f})"
    return (
        f"{row['product']:>10} {row['kind']:>6}{block}: image AUROC {row['image_auroc']:.3f}{plateau}, "
        f"pixel {pixel}, {row['train_seconds']:.0f} s"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.runs", description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="experiment", required=True)
    for name in ("table", "granularity", "curve"):
        sub = verbs.add_parser(name)
        sub.add_argument("--data", required=True, type=Path, help="`daad synth` output (one folder per product)")
        sub.add_argument("--out", required=True, type=Path, help="results folder (JSON, runs, plot)")
        sub.add_argument("--products", nargs="*", help="only these products")
        sub.add_argument("--steps", type=int, default=TrainConfig.steps, help="training budget in optimiser steps (default %(default)s)")
        sub.add_argument("--epochs", type=int, help="a fixed number of epochs instead of --steps")
        sub.add_argument("--image-size", type=parse_image_size, default=(128, 128), metavar="HxW",
                         help="input size HEIGHTxWIDTH, or one number for a square (default 128)")
        sub.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--config", type=Path, help="JSON/YAML with 'model'/'train' sections, as for daad train")
        sub.add_argument("--reuse-runs", action="store_true", help="score finished runs in --out again instead of retraining")
        sub.add_argument(
            "--every", type=int, default=5 if name == "curve" else 0,
            help="epochs between validation AUROCs during training; >0 adds the curve and its plateau "
            "(mean of the last third) to each row (default: %(default)s)",
        )
    verbs.choices["table"].add_argument("--models", nargs="*", default=list(MODEL_KINDS), choices=MODEL_KINDS)
    verbs.choices["curve"].add_argument("--models", nargs="*", default=["ae", "daad+"], choices=MODEL_KINDS)
    verbs.choices["granularity"].add_argument("--kind", default="daad", choices=("daad", "daad+"))
    verbs.choices["granularity"].add_argument("--blocks", nargs="*", type=int, default=list(GRANULARITY_BLOCKS))
    verbs.choices["granularity"].add_argument("--budget", type=int, default=GRANULARITY_BUDGET)
    sub = verbs.add_parser("scoring")
    sub.add_argument("--checkpoint", required=True, type=Path)
    sub.add_argument("--data", required=True, type=Path, help="the product folder it was trained on")
    sub.add_argument("--gammas", nargs="*", type=float, default=[0.0, 0.25, 0.5, 0.75, 1.0])
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.experiment == "curve" and args.every < 1:
        parser.error("--every must be at least 1 (epochs between validation AUROCs)")
    if args.experiment != "scoring" and args.every < 0:
        parser.error("--every must not be negative")
    if args.experiment == "scoring":
        scoring(args)
        return 0
    sections = read_config_file(args.config) if args.config else {}
    base = ModelConfig.from_dict(sections.get("model", {}))
    train_config = TrainConfig.from_dict(
        {**sections.get("train", {}), "steps": args.steps, "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed, "validate_every": args.every}
    )
    height, width = args.image_size
    preprocess = PreprocessConfig(height=height, width=width, channels=3)
    args.out.mkdir(parents=True, exist_ok=True)
    experiments = {"table": table, "granularity": granularity, "curve": curve}
    experiments[args.experiment](args, base, train_config, preprocess)
    return 0


if __name__ == "__main__":
    from runtime.cli import run_script

    run_script(main, "python -m experiments.runs")
