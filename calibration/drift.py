"""Has the line drifted since calibration? Fresh scores tested against threshold.json's evidence.

Three questions, each a one-sided or two-sample test at the calibration's confidence, with a
Bonferroni split so that a healthy line raises a false alarm at most 1 - confidence of the time:
- do good parts get rejected more often than the calibrated bound allows? (binomial test)
- has the distribution of good scores moved? (two-sample Kolmogorov-Smirnov against the score
  quantiles stored at calibration; a move in either direction means the camera, light or
  product changed, even when it happens to lower the false rejects)
- with defects, and a calibration that measured recall: are fewer caught than its lower bound?
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from calibration.intervals import RateEstimate, estimate_rate
from calibration.methods import check_scores, count_rejected
from runtime.errors import ThresholdError
from runtime.optional import require
from runtime.threshold import ThresholdRecord


@dataclass
class DriftCheck:
    """The verdict and the numbers behind it; `findings` are plain sentences for the technician."""

    drifted: bool
    false_reject: RateEstimate
    recall: RateEstimate | None
    ks_statistic: float
    p_values: dict[str, float]
    alpha: float
    findings: list[str] = field(default_factory=list)


def check_drift(
    record: ThresholdRecord, good_scores: np.ndarray, defect_scores: np.ndarray | None = None
) -> DriftCheck:
    """Test fresh good (and defect) scores against the calibration stored in `record`."""
    stats = require("scipy.stats", "the drift tests")
    good = check_scores(good_scores, "good scores")
    defect = None if defect_scores is None else check_scores(defect_scores, "defect scores")
    try:
        confidence = float(record.targets["confidence"])
        calibrated_frr = float(record.rates["false_reject"]["upper"])
        calibrated_recall = record.rates.get("recall", {}).get("lower")
        reference = np.asarray(record.score_stats["good"]["quantiles"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise ThresholdError(
            f"the threshold record lacks the calibration evidence a drift check needs ({exc!r}): "
            "re-run `daad calibrate` without --check to record it."
        ) from exc

    tests = 2 + int(defect is not None and calibrated_recall is not None)
    alpha = (1.0 - confidence) / tests
    false_reject = estimate_rate(count_rejected(good, record.threshold), good.size, confidence)
    ks = stats.ks_2samp(good, reference)
    p_values = {
        "false_reject": float(stats.binomtest(false_reject.count, good.size, calibrated_frr, "greater").pvalue),
        "good_distribution": float(ks.pvalue),
    }
    recall = None
    if defect is not None:
        recall = estimate_rate(count_rejected(defect, record.threshold), defect.size, confidence)
        if calibrated_recall is not None:
            p_values["recall"] = float(stats.binomtest(recall.count, defect.size, calibrated_recall, "less").pvalue)

    findings = []
    if p_values["false_reject"] < alpha:
        findings.append(
            f"good parts are rejected more often than at calibration: {false_reject.count} of {good.size} "
            f"({false_reject.estimate:.2%}), the calibrated bound was {calibrated_frr:.2%}"
        )
    if p_values["good_distribution"] < alpha:
        before, now = record.score_stats["good"]["median"], float(np.median(good))
        direction = "higher" if now > before else "lower"
        findings.append(
            f"good parts score {direction} than at calibration (median {now:.4g}, was {before:.4g}; "
            f"largest distribution difference {ks.statistic:.0%})"
        )
    if p_values.get("recall", 1.0) < alpha:
        findings.append(
            f"fewer defects are caught than at calibration: {recall.count} of {defect.size} "
            f"({recall.estimate:.1%}), calibration showed at least {calibrated_recall:.1%}"
        )
    return DriftCheck(
        drifted=bool(findings),
        false_reject=false_reject,
        recall=recall,
        ks_statistic=float(ks.statistic),
        p_values=p_values,
        alpha=alpha,
        findings=findings,
    )
