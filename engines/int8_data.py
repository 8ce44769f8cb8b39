"""INT8 calibration data: real good images, prepared exactly as the camera loop prepares frames.

TensorRT's entropy calibrator picks each tensor's INT8 range from activations on these images,
so they must be what the line sees: good parts from the product's data set (a plain folder, or
train/good of an MVTec AD layout), through runtime preprocessing, as uint8 N x H x W x C, the
graph's input. Torch-free: this runs on the Jetson that builds the engine.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from runtime.dataset import find_samples, load_images
from runtime.errors import DataError
from runtime.preprocess import PreprocessConfig

DEFAULT_BATCH = 8
RECOMMENDED_IMAGES = 100  # fewer gives noisy activation histograms, hence poorly chosen ranges
CACHE_SUFFIX = ".calib"


@dataclass
class CalibrationSet:
    """Prepared good images, served in full batches of a fixed size (the calibrator's contract)."""

    images: np.ndarray  # uint8 N x H x W x C
    batch: int
    source: Path
    skipped: int = 0

    @property
    def num_batches(self) -> int:
        return len(self.images) // self.batch

    def batches(self) -> Iterator[np.ndarray]:
        """Contiguous uint8 batches of exactly `batch` frames; a partial last batch is left out."""
        for index in range(self.num_batches):
            yield np.ascontiguousarray(self.images[index * self.batch : (index + 1) * self.batch])


def load_calibration_set(
    root: Path, preprocess: PreprocessConfig, batch: int = DEFAULT_BATCH, limit: int | None = None
) -> CalibrationSet:
    """Good images from `root` (plain folder or MVTec AD train/good), at most `limit` of them."""
    if batch < 1:
        raise ValueError(f"calibration batch must be positive, got {batch}")
    samples = find_samples(Path(root), "train")
    if limit is not None:
        samples = samples[:limit]
    loaded = load_images(samples, preprocess)  # warns about, and counts, unreadable files
    if len(loaded.images) < batch:
        raise DataError(
            f"{root} has {len(loaded.images)} readable good image(s); INT8 calibration needs at least one batch "
            f"of {batch} (and about {RECOMMENDED_IMAGES} for stable ranges): add good images or lower the batch"
        )
    if len(loaded.images) < RECOMMENDED_IMAGES:
        warnings.warn(
            f"only {len(loaded.images)} calibration images in {root}; about {RECOMMENDED_IMAGES} give stable "
            "INT8 ranges. Check the INT8 engine's scores against fp32 before trusting it.",
            stacklevel=2,
        )
    return CalibrationSet(loaded.images, batch, Path(root), skipped=len(loaded.skipped))


def calibration_cache_path(engine: Path) -> Path:
    """The calibration cache sits next to its engine: <engine stem>.calib.

    TensorRT reuses it instead of recalibrating; delete it to calibrate again from new images.
    """
    return Path(engine).with_suffix(CACHE_SUFFIX)
