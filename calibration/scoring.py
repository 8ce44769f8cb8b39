"""Score a folder of parts, or N frames of a camera, through a runtime backend.

Calibration scores on the backend and precision that will run in production (an fp16 engine
does not give the scores ONNX Runtime gives), and reads images through runtime.dataset and
runtime.preprocess, the code the camera loop runs. Unreadable images are skipped and NaN scores
set aside, both by name, so the counts in threshold.json say exactly what the threshold rests on.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends.base import Backend
from runtime.backends.batches import infer_batches
from calibration.outliers import MIN_SCORES
from runtime.bundle import METADATA_FILE, MODEL_FILE
from runtime.dataset import find_samples, is_mvtec_layout, load_images
from runtime.errors import DataError
from runtime.preprocess import PreprocessConfig, prepare_frame
from runtime.line.sources import open_source

MIN_GOOD_PARTS = MIN_SCORES


@dataclass
class ScoredParts:
    """Finite scores aligned with `names`; what could not be scored is listed, not dropped silently."""

    source: str
    scores: np.ndarray
    names: list[str]
    skipped: list[str] = field(default_factory=list)  # unreadable or too small images / empty frames, with why
    nan: list[str] = field(default_factory=list)  # scored NaN or infinite: never thresholded
    grey: list[str] = field(default_factory=list)  # scored, but grey images given to a colour model

    def counts(self, kind: str) -> dict[str, Any]:
        return {
            kind: int(self.scores.size),
            f"{kind}_skipped": len(self.skipped),
            f"{kind}_nan": len(self.nan),
            f"{kind}_grey": len(self.grey),
            f"{kind}_source": self.source,
        }


def check_enough_good(good: ScoredParts) -> None:
    """Refuse to set a threshold on fewer than MIN_GOOD_PARTS good parts: the outlier rule cannot see one
    damaged image among so few, and it would set the line (a bundle's own calibration.png, "1 part",
    once gave 58.87 where 3.07 was right)."""
    if good.scores.size < MIN_GOOD_PARTS:
        raise DataError(f"only {good.scores.size} good part(s) could be scored from {good.source}; a threshold "
                        f"needs at least {MIN_GOOD_PARTS} (a few hundred to show a false-reject rate): "
                        "add images of good parts")


def score_folder(
    backend: Backend, folder: str | Path, config: PreprocessConfig, batch_size: int = 1, progress: bool = False
) -> ScoredParts:
    """Every image directly in `folder` (a plain folder, not a data set root)."""
    folder = Path(folder)
    if (folder / METADATA_FILE).is_file() and (folder / MODEL_FILE).is_file():
        raise DataError(f"{folder} is a bundle folder, not a folder of parts (its only image is calibration.png): "
                        "point --good at the images of good parts taken by the line's camera")
    if folder.is_dir() and is_mvtec_layout(folder):
        raise DataError(
            f"{folder} is a data set in MVTec AD layout, not a folder of parts: point --good at "
            f"{folder / 'test' / 'good'} and --defect at one of {folder / 'test'}/<defect> "
            "(training images score lower than new parts and would set the threshold too low)"
        )
    samples = find_samples(folder, "train")
    with warnings.catch_warnings():  # each skipped file is named once, by the caller, from `skipped`
        warnings.simplefilter("ignore", UserWarning)
        loaded = load_images(samples, config, progress=progress)
    scored = score_images(
        backend,
        loaded.images,
        [sample.path.name for sample in loaded.samples],
        [f"{path.name} ({reason})" for path, reason in zip(loaded.skipped, loaded.skip_reasons)],
        str(folder),
        batch_size,
        progress,
    )
    scored.grey = [path.name for path in loaded.grey]
    return scored


def score_source(
    backend: Backend,
    uri: str,
    frames: int,
    config: PreprocessConfig,
    batch_size: int = 1,
    progress: bool = False,
) -> ScoredParts:
    """The next `frames` frames of a camera, stream, video or image folder (fewer if it ends)."""
    images, names, skipped = read_frames(uri, frames, config)
    return score_images(backend, images, names, skipped, str(uri), batch_size, progress)


def read_frames(uri: str, frames: int, config: PreprocessConfig) -> tuple[np.ndarray, list[str], list[str]]:
    """The next `frames` prepared frames of a source (fewer if it ends), their names, and those skipped."""
    if frames < 1:
        raise DataError(f"--frames must be at least 1, got {frames}")
    source = open_source(uri)
    images, names, skipped = [], [], []
    try:
        for index in range(frames):
            frame = source.read()
            if frame is None:
                break
            name = frame.name or f"frame {index}"
            try:
                images.append(prepare_frame(frame.image, config))
                names.append(name)
            except DataError:
                skipped.append(name)
    finally:
        source.close()
    if not images:
        raise DataError(f"source {uri} delivered no usable frame ({len(skipped)} empty or unreadable)")
    return np.stack(images), names, skipped


def score_images(
    backend: Backend,
    images: np.ndarray,
    names: list[str],
    skipped: list[str],
    source: str,
    batch_size: int,
    progress: bool,
) -> ScoredParts:
    """Prepared uint8 images, scored a batch at a time; NaN and infinite scores set aside by name."""
    scores = infer_batches(backend, images, batch_size, progress, keep_maps=False).scores.astype(np.float64)
    finite = np.isfinite(scores)
    return ScoredParts(
        source=source,
        scores=scores[finite],
        names=[name for name, ok in zip(names, finite) if ok],
        skipped=skipped,
        nan=[name for name, ok in zip(names, finite) if not ok],
    )
