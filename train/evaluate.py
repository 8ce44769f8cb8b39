"""Evaluation of any scorer on a data set's test split: metrics, and a picture to look at.

The scorer is a runtime Backend (uint8 N x H x W x C -> scores N, maps N x 1 x H x W), so the
same code evaluates a PyTorch checkpoint (train.torch_backend.TorchBackend) or an exported
bundle through the backend that runs it on the line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from runtime.backends.base import Backend
from runtime.backends.batches import infer_batches
from runtime.dataset import ImageSet, find_samples, load_images, load_masks
from runtime.errors import DataError
from runtime.optional import require
from runtime.line.overlay import blend_heatmap
from runtime.preprocess import PreprocessConfig
from runtime.score_scale import ScoreScale, colour_map
from train.metrics import evaluate_scores

ReconstructFn = Callable[[np.ndarray], np.ndarray]  # uint8 frames -> uint8 reconstructions


@dataclass
class Evaluation:
    metrics: dict[str, Any]  # image_auroc, pixel_auroc, aupro, f1_max, f1_threshold, per_defect
    test_set: ImageSet
    masks: np.ndarray  # bool N x H x W
    scores: np.ndarray  # N
    maps: np.ndarray  # N x 1 x H x W


def evaluate(
    backend: Backend,
    data_root: str | Path,
    preprocess: PreprocessConfig,
    batch_size: int = 32,
    progress: bool = False,
) -> Evaluation:
    """Score every test image of `data_root` and compute the metrics of `daad eval`."""
    data_root = Path(data_root)
    samples = find_samples(data_root, "test")
    test_set = load_images(samples, preprocess, progress=progress)
    labels = [s.label for s in test_set.samples]
    if not 0 < sum(labels) < len(labels):
        raise DataError(f"{data_root}/test needs both good and defective images to compute AUROC")
    masks = load_masks(test_set.samples, preprocess)
    result = infer_batches(backend, test_set.images, batch_size)
    scores, maps = result.scores.astype(np.float64), result.anomaly_maps
    metrics = evaluate_scores(test_set.samples, None, scores, masks, maps)
    return Evaluation(metrics, test_set, masks, scores, maps)


def pick_examples(evaluation: Evaluation, per_class: int = 3) -> list[int]:
    """The highest-scoring defective and the lowest-scoring good samples, a few of each."""
    labels = np.array([s.label for s in evaluation.test_set.samples])
    order = np.argsort(evaluation.scores)
    good = [i for i in order if labels[i] == 0][:per_class]
    bad = [i for i in order[::-1] if labels[i] == 1][:per_class]
    return good + bad


def test_split_scale(evaluation: Evaluation) -> ScoreScale:
    """Colours for a model not calibrated yet: the F1-max threshold of this test split and its
    median good score stand in for the product's calibration."""
    labels = np.array([s.label for s in evaluation.test_set.samples])
    return ScoreScale(float(evaluation.metrics["f1_threshold"]), float(np.median(evaluation.scores[labels == 0])))


def save_grid(
    path: str | Path,
    evaluation: Evaluation,
    reconstruct_fn: ReconstructFn | None = None,
    per_class: int = 3,
    scale: ScoreScale | None = None,
) -> Path:
    """PNG rows of input | reconstruction | heat map over the input | ground-truth mask.

    The heat map is painted by the runtime's overlay in the product's colours: `scale` is the
    bundle's calibration when there is one, else `test_split_scale`; the caption says which.
    """
    matplotlib = require("matplotlib", "the evaluation picture")
    matplotlib.use("Agg")
    plt = require("matplotlib.pyplot", "the evaluation picture")
    from runtime.atomic import atomic_write_bytes

    calibrated = scale is not None
    scale = scale or test_split_scale(evaluation)
    indices = pick_examples(evaluation, per_class)
    images = evaluation.test_set.images[indices]
    reconstructions = reconstruct_fn(images) if reconstruct_fn is not None else None
    columns = ["input", "reconstruction", "anomaly map", "ground truth"] if reconstructions is not None else [
        "input",
        "anomaly map",
        "ground truth",
    ]
    height, width = images.shape[1:3]
    cell = 2.2 / max(height, width)
    figure, axes = plt.subplots(len(indices) + 1, len(columns), squeeze=False,
                                figsize=(max(4.0, cell * width * len(columns) + 0.6), cell * height * len(indices) + 0.9),
                                gridspec_kw={"height_ratios": [1.0] * len(indices) + [0.12]})  # fmt: skip
    for row, index in enumerate(indices):
        sample = evaluation.test_set.samples[index]
        panels = [_rgb(images[row])]
        if reconstructions is not None:
            panels.append(_rgb(reconstructions[row]))
        for column, (axis, title) in enumerate(zip(axes[row], columns)):
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title, fontsize=9)
            if title == "anomaly map":
                axis.imshow(_rgb(blend_heatmap(_bgr(images[row]), evaluation.maps[index, 0], scale)))
            elif title == "ground truth":
                axis.imshow(evaluation.masks[index], cmap="gray", vmin=0, vmax=1)
            else:
                axis.imshow(panels[column])
        readable = scale.readable(evaluation.scores[index])
        axes[row][0].set_ylabel(f"{sample.defect}\n{readable:g}/100", fontsize=8)
    _legend(figure, axes[-1], scale, calibrated)
    figure.tight_layout()
    buffer = _png_bytes(figure)
    plt.close(figure)
    return atomic_write_bytes(path, buffer)


def _legend(figure: Any, row: Any, scale: ScoreScale, calibrated: bool) -> None:
    """The last row: the colour bar of the readable score, drawn by the same colour mapping."""
    grid = row[0].get_gridspec()
    for axis in row:
        axis.remove()
    bar = figure.add_subplot(grid[-1, :])
    readable = np.linspace(0.0, 99.0, 256)
    scores = scale.typical_good + readable / (100.0 - readable) * scale.span
    bar.imshow(_rgb(colour_map(np.tile(scores, (8, 1)), scale)), aspect="auto", extent=(0, 99, 0, 1))
    bar.set_yticks([])
    bar.set_xticks([0, 25, 50, 75, 90])
    bar.tick_params(labelsize=7)
    source = "calibrated threshold" if calibrated else "F1-max threshold of this test split"
    bar.set_xlabel(f"readable score: 0 typical good part,\n50 = {source} (score {scale.threshold:.3g})", fontsize=7)


def _bgr(image: np.ndarray) -> np.ndarray:
    return image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)


def _rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV BGR / grey H x W x C -> something imshow shows in true colour."""
    return image[:, :, ::-1] if image.shape[2] == 3 else np.repeat(image, 3, axis=2)


def _png_bytes(figure: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()
