"""Latency statistics that an engineer can defend: percentiles, mean and spread of timed samples.

Shared by the camera loop's stats line and summary and by `daad bench`, so both report the same
numbers computed the same way (numpy's linear-interpolation percentiles).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np


@dataclass(frozen=True)
class LatencySummary:
    """Statistics of a set of durations, in seconds; NaN everywhere when there were no samples."""

    min: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    max: float
    cv: float  # coefficient of variation (std / mean): how steady the latency is
    count: int

    def to_ms(self) -> dict[str, float | int | None]:
        """Milliseconds, rounded for humans; NaN becomes None so the result is valid JSON."""
        out: dict[str, float | int | None] = {}
        for key, value in asdict(self).items():
            if key == "count":
                out[key] = value
            elif key == "cv":
                out[key] = None if math.isnan(value) else round(value, 4)
            else:
                out[key] = None if math.isnan(value) else round(value * 1000.0, 4)
        return out


def summarize(samples_seconds: Iterable[float] | np.ndarray) -> LatencySummary:
    """Summarise durations in seconds (non-finite samples are ignored, not averaged in)."""
    if not isinstance(samples_seconds, np.ndarray):
        samples_seconds = list(samples_seconds)
    samples = np.asarray(samples_seconds, dtype=np.float64).ravel()
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        nan = float("nan")
        return LatencySummary(nan, nan, nan, nan, nan, nan, nan, nan, 0)
    p50, p90, p95, p99 = np.percentile(samples, [50, 90, 95, 99])
    mean = float(samples.mean())
    cv = float(samples.std() / mean) if mean > 0 else float("nan")
    return LatencySummary(
        min=float(samples.min()),
        mean=mean,
        median=float(p50),
        p90=float(p90),
        p95=float(p95),
        p99=float(p99),
        max=float(samples.max()),
        cv=cv,
        count=int(samples.size),
    )


class StageTimes:
    """Per-stage duration samples, bounded so a months-long run keeps constant memory.

    Percentiles are over the most recent `keep` samples of each stage.
    """

    def __init__(self, keep: int = 100_000) -> None:
        self.keep = keep
        self._samples: dict[str, deque[float]] = {}

    def add(self, stages: dict[str, float]) -> None:
        for stage, seconds in stages.items():
            self._samples.setdefault(stage, deque(maxlen=self.keep)).append(seconds)

    def stages(self) -> list[str]:
        return list(self._samples)

    def summary(self, stage: str) -> LatencySummary:
        return summarize(np.fromiter(self._samples.get(stage, ()), dtype=np.float64))

    def to_ms(self) -> dict[str, dict[str, float | int | None]]:
        return {stage: self.summary(stage).to_ms() for stage in self._samples}
