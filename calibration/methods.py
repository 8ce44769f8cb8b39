"""Threshold methods: plain functions over arrays of scores, in scikit-learn's metric style.

The rule everywhere in daad-edge: a part is rejected when its score is above the threshold
(`score > threshold`). Every method returns one float; the rates it achieves are counted by
`count_rejected` and bounded in calibration/intervals.py.
"""

from __future__ import annotations

import math

import numpy as np

METHODS = ("quantile", "f1", "recall")


def check_scores(scores: np.ndarray, name: str = "scores") -> np.ndarray:
    """A 1-D, non-empty, finite float64 copy of `scores`, or a ValueError saying what is wrong."""
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty: a threshold needs at least one score")
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise ValueError(f"{name} holds {bad} NaN or infinite value(s): drop them before thresholding")
    return array


def count_rejected(scores: np.ndarray, threshold: float) -> int:
    """How many of `scores` the rule `score > threshold` rejects."""
    return int(np.count_nonzero(np.asarray(scores) > threshold))


def quantile_threshold(good_scores: np.ndarray, target_frr: float) -> float:
    """The (1 - target_frr) quantile of good scores, taken as an order statistic.

    With n good scores it is the score that leaves floor(n * target_frr) good scores above it.
    Taking an order statistic (no interpolation) is what makes the false-reject bound in
    intervals.upper_bound exact for any score distribution.
    """
    good = np.sort(check_scores(good_scores, "good_scores"))
    if not 0.0 < target_frr < 1.0:
        raise ValueError(f"target_frr must be in (0, 1), got {target_frr}")
    allowed_rejects = math.floor(good.size * target_frr + 1e-9)
    return float(good[good.size - allowed_rejects - 1])


def f1_threshold(good_scores: np.ndarray, defect_scores: np.ndarray) -> float:
    """The threshold with the highest F1 for defects (defect = positive); ties go to the higher one."""
    return best_f1(good_scores, defect_scores)[1]


def best_f1(good_scores: np.ndarray, defect_scores: np.ndarray) -> tuple[float, float]:
    """(highest F1 for defects, the threshold that reaches it under `score > threshold`).

    The F1-max of `daad eval` (train.metrics.f1_max) is this too, so a threshold reported by
    evaluation and one set by calibration mean the same thing on the line.
    """
    good = np.sort(check_scores(good_scores, "good_scores"))
    defect = np.sort(check_scores(defect_scores, "defect_scores"))
    # Each candidate is the lowest score that gets rejected.
    candidates = np.unique(np.concatenate([good, defect]))
    false_rejects = good.size - np.searchsorted(good, candidates, side="left")
    detected = defect.size - np.searchsorted(defect, candidates, side="left")
    missed = defect.size - detected
    f1 = 2 * detected / (2 * detected + false_rejects + missed)
    best = candidates.size - 1 - int(np.argmax(f1[::-1]))
    return float(f1[best]), _threshold_below(candidates, candidates[best])


def recall_threshold(good_scores: np.ndarray, defect_scores: np.ndarray, target_recall: float) -> float:
    """The highest threshold that still rejects at least `target_recall` of the defect scores."""
    good = check_scores(good_scores, "good_scores")
    defect = np.sort(check_scores(defect_scores, "defect_scores"))
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    must_reject = math.ceil(defect.size * target_recall - 1e-9)
    lowest_rejected = defect[defect.size - must_reject]
    return _threshold_below(np.unique(np.concatenate([good, defect])), lowest_rejected)


def _threshold_below(candidates: np.ndarray, lowest_rejected: float) -> float:
    """A threshold that rejects `lowest_rejected` and passes the next lower score.

    Any value in that gap gives the same counts on the calibration parts; the midpoint leaves
    the most room for scores to wander either way on the line.
    """
    index = int(np.searchsorted(candidates, lowest_rejected, side="left"))
    if index == 0:
        return float(np.nextafter(lowest_rejected, -np.inf))
    below = float(candidates[index - 1])
    middle = (below + float(lowest_rejected)) / 2
    return middle if middle < lowest_rejected else below
