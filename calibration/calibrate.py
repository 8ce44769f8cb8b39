"""From scores to a calibrated threshold with its evidence: no images, no files, only arrays.

The command line scores the parts (scoring.py), calls `calibrate`, then writes the record and
the plot; keeping this step pure lets tests drive it with hand-made numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calibration.intervals import RateEstimate, estimate_rate, samples_needed
from calibration.methods import (
    METHODS,
    check_scores,
    count_rejected,
    f1_threshold,
    quantile_threshold,
    recall_threshold,
)
from calibration.outliers import OUTLIER_SPREADS, upper_outliers
from runtime.optional import require

REJECT_RULE = "score > threshold"
REFERENCE_POINTS = 1000  # good-score quantiles kept in threshold.json for `--check`
MIN_AUROC = 0.7  # below this, defect scores barely differ from good ones
OUTLIERS_NAMED = 10  # outlier images named in the warning before "and N more"


@dataclass
class CalibrationSettings:
    """What the technician asked for."""

    method: str = "quantile"
    target_frr: float = 0.005
    target_recall: float | None = None
    confidence: float = 0.95
    # Good scores far above the others (calibration/outliers.py) are left out of the threshold
    # unless kept: one damaged image would otherwise set the line; either way they are named.
    keep_outliers: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not 0.0 < self.target_frr < 1.0:
            raise ValueError(f"target false-reject rate must be in (0, 1), got {self.target_frr}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.method == "recall" and self.target_recall is None:
            raise ValueError("the recall method needs a target recall (e.g. 0.95)")
        if self.target_recall is not None and not 0.0 < self.target_recall <= 1.0:
            raise ValueError(f"target recall must be in (0, 1], got {self.target_recall}")

    def targets(self) -> dict[str, Any]:
        """What the method aimed at (only the target it uses), the confidence and the rule."""
        targets: dict[str, Any] = {
            "confidence": self.confidence,
            "reject_rule": REJECT_RULE,
            "good_outliers": "kept" if self.keep_outliers else "left out",
        }
        if self.method == "quantile":
            targets["target_frr"] = self.target_frr
        if self.method == "recall":
            targets["target_recall"] = self.target_recall
        return targets


@dataclass
class Calibration:
    """The chosen threshold, the rates it gives on the calibration parts, and what to watch."""

    threshold: float
    settings: CalibrationSettings
    false_reject: RateEstimate
    recall: RateEstimate | None = None
    auroc: float | None = None
    warnings: list[str] = field(default_factory=list)
    score_stats: dict[str, Any] = field(default_factory=dict)
    good_outliers: list[tuple[str, float]] = field(default_factory=list)  # (image, score), highest first

    def rates(self) -> dict[str, Any]:
        rates: dict[str, Any] = {"false_reject": self.false_reject.to_dict()}
        if self.recall is not None:
            rates["recall"] = self.recall.to_dict()
        if self.auroc is not None:
            rates["auroc"] = self.auroc
        return rates


def calibrate(
    good_scores: np.ndarray,
    defect_scores: np.ndarray | None,
    settings: CalibrationSettings,
    good_names: list[str] | None = None,
) -> Calibration:
    """Choose the threshold by `settings.method` and measure what it does on these parts.

    Good-score outliers are left out of everything (threshold, rates, statistics) unless
    `settings.keep_outliers`; `good_names` (aligned with the scores) names them in the warning.
    """
    everything = check_scores(good_scores, "good scores")
    outliers = upper_outliers(everything)
    good = everything if settings.keep_outliers else everything[~outliers]
    defect = None if defect_scores is None else check_scores(defect_scores, "defect scores")
    if settings.method != "quantile" and defect is None:
        raise ValueError(f"the {settings.method} method needs defect scores (--defect)")

    if settings.method == "quantile":
        threshold = quantile_threshold(good, settings.target_frr)
    elif settings.method == "f1":
        threshold = f1_threshold(good, defect)
    else:
        threshold = recall_threshold(good, defect, settings.target_recall)

    confidence = settings.confidence
    result = Calibration(
        threshold=threshold,
        settings=settings,
        false_reject=estimate_rate(count_rejected(good, threshold), good.size, confidence),
        score_stats={"good": describe_scores(good)},
    )
    names = good_names if good_names is not None else [f"#{index}" for index in range(everything.size)]
    flagged = sorted(np.flatnonzero(outliers), key=lambda index: -everything[index])
    result.good_outliers = [(names[index], float(everything[index])) for index in flagged]
    if result.good_outliers:
        result.score_stats["good_outliers"] = [{"image": name, "score": score} for name, score in result.good_outliers]
        result.warnings.append(_outlier_warning(result.good_outliers, float(np.median(everything)), settings.keep_outliers))
    if settings.method == "quantile":
        result.warnings += _too_few_good(good.size, settings.target_frr, confidence)
    if defect is not None:
        result.recall = estimate_rate(count_rejected(defect, threshold), defect.size, confidence)
        result.auroc, p_value = separation(good, defect)
        result.score_stats["defect"] = describe_scores(defect)
        result.warnings += _poor_separation(result.auroc, p_value, 1.0 - confidence)
        if settings.method == "recall":
            result.warnings += _too_few_defects(defect.size, settings.target_recall, confidence)
    return result


def separation(good: np.ndarray, defect: np.ndarray) -> tuple[float, float]:
    """AUROC of defect vs. good scores and the one-sided Mann-Whitney p-value (defects higher).

    The Mann-Whitney U statistic divided by the number of pairs is the AUROC, so one test
    gives both the size of the separation and whether it could be chance.
    """
    stats = require("scipy.stats", "the separation test")
    test = stats.mannwhitneyu(defect, good, alternative="greater")
    return float(test.statistic) / (defect.size * good.size), float(test.pvalue)


def describe_scores(scores: np.ndarray) -> dict[str, Any]:
    """Summary statistics plus up to REFERENCE_POINTS quantiles, the reference for `--check`."""
    if scores.size <= REFERENCE_POINTS:
        reference = np.sort(scores)
    else:
        reference = np.quantile(scores, (np.arange(REFERENCE_POINTS) + 0.5) / REFERENCE_POINTS)
    return {
        "n": int(scores.size),
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores)),
        "min": float(np.min(scores)),
        "median": float(np.median(scores)),
        "p99": float(np.quantile(scores, 0.99)),
        "max": float(np.max(scores)),
        "quantiles": [float(value) for value in reference],
    }


def _outlier_warning(outliers: list[tuple[str, float]], median: float, kept: bool) -> str:
    shown = ", ".join(f"{name} ({score:.4g})" for name, score in outliers[:OUTLIERS_NAMED])
    more = f" and {len(outliers) - OUTLIERS_NAMED} more" if len(outliers) > OUTLIERS_NAMED else ""
    if kept:
        what = "were KEPT in the threshold (--keep-outliers), which now sits above them"
        advice = "if one is a damaged image or another product, remove it and recalibrate"
    else:
        what = "were left out of the threshold, so the line will reject parts that look like them"
        advice = (
            "a damaged image, another product or a wrong folder belongs out; "
            "if they are good parts, recalibrate with --keep-outliers"
        )
    return (
        f"{len(outliers)} good image(s) score far above the other good parts (more than {OUTLIER_SPREADS:g} "
        f"spreads above the median {median:.4g}) and {what}: {shown}{more}. Look at them: {advice}."
    )


def _too_few_good(count: int, target_frr: float, confidence: float) -> list[str]:
    needed = samples_needed(target_frr, confidence)
    if count >= needed:
        return []
    best_bound = estimate_rate(0, count, confidence).upper
    return [
        f"{count} good parts cannot show a false-reject rate of {target_frr:.2%} at {confidence:.0%} "
        f"confidence: even with none rejected the bound would be {best_bound:.2%}. "
        f"Score at least {needed} good parts to show that target."
    ]


def _too_few_defects(count: int, target_recall: float, confidence: float) -> list[str]:
    if target_recall >= 1.0:
        return [
            "a recall target of 100% can never be shown from a finite number of defects; "
            "the bound below says how close these defects come"
        ]
    needed = samples_needed(1.0 - target_recall, confidence)
    if count >= needed:
        return []
    return [
        f"{count} defective parts cannot show a recall of {target_recall:.1%} at {confidence:.0%} "
        f"confidence even if all are caught. Add defects until there are at least {needed}."
    ]


def _poor_separation(auroc: float, p_value: float, alpha: float) -> list[str]:
    if p_value < alpha and auroc >= MIN_AUROC:
        return []
    return [
        f"the defect scores are hardly higher than the good scores (AUROC {auroc:.2f}, "
        f"p = {p_value:.2g}): check that the defect folder holds defective parts and that the "
        "defects are visible to the camera; a threshold chosen from these scores is not trustworthy."
    ]
