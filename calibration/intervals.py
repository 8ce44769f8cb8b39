"""Confidence bounds on rates counted from a finite number of parts (Clopper-Pearson).

A calibration sees a few hundred parts; the line sees millions. What carries over is not the
observed rate but a bound on the true one: "at most 0.9% false rejects, with 95% confidence".
Clopper-Pearson bounds come from beta quantiles and never under-cover, which is what a
technician needs when the count of rejects is small or zero.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from runtime.optional import require


def _beta():
    return require("scipy.stats", "confidence bounds").beta


def _check(count: int, total: int, confidence: float) -> None:
    if total <= 0:
        raise ValueError(f"a rate needs at least one sample, got total={total}")
    if not 0 <= count <= total:
        raise ValueError(f"count must be between 0 and total={total}, got {count}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def upper_bound(count: int, total: int, confidence: float = 0.95) -> float:
    """One-sided upper bound on the true rate after `count` events in `total` trials.

    For the quantile threshold this is also exact in the order-statistics sense: the true
    false-reject rate above the (total - count)-th smallest good score is Beta(count + 1,
    total - count) distributed, whatever the score distribution.
    """
    _check(count, total, confidence)
    if count == total:
        return 1.0
    return float(_beta().ppf(confidence, count + 1, total - count))


def lower_bound(count: int, total: int, confidence: float = 0.95) -> float:
    """One-sided lower bound on the true rate after `count` events in `total` trials."""
    _check(count, total, confidence)
    if count == 0:
        return 0.0
    return float(_beta().ppf(1.0 - confidence, count, total - count + 1))


def samples_needed(target_rate: float, confidence: float = 0.95) -> int:
    """Parts needed to show a rate of at most `target_rate` when none of them is rejected.

    With zero events in n trials the upper bound is 1 - (1 - confidence)^(1/n), so
    n >= ln(1 - confidence) / ln(1 - target): 598 parts for 0.5%, 2995 for 0.1% at 95%.
    """
    if not 0.0 < target_rate < 1.0:
        raise ValueError(f"target rate must be in (0, 1), got {target_rate}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return math.ceil(math.log(1.0 - confidence) / math.log(1.0 - target_rate))


@dataclass
class RateEstimate:
    """A rate counted on the calibration parts, with its two one-sided bounds.

    `lower` and `upper` are each one-sided at `confidence`: a false-reject rate is quoted by its
    upper bound ("at most"), a recall by its lower bound ("at least").
    """

    count: int
    total: int
    estimate: float
    lower: float
    upper: float
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RateEstimate":
        return cls(**{key: data[key] for key in cls.__dataclass_fields__})


def estimate_rate(count: int, total: int, confidence: float = 0.95) -> RateEstimate:
    """`count` of `total` with both one-sided Clopper-Pearson bounds at `confidence`."""
    return RateEstimate(
        count=int(count),
        total=int(total),
        estimate=count / total,
        lower=lower_bound(count, total, confidence),
        upper=upper_bound(count, total, confidence),
        confidence=float(confidence),
    )
