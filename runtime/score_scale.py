"""The readable score: one bounded scale, fixed to a product's calibration, for people and colours.

Raw scores are whatever the model's units are (training standard deviations, possibly
negative; a defect may score 1e4 times a good part), so the same number means different
things on two products. Calibration knows two points of each product's scale: a typical good
part (the median good score) and the threshold. This module maps them to fixed places:

    level = max(0, (score - typical_good) / (threshold - typical_good))
    index = 100 * level / (1 + level)

so a typical good part reads 0, the threshold reads 50 on every product, twice as far above
typical as the threshold reads 67, ten times 91, and nothing ever reads 100: the index is
monotone in the score (verdicts do not change) and bounded. The raw score stays what the
graph outputs and what calibration thresholds; the index is what the product shows
(events, overlay label), and `colour_map` paints anomaly maps (whose maximum is the score)
on the same scale, so the same colour means the same level in every picture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.optional import cv2

THRESHOLD_INDEX = 50.0  # where the threshold sits on the 0..100 index


@dataclass(frozen=True)
class ScoreScale:
    """Two points of a product's raw score scale: a typical good part and the threshold."""

    threshold: float
    typical_good: float = 0.0

    @property
    def span(self) -> float:
        """Raw score from typical good to the threshold; 1 where a trial threshold sits at or
        below the typical good score (the index then still rises with the score)."""
        span = self.threshold - self.typical_good
        return span if span > 0 else 1.0

    def level(self, scores: Any) -> np.ndarray:
        """Multiples of the typical-good-to-threshold distance above typical good (>= 0)."""
        return np.fmax(0.0, (np.asarray(scores, dtype=np.float64) - self.typical_good) / self.span)  # NaN -> 0

    def index(self, scores: Any) -> np.ndarray:
        """The readable score, 0 (typical good) .. 50 (threshold) .. <100."""
        return 100.0 - 100.0 / (1.0 + self.level(scores))

    def readable(self, score: float) -> float:
        """One score's index, rounded to what a person reads."""
        return round(float(self.index(score)), 1)

    @classmethod
    def from_calibration(cls, threshold: float, score_stats: dict[str, Any] | None = None) -> "ScoreScale":
        """From a threshold and the `score_stats` calibration stored beside it (threshold.json);
        without a good median (a trial threshold), typical good is 0: the raw map's training mean."""
        median = ((score_stats or {}).get("good") or {}).get("median")
        return cls(float(threshold), float(median) if median is not None else 0.0)


def colour_map(values: np.ndarray, scale: ScoreScale) -> np.ndarray:
    """Anomaly values (H x W, raw score units) -> BGR uint8 H x W x 3 with OpenCV's JET map at
    the index: blue is typical good, the threshold is green-yellow (mid-map), dark red is far
    above it. THE colour mapping of the product: overlay, NG images, eval grids and reports."""
    levels = np.clip(scale.index(values) / 100.0, 0.0, 1.0)
    return cv2().applyColorMap(np.round(levels * 255).astype(np.uint8), cv2().COLORMAP_JET)
