"""Heat-map and score definitions refitted on trained runs, to be chosen on good images only.

    python -m experiments.scoring --data data/real --runs runs/realdata --out runs/scoring

Every checkpoint under --runs (RUNS/runs/SET/KIND/seedN/checkpoint.pt, as experiments.realdata
lays them out) reconstructs once; the reconstructions are then scored with several maps: the
model's squared-error map and a structural dissimilarity map (1 - SSIM, Gaussian window), each
raw or standardised per pixel against the good training images with the std floored at f times
the residual std (f = 0.5 is the model's default), and their sum. The score is the map's maximum.
Each definition is measured twice:

- proxy: synthetic defects (train.synth_defects) drawn into good images that the statistics were
  not fitted on (the set's validation/good when it has one, else every other training image, the
  statistics then fitted on the rest). Good images only, so this may choose;
- test: the test split, with the statistics fitted on every training image as the model fits
  them. Reported to show what the choice costs or gains; never chosen by.

Writes scoring.json (every run) and scoring.md (mean ± std over seeds per set, kind, definition).
"""

from __future__ import annotations

import argparse
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from experiments.realdata import data_sets
from runtime.atomic import atomic_write_json, atomic_write_text
from runtime.dataset import find_samples, load_images, load_masks
from train.metrics import aupro, image_auroc, pixel_auroc
from train.pixel.model import MAP_STD_FLOOR, AnomalyModel, GaussianBlur
from train.synth_defects import DEFECTS

FLOORS = (0.25, MAP_STD_FLOOR, 1.0, 2.0)
GAMMAS = (0.9, 0.7, 0.5)
DEFAULT_MAP = f"mse pixel f{MAP_STD_FLOOR}"  # what AnomalyModel.score maps
MEASURES = ("image_auroc", "pixel_auroc", "aupro")
SSIM_SIGMA = 1.5  # the usual SSIM window


@dataclass
class Labelled:
    """Images with what is known about them: labels N (1 defective) and bool masks N x H x W."""

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray


@dataclass
class MapStats:
    """Per-pixel mean and std of good images' raw maps, and the std of the whole residual."""

    mean: np.ndarray
    spread: np.ndarray
    overall: float


def draw_defects(good: np.ndarray, seed: int = 0, per_image: int = 2) -> Labelled:
    """Each good image, plus `per_image` copies with one synthetic defect each, drawn into a random
    square crop (the defect functions draw on squares); grey images are drawn on in colour and
    turned back to grey."""
    rng = np.random.default_rng(seed)
    names = sorted(DEFECTS)
    height, width = good.shape[1:3]
    side = min(height, width)
    images, labels, masks = [], [], []
    for image in good:
        images.append(image)
        labels.append(0)
        masks.append(np.zeros((height, width), bool))
        for _ in range(per_image):
            top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
            canvas = np.repeat(image, 3, axis=2).astype(np.float32) if image.shape[2] == 1 else image.astype(np.float32)
            crop = np.ascontiguousarray(canvas[top : top + side, left : left + side])
            drawn = DEFECTS[names[rng.integers(len(names))]](crop, np.ones((side, side), bool), rng)
            if not drawn.any():
                continue
            canvas[top : top + side, left : left + side] = crop
            if image.shape[2] == 1:
                canvas = canvas.mean(axis=2, keepdims=True)
            mask = np.zeros((height, width), bool)
            mask[top : top + side, left : left + side] = drawn
            images.append(np.clip(np.round(canvas), 0, 255).astype(np.uint8))
            labels.append(1)
            masks.append(mask)
    return Labelled(np.stack(images), np.array(labels), np.stack(masks))


def structural_dissimilarity(model: AnomalyModel, blur: GaussianBlur, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 - SSIM of input and reconstruction (normalised space), channel mean, smoothed like the map."""
    span = float((1.0 / model.std).max())  # the range of a normalised image
    c1, c2 = (0.01 * span) ** 2, (0.03 * span) ** 2
    mean_x, mean_y = blur(x), blur(y)
    var_x, var_y = blur(x * x) - mean_x**2, blur(y * y) - mean_y**2
    covariance = blur(x * y) - mean_x * mean_y
    ssim = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)) / ((mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2))
    return model.map_blur((1.0 - ssim).mean(dim=1, keepdim=True))


@torch.no_grad()
def raw_maps(model: AnomalyModel, images: np.ndarray, batch: int = 16) -> dict[str, np.ndarray]:
    """"mse" (the model's own map before standardising) and "ssim" maps, N x H x W each, and
    for daad+ "feature", the discriminator feature distance L per image (N)."""
    pre = model.preprocess
    blur = GaussianBlur(SSIM_SIGMA, pre.channels, pre.height, pre.width)
    parts: dict[str, list[np.ndarray]] = {"mse": [], "ssim": [], "feature": []}
    for start in range(0, len(images), batch):
        x = model.normalise(torch.from_numpy(images[start : start + batch]))
        y, _ = model.reconstruct(x)
        parts["mse"].append(model.anomaly_map(x, y)[:, 0].numpy())
        parts["ssim"].append(structural_dissimilarity(model, blur, x, y)[:, 0].numpy())
        feature = model.feature_term(x, y)
        if feature is not None:
            parts["feature"].append(feature.numpy())
    return {name: np.concatenate(values) for name, values in parts.items() if values}


def fit_stats(model: AnomalyModel, maps: np.ndarray) -> MapStats:
    """The model's own map statistics (`AnomalyModel.map_statistics`) of raw maps N x H x W."""
    mean, spread, overall = model.map_statistics(torch.from_numpy(maps[:, None]))
    return MapStats(mean[0, 0].numpy(), spread[0, 0].numpy(), max(overall, 1e-8))


def standardised(raw: np.ndarray, fit: MapStats, floor: float) -> np.ndarray:
    """(raw - per-pixel mean) / per-pixel std floored at `floor` x the residual std."""
    return (raw - fit.mean) / np.maximum(fit.spread, floor * fit.overall)


def definitions(maps: dict[str, np.ndarray], stats: dict[str, MapStats]) -> dict[str, np.ndarray]:
    """Definition name -> maps N x H x W; DEFAULT_MAP is the model's own."""
    out: dict[str, np.ndarray] = {}
    for name in ("mse", "ssim"):
        raw, fit = maps[name], stats[name]
        out[f"{name} raw"] = raw / fit.overall
        for floor in FLOORS:
            out[f"{name} pixel f{floor}"] = standardised(raw, fit, floor)
    out["mse+ssim raw"] = out["mse raw"] + out["ssim raw"]
    out[f"mse+ssim pixel f{MAP_STD_FLOOR}"] = out[DEFAULT_MAP] + out[f"ssim pixel f{MAP_STD_FLOOR}"]
    return out


def score_mixes(peaks: np.ndarray, features: np.ndarray, fit_peaks: np.ndarray, fit_features: np.ndarray) -> dict[str, np.ndarray]:
    """daad+'s score mix gamma * R' + (1 - gamma) * L' (PRODUCT.md) for gamma below the default 1:
    R the default map's maximum, L the discriminator's feature distance, each standardised by
    its mean and std on the training images (`fit_*`). Image scores N per gamma."""
    r = (peaks - fit_peaks.mean()) / max(fit_peaks.std(ddof=1), 1e-8)
    l = (features - fit_features.mean()) / max(fit_features.std(ddof=1), 1e-8)
    return {f"mix gamma {gamma}": gamma * r + (1 - gamma) * l for gamma in GAMMAS}


def _peaks(maps: np.ndarray) -> np.ndarray:
    return maps.reshape(len(maps), -1).max(axis=1)


def measure(labelled: Labelled, maps: np.ndarray, num_thresholds: int | None = 200) -> dict[str, float | None]:
    """Image AUROC of the maps' maxima, pixel AUROC and AUPRO (at `num_thresholds`, None: exact, as
    `daad eval`); image scores N: image AUROC only."""
    if maps.ndim == 1:
        return {"image_auroc": image_auroc(labelled.labels, maps), "pixel_auroc": None, "aupro": None}
    return {
        "image_auroc": image_auroc(labelled.labels, _peaks(maps)),
        "pixel_auroc": pixel_auroc(labelled.masks, maps),
        "aupro": aupro(labelled.masks, maps, num_thresholds=num_thresholds),
    }


def load_good(folder: Path, model: AnomalyModel) -> np.ndarray:
    return load_images(find_samples(folder, "train"), model.preprocess).images


def score_run(model: AnomalyModel, data: Path) -> dict[str, dict[str, dict[str, float]]]:
    """Definition -> {"proxy": metrics, "test": metrics} for one trained model on its data set."""
    train = load_good(data, model)
    test_set = load_images(find_samples(data, "test"), model.preprocess)
    test = Labelled(test_set.images, np.array([s.label for s in test_set.samples]), load_masks(test_set.samples, model.preprocess))
    validation = data / "validation" / "good"
    held_out = load_good(validation, model) if validation.is_dir() else train[1::2]
    proxy = draw_defects(held_out)
    train_maps = raw_maps(model, train)
    proxy_fit = train_maps if validation.is_dir() else {k: v[0::2] for k, v in train_maps.items()}
    results = {}
    for split, labelled, fit in (("test", test, train_maps), ("proxy", proxy, proxy_fit)):
        stats = {name: fit_stats(model, fit[name]) for name in ("mse", "ssim")}
        raw = raw_maps(model, labelled.images)
        scored = definitions(raw, stats)
        if "feature" in raw:  # daad+
            fit_peaks = _peaks(standardised(fit["mse"], stats["mse"], MAP_STD_FLOOR))
            scored.update(score_mixes(_peaks(scored[DEFAULT_MAP]), raw["feature"], fit_peaks, fit["feature"]))
        for name, maps in scored.items():
            results.setdefault(name, {})[split] = measure(labelled, maps)
    return results


def checkpoints(runs: Path) -> list[tuple[str, str, int, Path]]:
    """(set, kind, seed, checkpoint) of every finished run under RUNS/runs/SET/KIND/seedN."""
    found = []
    for path in sorted(runs.glob("runs/*/*/seed*/checkpoint.pt")):
        seed_dir = path.parent
        found.append((seed_dir.parent.parent.name, seed_dir.parent.name, int(seed_dir.name[4:]), path))
    return found


def summarise(rows: list[dict[str, Any]]) -> str:
    """The markdown table: mean ± std over seeds per set, kind and definition."""
    lines = [
        "| set | kind | map | seeds | proxy image / pixel AUROC / AUPRO | test image / pixel AUROC / AUPRO |",
        "|---|---|---|---|---|---|",
    ]
    groups = dict.fromkeys((row["set"], row["kind"], row["label"]) for row in rows)
    for set_name, kind, label in groups:
        chosen = [row for row in rows if (row["set"], row["kind"], row["label"]) == (set_name, kind, label)]
        for name in chosen[0]["definitions"]:
            cells = [
                " / ".join(_cell([row["definitions"][name][split][m] for row in chosen]) for m in MEASURES)
                for split in ("proxy", "test")
            ]
            lines.append(f"| {set_name} | {label} | {name} | {len(chosen)} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def _cell(values: list[float | None]) -> str:
    if None in values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments.scoring", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, nargs="+", help="folders of the data sets the runs were trained on")
    parser.add_argument("--runs", required=True, type=Path, nargs="+", help="experiments.realdata output folders")
    parser.add_argument("--out", required=True, type=Path, help="folder for scoring.json and scoring.md")
    return parser


def main(argv: list[str] | None = None) -> int:
    from train.checkpoint import load_checkpoint

    args = build_parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for runs in args.runs:
        for set_name, kind, seed, path in checkpoints(runs):
            found = data_sets(args.data, [set_name])
            if not found:
                print(f"skipping {path}: no data set named {set_name} under {' '.join(map(str, args.data))}")
                continue
            model = load_checkpoint(path).model
            label = f"{kind} ({re.sub(r'-s[0-9]+$', '', runs.name)})"
            rows.append({"set": set_name, "kind": kind, "label": label, "seed": seed, "checkpoint": str(path),
                         "definitions": score_run(model, found[0])})
            default = rows[-1]["definitions"][DEFAULT_MAP]
            print(f"{set_name} {label} seed {seed}: default map proxy {default['proxy']['pixel_auroc']:.3f}, "
                  f"test {default['test']['pixel_auroc']:.3f}", flush=True)
            atomic_write_json(args.out / "scoring.json", rows)
    table = summarise(rows)
    atomic_write_text(args.out / "scoring.md", table)
    print(table)
    return 0


if __name__ == "__main__":
    from runtime.cli import run_script

    run_script(main, "python -m experiments.scoring")
