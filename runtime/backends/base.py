"""The one small interface every inference backend meets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

PRECISIONS = ("fp32", "fp16", "int8")  # what a backend can run a bundle at (all but fp32 need TensorRT)


@dataclass
class InferenceResult:
    """Scores and maps for one batch, with the time each stage took (seconds)."""

    scores: np.ndarray  # float32, N
    anomaly_maps: np.ndarray  # float32, N x 1 x H x W
    timings: dict[str, float] = field(default_factory=dict)  # e.g. h2d, compute, d2h


@runtime_checkable
class Backend(Protocol):
    """Loads a bundle once, then scores uint8 N x H x W x C batches from runtime.preprocess."""

    name: str
    precision: str

    def infer(self, frames: np.ndarray) -> InferenceResult: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Backend": ...

    def __exit__(self, *exc: object) -> None: ...
