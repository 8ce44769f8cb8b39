"""The accuracy benchmark: one command that regenerates the measured sections of docs/RESULTS.md.

    python -m experiments.results --out docs/RESULTS.md            # full: 12 models at the default budget, hours on 2 cores
    python -m experiments.results --quick --out /tmp/RESULTS.md    # smoke check: a few minutes

It synthesises the products (`daad synth`), trains and evaluates ae / memae / daad / daad+ on
each (experiments.runs, the code behind `daad train` / `daad eval`), exports the default model
(`daad export`, which measures ONNX-vs-PyTorch parity), measures the fp16/int8 accuracy change
where TensorRT exists, and times the bundle with `daad bench`. Each result lands between
`<!-- results:NAME -->` markers; prose outside the markers is kept as written.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from export.export_cli import export_checkpoint
from runtime.atomic import atomic_write_json, atomic_write_text
from runtime.backends import open_backend
from runtime.backends.options import BackendOptions
from runtime.bench.runner import BenchConfig, run_bench
from runtime.bench.cli import make_opener
from runtime.bench.report import render_markdown
from runtime.bundle import Bundle, open_bundle
from runtime.bench.environment import collect_environment
from runtime.preprocess import PreprocessConfig
from train.config import TrainConfig
from train.pixel.config import MODEL_KINDS, ModelConfig
from experiments.runs import table, table_markdown
from train.synth import SynthConfig, check_products, write_product
from train.synth_products import PRODUCTS

DEFAULT_KIND = ModelConfig().kind  # what `daad train` trains without --model: the model we ship


@dataclass(frozen=True)
class Plan:
    """How much to train and measure; `quick` is a smoke check, not a result."""

    products: tuple[str, ...]
    models: tuple[str, ...]
    epochs: int | None  # None: the default budget in steps (TrainConfig.steps)
    image_size: int
    synth: SynthConfig
    bench_batches: tuple[int, ...]
    bench_warmup_s: float
    bench_duration_s: float
    bench_repeat: int


FULL = Plan(tuple(PRODUCTS), MODEL_KINDS, None, 128, SynthConfig(),
            bench_batches=(1, 8), bench_warmup_s=1.0, bench_duration_s=5.0, bench_repeat=2)
QUICK = Plan(tuple(PRODUCTS)[:1], ("ae", DEFAULT_KIND), 1, 64,
             SynthConfig(image_size=64, train=24, test_good=6, test_defect=3),
             bench_batches=(1, 8), bench_warmup_s=0.2, bench_duration_s=1.0, bench_repeat=2)


def synthesize(root: Path, plan: Plan) -> Path:
    """The synthetic products, written once into `root` (reused when already complete)."""
    for product in plan.products:
        if not (root / product / "synth.json").is_file():
            write_product(root, product, plan.synth, overwrite=True)
    return root


def model_table(data: Path, work: Path, plan: Plan) -> tuple[list[dict[str, Any]], str]:
    """Train and evaluate every model on every product with experiments.runs.table."""
    args = argparse.Namespace(
        data=data, out=work / "table", products=list(plan.products), models=list(plan.models), reuse_runs=False
    )
    train_config = TrainConfig(epochs=plan.epochs, validate_every=0)
    preprocess = PreprocessConfig(height=plan.image_size, width=plan.image_size, channels=3)
    rows = table(args, ModelConfig(), train_config, preprocess)
    return rows, table_markdown(rows, list(plan.models))


def parity_section(results: list[tuple[str, str, dict[str, Any]]]) -> str:
    """(product, model kind, ParityReport.to_dict()) rows as a table."""
    lines = ["| product | model | images | max score error / spread | max map error "
             "| image AUROC torch / onnxruntime | parity |",
             "|---|---|---|---|---|---|---|"]
    for product, kind, parity in results:
        auroc = " / ".join(f"{value:.4f}" for value in parity["auroc"].values()) or "n/a"
        lines.append(
            f"| {product} | {kind} | {parity['images']} ({parity['source']}) | {parity['max_spread_score_error']:.2e} | "
            f"{parity['max_abs_map_error']:.2e} | {auroc} | {'pass' if parity['passed'] else 'FAIL'} |"
        )
    return "\n".join(lines)


def tensorrt_here() -> bool:
    return importlib.util.find_spec("tensorrt") is not None and importlib.util.find_spec("pycuda") is not None


def precision_change(bundle: Bundle, product: Path) -> str:
    """Image AUROC of the TensorRT engines at fp32 / fp16 / int8, or why it was skipped."""
    if not tensorrt_here():
        return ("Skipped: TensorRT and pycuda are not installed on this machine (they need an NVIDIA GPU). "
                "Run this command on the Jetson to fill this table.")
    from engines.engine_builder import build_engine
    from train.evaluate import evaluate

    lines = ["| precision | image AUROC | change vs fp32 |", "|---|---|---|"]
    baseline = None
    for precision in ("fp32", "fp16", "int8"):
        build_engine(bundle, precision, calib_data=product if precision == "int8" else None)
        with open_backend(bundle, "tensorrt", precision) as backend:
            auroc = evaluate(backend, product, bundle.preprocess, batch_size=1).metrics["image_auroc"]
        baseline = auroc if baseline is None else baseline
        lines.append(f"| {precision} | {auroc:.4f} | {auroc - baseline:+.4f} |")
    return "\n".join(lines)


def latency_section(bundle: Bundle, checkpoint: Path, plan: Plan, work: Path) -> str:
    """`daad bench` on this machine: ONNX Runtime beside PyTorch eager (and TensorRT where it exists)."""
    if tensorrt_here():  # bench opens each batch size with the engine built for it
        from engines.engine_builder import build_engine

        for batch in plan.bench_batches:
            build_engine(bundle, "fp32", batch=batch)
    config = BenchConfig(backends=("onnxruntime", "tensorrt", "torch"), batches=plan.bench_batches,
                         warmup_s=plan.bench_warmup_s, duration_s=plan.bench_duration_s, repeat=plan.bench_repeat)
    report = run_bench(bundle, config, make_opener(bundle, BackendOptions(), checkpoint), collect_environment()).to_dict()
    atomic_write_json(work / "bench.json", report)
    text = render_markdown(report, title="Latency on this machine (`daad bench`)")
    return "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())  # one level down


def update_sections(path: Path, sections: dict[str, str], title: str) -> Path:
    """Replace each marked section of `path` (append the ones it lacks); keep everything else."""
    text = path.read_text(encoding="utf-8") if path.is_file() else f"# {title}\n"
    for name, body in sections.items():
        block = f"<!-- results:{name} -->\n{body.strip()}\n<!-- /results:{name} -->"
        pattern = re.compile(rf"<!-- results:{re.escape(name)} -->.*?<!-- /results:{re.escape(name)} -->", re.DOTALL)
        text, found = pattern.subn(lambda _: block, text)
        if not found:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    return atomic_write_text(path, text)


def checkpoint_of(work: Path, product: str, kind: str) -> Path:
    """Where experiments.runs.table leaves the checkpoint of `kind` trained on `product`."""
    return work / "table" / "runs" / product / kind / "checkpoint.pt"


def reproduce_section(args: argparse.Namespace, data: Path, plan: Plan, seconds: float) -> str:
    quick = " --quick" if args.quick else ""
    checkpoint = checkpoint_of(args.work, plan.products[0], DEFAULT_KIND)
    stamp = datetime.now(timezone.utc).isoformat(timespec="minutes")
    return "\n".join([
        f"Generated {stamp} by `python -m experiments.results{quick} --out {args.out}` in {seconds / 60:.1f} min "
        f"({'QUICK smoke run: not a result' if args.quick else 'full run'}; the full run takes hours on 2 CPU cores).",
        f"Products {', '.join(plan.products)} at {plan.image_size}x{plan.image_size}, "
        f"{TrainConfig(epochs=plan.epochs).budget}, "
        f"models {', '.join(plan.models)}; the latency table is for the default model ({DEFAULT_KIND}).",
        "",
        "Step by step:",
        "```",
        f"daad synth --out {data} --products {','.join(plan.products)} --image-size {plan.synth.image_size} "
        f"--train {plan.synth.train} --test-good {plan.synth.test_good} --test-defect {plan.synth.test_defect}",
        f"python -m experiments.runs table --data {data} --out {args.work}/table "
        f"{'--epochs ' + str(plan.epochs) if plan.epochs else '--steps ' + str(TrainConfig.steps)} "
        f"--image-size {plan.image_size} --products {' '.join(plan.products)} --models {' '.join(plan.models)}",
        f"daad export --checkpoint {checkpoint} --out {args.work}/bundles/{DEFAULT_KIND}   # likewise each model",
        f"daad bench --bundle {args.work}/bundles/{DEFAULT_KIND} --backend onnxruntime,tensorrt,torch "
        f"--batch {','.join(map(str, plan.bench_batches))} --repeat {plan.bench_repeat} "
        f"--warmup-s {plan.bench_warmup_s:g} --duration-s {plan.bench_duration_s:g} "
        f"--checkpoint {checkpoint}",
        "```",
    ])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.results", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/RESULTS.md"), help="results file to update")
    parser.add_argument("--work", type=Path, default=Path("runs/results"),
                        help="folder for data, checkpoints, bundles and bench JSON (default runs/results)")
    parser.add_argument("--data", type=Path, default=None, help="use this `daad synth` output instead of making one")
    parser.add_argument("--quick", action="store_true",
                        help="one product, ae and the default model, 1 epoch at 64 px, short bench: a few minutes")
    parser.add_argument("--products", default=None, help=f"comma-separated subset of {', '.join(PRODUCTS)}")
    parser.add_argument("--epochs", type=int, default=None, help=f"a fixed number of epochs (default: {TrainConfig.steps} steps, quick: 1 epoch)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.products:
        plan = replace(plan, products=tuple(check_products(args.products.split(","))))
    if args.epochs:
        plan = replace(plan, epochs=args.epochs)
    started = time.perf_counter()
    data = args.data or synthesize(args.work / "data", plan)
    if args.data is not None:
        plan = replace(plan, products=tuple(p for p in plan.products if (data / p).is_dir()) or plan.products)
    rows, table_text = model_table(data, args.work, plan)
    product = plan.products[0]
    exported = {kind: export_checkpoint(checkpoint_of(args.work, product, kind), args.work / "bundles" / kind,
                                        eval_data=data / product) for kind in plan.models}
    for result in exported.values():
        print(result.parity.summary(), file=sys.stderr)
    bundle = open_bundle(exported[DEFAULT_KIND].root)
    sections = {
        "model-table": f"Image / pixel AUROC on the synthetic products.\n\n{table_text}",
        "parity": parity_section([(product, kind, result.parity.to_dict()) for kind, result in exported.items()]),
        "precision": precision_change(bundle, data / product),
        "latency": latency_section(bundle, checkpoint_of(args.work, product, DEFAULT_KIND), plan, args.work),
    }
    sections["reproduce"] = reproduce_section(args, data, plan, time.perf_counter() - started)
    path = update_sections(args.out, sections, "daad-edge results")
    print(f"results: {path} ({len(rows)} trained models)")
    return 0


if __name__ == "__main__":
    from runtime.cli import run_script

    run_script(main, "python -m experiments.results")
