"""The good parts a product is taught from, and which of them calibrate instead of being kept.

A folder (a plain folder of images, or an MVTec AD data set's train/good) is read in name order,
the first `--parts` of it; a camera, stream or video gives its next `--parts` frames. Every part
goes through runtime.preprocess, the code the camera loop runs.

The calibration split is a held-out fraction, spread evenly over the parts in the order they
came: a part taken early in the shift and one taken late are both in it, so a slow drift in
light or position shows in the threshold instead of hiding in the memory. k-fold would score
every part but fit k memories (k coresets, the slowest step), and its threshold would be set on
k graphs that never run; the held-out parts are scored by the very bundle the line runs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calibration.scoring import MIN_GOOD_PARTS, read_frames
from runtime.dataset import find_samples, load_images
from runtime.errors import DataError
from runtime.preprocess import PreprocessConfig


@dataclass
class GoodParts:
    """Prepared uint8 frames and their names; what could not be used is named, never dropped silently."""

    source: str
    images: np.ndarray
    names: list[str]
    skipped: list[str] = field(default_factory=list)
    grey: list[str] = field(default_factory=list)
    wanted: int | None = None  # --parts, when more were asked for than the source gave


def read_good_parts(good: str, parts: int | None, preprocess: PreprocessConfig) -> GoodParts:
    """The first `parts` good parts of a folder (all when None), or the next `parts` frames of a source."""
    if parts is not None and parts < 1:
        raise DataError(f"--parts must be at least 1, got {parts}")
    folder = Path(good)
    if folder.is_dir():
        samples = find_samples(folder, "train")
        chosen = samples if parts is None else samples[:parts]
        with warnings.catch_warnings():  # skipped and grey images are named once, by the caller
            warnings.simplefilter("ignore", UserWarning)
            loaded = load_images(chosen, preprocess)
        return GoodParts(
            source=str(folder),
            images=loaded.images,
            names=[sample.path.name for sample in loaded.samples],
            skipped=[f"{path.name} ({reason})" for path, reason in zip(loaded.skipped, loaded.skip_reasons)],
            grey=[path.name for path in loaded.grey],
            wanted=parts if parts is not None and len(samples) < parts else None,
        )
    if parts is None:
        raise DataError(f"--good {good} is not a folder: for a camera, stream or video pass --parts N, how many "
                        "good parts to take from it (or fix the folder's path)")  # fmt: skip
    images, names, skipped = read_frames(good, parts, preprocess)
    delivered = len(names) + len(skipped)
    return GoodParts(str(good), images, names, skipped, wanted=parts if delivered < parts else None)


def holdout_mask(count: int, fraction: float) -> np.ndarray:
    """bool `count`: True for the parts that calibrate, round(count * fraction) of them, evenly spread."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"--holdout must be between 0 and 1 (the share of parts that calibrate), got {fraction}")
    held = int(round(count * fraction))
    mask = np.zeros(count, dtype=bool)
    mask[((np.arange(held) + 0.5) * count / max(held, 1)).astype(int)] = True
    return mask


def check_enough_parts(parts: GoodParts, fraction: float) -> None:
    """A threshold needs MIN_GOOD_PARTS calibration parts and the memory at least one: refuse fewer, naming both."""
    count = len(parts.names)
    held = int(round(count * fraction))
    if held < MIN_GOOD_PARTS or held == count:
        needed = int(np.ceil((MIN_GOOD_PARTS - 0.5) / fraction))
        raise DataError(
            f"only {count} good part(s) could be read from {parts.source}; teaching needs at least {max(needed, 2)} "
            f"(--holdout {fraction:g} keeps that share for the threshold, which needs {MIN_GOOD_PARTS}): "
            "add images of good parts (a few hundred show a false-reject rate), or pass --parts N with more"
        )
