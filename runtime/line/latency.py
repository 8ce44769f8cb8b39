"""Latency statistics that an engineer can defend: percentiles, mean and spread of timed samples.

Shared by the camera loop's stats line and summary and by `daad bench`, so both report the same
numbers computed the same way. Samples go into a fixed-size histogram of log-spaced buckets
(HDR-histogram style), so a run of months keeps the memory of a run of seconds.
"""

from __future__ import annotations

import math
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


# Buckets grow by 1 % from 0.1 us to 10^4 s (2,546 of them, ~20 kB per stage). A percentile is
# read as the geometric centre of its bucket, so it is within 0.5 % of the exact (numpy linear)
# percentile of the samples, clamped to the exact min and max; mean and cv are exact.
LOWEST_S, HIGHEST_S, GROWTH = 1e-7, 1e4, 1.01
_LOG_GROWTH = math.log(GROWTH)
BUCKETS = math.ceil(math.log(HIGHEST_S / LOWEST_S) / _LOG_GROWTH) + 1
RELATIVE_ERROR = math.sqrt(GROWTH) - 1.0


class LatencyHistogram:
    """Durations in seconds, counted in fixed log-spaced buckets; exact count, min, max, mean and std.

    Below LOWEST_S (including 0) counts in the first bucket, above HIGHEST_S in the last; the
    exact min and max bound every percentile. NaN and infinite samples are ignored.
    """

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.count = 0
        self.min, self.max = math.inf, -math.inf
        self._mean = self._squares = 0.0  # Welford's running mean and sum of squared deviations

    def add(self, seconds: float) -> None:
        if not math.isfinite(seconds):
            return
        position = math.log(seconds / LOWEST_S) / _LOG_GROWTH if seconds > LOWEST_S else 0.0
        self.counts[min(int(position), BUCKETS - 1)] += 1
        self.count += 1
        self.min, self.max = min(self.min, seconds), max(self.max, seconds)
        delta = seconds - self._mean
        self._mean += delta / self.count
        self._squares += delta * (seconds - self._mean)

    def quantiles(self, fractions: Iterable[float]) -> list[float]:
        """numpy's linear-interpolation percentiles, each sample read as its bucket's geometric centre."""
        cumulative = np.cumsum(self.counts)
        centres = LOWEST_S * GROWTH ** (np.arange(BUCKETS) + 0.5)

        def sample(rank: int) -> float:  # the rank-th smallest sample (0-based), from its bucket
            return float(np.clip(centres[np.searchsorted(cumulative, rank + 1)], self.min, self.max))

        values = []
        for fraction in fractions:
            rank = fraction * (self.count - 1)
            low, weight = int(math.floor(rank)), rank - math.floor(rank)
            values.append(sample(low) if weight == 0 else (1 - weight) * sample(low) + weight * sample(low + 1))
        return values

    def summary(self) -> LatencySummary:
        if self.count == 0:
            nan = float("nan")
            return LatencySummary(nan, nan, nan, nan, nan, nan, nan, nan, 0)
        p50, p90, p95, p99 = self.quantiles([0.5, 0.9, 0.95, 0.99])
        std = math.sqrt(self._squares / self.count)
        return LatencySummary(min=self.min, mean=self._mean, median=p50, p90=p90, p95=p95, p99=p99, max=self.max,
                              cv=std / self._mean if self._mean > 0 else float("nan"), count=self.count)


def summarize(samples_seconds: Iterable[float] | np.ndarray) -> LatencySummary:
    """Summarise durations in seconds (non-finite samples are ignored, not averaged in)."""
    histogram = LatencyHistogram()
    for seconds in np.ravel(np.asarray(list(samples_seconds), dtype=np.float64)):
        histogram.add(float(seconds))
    return histogram.summary()


class StageTimes:
    """A LatencyHistogram per stage: constant memory, percentiles over the whole run."""

    def __init__(self) -> None:
        self._histograms: dict[str, LatencyHistogram] = {}

    def add(self, stages: dict[str, float]) -> None:
        for stage, seconds in stages.items():
            histogram = self._histograms.get(stage)
            if histogram is None:
                histogram = self._histograms[stage] = LatencyHistogram()
            histogram.add(seconds)

    def stages(self) -> list[str]:
        return list(self._histograms)

    def summary(self, stage: str) -> LatencySummary:
        histogram = self._histograms.get(stage)
        return histogram.summary() if histogram is not None else LatencyHistogram().summary()

    def to_ms(self) -> dict[str, dict[str, float | int | None]]:
        return {stage: histogram.summary().to_ms() for stage, histogram in self._histograms.items()}
