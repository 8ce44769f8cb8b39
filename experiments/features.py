"""The feature-memory study behind docs/RESULTS.md, "Feature memories".

    python -m experiments.features --data data/real data/synth256 --out runs/features --grid default --seeds 0 1 2
    python -m experiments.features --data data/real --out runs/features --grid front
    python -m experiments.features --data data/real data/synth256 --out runs/features --grid granularity

Each variant (kind, input short side, backbone levels, backbone, memory size, daad-f block) is
fitted the way `daad train` fits it (the family's own `fit_memory` on the backbone's features)
and measured twice:
- proxy (may choose): fitted on half the good training images (all of them when the set has a
  validation/good folder), scored on the other half (or validation/good) with synthetic defects
  drawn into copies (experiments.scoring.draw_defects);
- test (reported only): fitted on every good training image, scored on the test split (exact
  AUPRO, as `daad eval`).
Cost, once per variant and data set: GFLOPs per image, ONNX Runtime median ms per frame on one
thread at batch 1, and MB of model.onnx. The backbone's features are computed once per data
set, input size, levels and backbone and shared by every memory fitted on them.

Rows go to OUT/features.jsonl as they finish (a rerun skips those already there), and the
tables (mean over seeds) to OUT/features.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from experiments.runs import products
from experiments.scoring import Labelled, draw_defects, measure
from runtime.atomic import append_line, atomic_write_text
from runtime.dataset import find_samples, load_images, load_masks, median_aspect
from runtime.preprocess import PreprocessConfig, size_for_aspect
from train.config import TrainConfig
from train.families import family_for
from train.fitting import detect_channels

DEFAULT_LEVELS = ("s8", "s16")


@dataclass(frozen=True)
class Variant:
    kind: str = "patchcore"
    short_side: int = 224
    levels: tuple[str, ...] = DEFAULT_LEVELS
    backbone: str = "lite0"
    memory: int = 2000  # coreset rows (patchcore) or bank slots (daad-f)
    block: int = 1  # daad-f only: r x r blocks, 0 = the whole level
    multiple: int = 16  # sides rounded down to this: 32 lets 4 x 4 blocks of stride-8 patches tile
    padding: str = "symmetric"  # the backbone's stride-2 padding

    @property
    def name(self) -> str:
        block = f" block {self.block or 'whole'}" if self.kind == "daad-f" else ""
        padding = "" if self.padding == "symmetric" else f" {self.padding}"
        return f"{self.kind}{block} {self.backbone}{padding} {'+'.join(self.levels)} {self.short_side}px m{self.memory}"

    def model_config(self) -> dict[str, Any]:
        features = {"backbone": self.backbone, "levels": list(self.levels), "padding": self.padding}
        if self.kind == "daad-f":
            return {"kind": self.kind, "features": features, "slots": self.memory, "block": self.block}
        return {"kind": self.kind, "features": features, "memory_size": self.memory}


GRIDS: dict[str, list[Variant]] = {
    "default": [Variant()],
    "front": [
        *(Variant(short_side=side, levels=levels, memory=memory)
          for side in (128, 224) for levels in (("s8", "s16"), ("s4", "s8", "s16")) for memory in (1000, 4000)),
        Variant(backbone="lite1"), Variant(backbone="lite2"),
    ],  # fmt: skip
    # the backbone's stride-2 padding: TensorFlow's SAME, as trained, or PyTorch's symmetric
    "padding": [Variant(), Variant(padding="same")],
    # the backbone and the input size, the two biggest cost levers, on one set
    "backbones": [Variant(), Variant(backbone="lite1"), Variant(backbone="lite2"), Variant(short_side=128, memory=1000)],
    # 128 px and sides of a multiple of 32, so every block size tiles the patch grid; daad-f's
    # fit costs its steps x blocks x slots, too much at 224 px for a 2-core machine.
    "granularity": [
        *(Variant(short_side=128, multiple=32, memory=memory) for memory in (500, 2000)),
        *(Variant(kind="daad-f", short_side=128, multiple=32, block=block, memory=memory)
          for block in (1, 2, 4, 0) for memory in (500, 2000)),
    ],  # fmt: skip
}


@dataclass
class Split:
    """Images with labels and masks, and their patch features N x D x h x w."""

    labelled: Labelled
    features: torch.Tensor


@dataclass
class Prepared:
    """What every variant sharing one backbone pass is fitted and scored on."""

    preprocess: PreprocessConfig
    fit_all: torch.Tensor  # every good training image
    fit_proxy: torch.Tensor  # the half the proxy fits on
    proxy: Split
    test: Split


def preprocess_for(data: Path, variant: Variant) -> PreprocessConfig:
    aspect = median_aspect(find_samples(data, "train"), PreprocessConfig())
    height, width = (side // variant.multiple * variant.multiple for side in size_for_aspect(aspect, variant.short_side))
    return family_for(variant.kind).preprocess(height, width, detect_channels(data))


def features(model: Any, images: np.ndarray, batch: int = 16) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model.patch_features(torch.from_numpy(images[i : i + batch])) for i in range(0, len(images), batch)])


def prepare(data: Path, variant: Variant) -> Prepared:
    """One pass of the backbone over the training, proxy and test images of `data`."""
    preprocess = preprocess_for(data, variant)
    family = family_for(variant.kind)
    model = family.build(family.config_from_dict(variant.model_config()), preprocess)
    train = load_images(find_samples(data, "train"), preprocess).images
    validation = data / "validation" / "good"
    if validation.is_dir():
        proxy_fit, held_out = np.arange(len(train)), load_images(find_samples(validation, "train"), preprocess).images
    else:
        proxy_fit, held_out = np.arange(0, len(train), 2), train[1::2]
    proxy = draw_defects(held_out, seed=0)
    test_set = load_images(find_samples(data, "test"), preprocess)
    test = Labelled(test_set.images, np.array([s.label for s in test_set.samples]), load_masks(test_set.samples, preprocess))
    fit_all = features(model, train)
    return Prepared(preprocess, fit_all, fit_all[torch.from_numpy(proxy_fit)], Split(proxy, features(model, proxy.images)),
                    Split(test, features(model, test.images)))  # fmt: skip


def fitted(variant: Variant, preprocess: PreprocessConfig, fit: torch.Tensor, seed: int) -> Any:
    """A model of `variant` whose memory is fitted on `fit` by its family, as `daad train` does."""
    family = family_for(variant.kind)
    torch.manual_seed(seed)
    model = family.build(family.config_from_dict(variant.model_config()), preprocess)
    family.fit_memory(model, fit, TrainConfig(seed=seed), progress=False)
    return model.eval()


def maps_of(model: Any, split: Split, batch: int = 16) -> np.ndarray:
    with torch.inference_mode():
        return torch.cat([model.score_features(split.features[i : i + batch])[1] for i in range(0, len(split.features), batch)]).numpy()[:, 0]


def cost(model: Any, preprocess: PreprocessConfig, runs: int = 60) -> dict[str, float]:
    """GFLOPs per image, ONNX Runtime median ms (one thread, batch 1) and MB of the exported graph."""
    import onnxruntime

    from export.onnx_export import export_onnx
    from export.onnx_stats import flops_per_image

    proto = export_onnx(model, preprocess)
    data = proto.SerializeToString()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    frame = np.random.default_rng(0).integers(0, 256, (1, *preprocess.shape), dtype=np.uint8)
    name = session.get_inputs()[0].name
    times = []
    for index in range(runs + 5):
        started = time.perf_counter()
        session.run(None, {name: frame})
        if index >= 5:
            times.append((time.perf_counter() - started) * 1000)
    return {"gflops": flops_per_image(proto) / 1e9, "ms": statistics.median(times), "fastest_ms": min(times),
            "mb": len(data) / 1e6}  # fmt: skip


def run_variant(data: Path, variant: Variant, prepared: Prepared, seed: int, with_cost: bool) -> dict[str, Any]:
    started = time.perf_counter()
    proxy_model = fitted(variant, prepared.preprocess, prepared.fit_proxy, seed)
    proxy = measure(prepared.proxy.labelled, maps_of(proxy_model, prepared.proxy))
    model = fitted(variant, prepared.preprocess, prepared.fit_all, seed)
    row = {"set": data.name, "variant": variant.name, "config": asdict(variant), "seed": seed,
           "size": f"{prepared.preprocess.height}x{prepared.preprocess.width}",
           "proxy": proxy, "test": measure(prepared.test.labelled, maps_of(model, prepared.test), num_thresholds=None)}  # fmt: skip
    if with_cost:
        row["cost"] = cost(model, prepared.preprocess)
    row["seconds"] = time.perf_counter() - started
    return row


def grouped(variants: list[Variant]) -> Iterator[list[Variant]]:
    """Variants sharing one backbone pass (input size, levels, backbone) together."""
    keys: dict[tuple[Any, ...], list[Variant]] = {}
    for variant in variants:
        keys.setdefault((variant.short_side, variant.multiple, variant.levels, variant.backbone, variant.padding), []).append(variant)
    yield from keys.values()


def done_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def summarise(rows: list[dict[str, Any]]) -> str:
    """One Markdown row per set and variant: mean over seeds of proxy and test metrics, and costs."""
    table: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        table.setdefault((row["set"], row["variant"]), []).append(row)
    lines = ["| set | variant | seeds | proxy image | proxy pixel | proxy AUPRO | test image | test pixel | test AUPRO "
             "| GFLOPs | ms (ORT, 1 thread) | MB |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (name, variant), group in table.items():
        def mean(split: str, key: str) -> str:
            values = [r[split][key] for r in group if r[split].get(key) is not None]
            if not values:
                return "–"
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            return f"{statistics.mean(values):.3f}{spread}"

        costs = next((r["cost"] for r in group if "cost" in r), None)
        cost_cells = f"{costs['gflops']:.2f} | {costs['ms']:.1f} | {costs['mb']:.1f}" if costs else "– | – | –"
        lines.append(f"| {name} | {variant} | {len(group)} | {mean('proxy', 'image_auroc')} | {mean('proxy', 'pixel_auroc')} "
                     f"| {mean('proxy', 'aupro')} | {mean('test', 'image_auroc')} | {mean('test', 'pixel_auroc')} "
                     f"| {mean('test', 'aupro')} | {cost_cells} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.features", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", type=Path, required=True, help="data set folders, or folders of them")
    parser.add_argument("--sets", nargs="*", help="only these data set names")
    parser.add_argument("--out", type=Path, required=True, help="folder for features.jsonl and features.md")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="default", help="which variants (default: default)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of the memory's fit (default 0)")
    parser.add_argument("--no-cost", action="store_true", help="skip the export and timing of each variant")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "features.jsonl"
    done = {(r["set"], r["variant"], r["seed"]) for r in done_rows(log)}
    for data in (found for root in args.data for found in products(root, args.sets)):
        for group in grouped(GRIDS[args.grid]):
            todo = [(v, s) for v in group for s in args.seeds if (data.name, v.name, s) not in done]
            if not todo:
                continue
            prepared = prepare(data, group[0])
            for variant, seed in todo:
                row = run_variant(data, variant, prepared, seed, with_cost=not args.no_cost and seed == args.seeds[0])
                with open(log, "a", encoding="utf-8") as handle:
                    append_line(handle, json.dumps(row))
                print(f"{data.name} {variant.name} seed {seed}: proxy {row['proxy']['image_auroc']:.3f} "
                      f"test {row['test']['image_auroc']:.3f}/{row['test']['pixel_auroc']:.3f}/{row['test']['aupro']:.3f} "
                      f"({row['seconds']:.0f} s)", flush=True)  # fmt: skip
    atomic_write_text(args.out / "features.md", summarise(done_rows(log)))
    print(f"tables: {args.out / 'features.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
