"""What the technician sees: calibration.png and a few plain sentences, no statistics jargon."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from calibration.calibrate import Calibration
from calibration.drift import DriftCheck
from calibration.intervals import RateEstimate
from calibration.outliers import upper_outliers
from runtime.optional import require
from runtime.score_scale import ScoreScale


def per_thousand(rate: float) -> str:
    """0.0043 -> "4.3", 0.012 -> "12": parts per 1000, as a technician would say it."""
    value = rate * 1000
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}".removesuffix(".0")


def false_reject_sentence(rate: RateEstimate) -> str:
    return (
        f"expect about {per_thousand(rate.estimate)} false rejects per 1000 good parts "
        f"({rate.confidence:.0%} bound {per_thousand(rate.upper)})"
    )


def recall_sentence(rate: RateEstimate) -> str:
    return (
        f"catches {rate.count} of {rate.total} known defects ({rate.estimate:.0%}; "
        f"{rate.confidence:.0%} sure it catches at least {rate.lower:.0%} of such defects)"
    )


def calibration_summary(result: Calibration, counts: dict[str, int]) -> list[str]:
    """The lines `daad calibrate` prints: threshold, what to expect, what was left out, warnings."""
    lines = [f"threshold {result.threshold:.4g} - {false_reject_sentence(result.false_reject)}"]
    if result.recall is not None:
        lines.append(f"  {recall_sentence(result.recall)}")
    for kind in ("good", "defect"):
        if kind in counts:
            lines.append(f"  {_counted(kind, counts, result.settings.keep_outliers)}")
    lines += [f"warning: {text}" for text in result.warnings]
    return lines


def drift_summary(check: DriftCheck, threshold: float) -> list[str]:
    """The lines `daad calibrate --check` prints."""
    verdict = "DRIFTED - recalibrate or find the cause" if check.drifted else "ok - no drift found"
    lines = [f"threshold {threshold:.4g}: {verdict}"]
    lines.append(
        f"  {check.false_reject.count} of {check.false_reject.total} good parts rejected "
        f"({per_thousand(check.false_reject.estimate)} per 1000)"
    )
    if check.recall is not None:
        lines.append(f"  {recall_sentence(check.recall)}")
    lines += [f"  - {text}" for text in check.findings]
    return lines


def _counted(kind: str, counts: dict[str, int], outliers_kept: bool = False) -> str:
    text = f"scored {counts[kind]} {kind} parts"
    notes = []
    if counts.get(f"{kind}_skipped"):
        notes.append(f"{counts[f'{kind}_skipped']} unreadable or too small images skipped")
    if counts.get(f"{kind}_nan"):
        notes.append(f"{counts[f'{kind}_nan']} NaN scores left out")
    if counts.get(f"{kind}_grey"):
        notes.append(f"{counts[f'{kind}_grey']} grey images in a colour model")
    if counts.get(f"{kind}_outliers"):
        notes.append(f"{counts[f'{kind}_outliers']} outlier(s) {'kept' if outliers_kept else 'left out'}")
    return text + (f" ({', '.join(notes)})" if notes else "")


def calibration_plot(good: np.ndarray, defect: np.ndarray | None, threshold: float, title: str = "",
                     outliers_kept: bool = False) -> bytes:
    """calibration.png: `calibration_figure` as PNG."""
    buffer = io.BytesIO()
    calibration_figure(good, defect, threshold, title, outliers_kept).savefig(buffer, format="png")
    return buffer.getvalue()


def calibration_figure(good: np.ndarray, defect: np.ndarray | None, threshold: float, title: str = "",
                       outliers_kept: bool = False):
    """The score histograms with the threshold line, and the ROC curve when defects were given.

    The score axis is asinh((score - typical good) / (threshold - typical good)): linear from
    the typical good part to the threshold, logarithmic beyond, so defects that score decades
    above the threshold do not squeeze every good part into one bar. Bottom ticks are raw
    scores; the top axis reads the product's readable score (runtime.score_scale). Good parts
    the outlier rule flags (calibration/outliers.py) are not in the green bars, where one of them
    would look like a good part: they are a series of their own, marked on the axis and named
    in the legend as kept or left out.
    """
    require("matplotlib", "calibration.png")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scale = ScoreScale(threshold, float(np.median(good)))
    flagged = upper_outliers(good)
    usual, outliers = good[~flagged], good[flagged]
    figure = Figure(figsize=(11 if defect is not None else 7, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2 if defect is not None else 1, squeeze=False)[0]
    everything = usual if defect is None else np.concatenate([usual, defect])
    bins = np.histogram_bin_edges(score_position(np.append(everything, threshold), scale),
                                  bins=min(60, max(10, everything.size // 5)))  # fmt: skip
    histogram = axes[0]
    histogram.hist(score_position(usual, scale), bins=bins, color="tab:green", alpha=0.6, label=f"good ({usual.size})")
    if defect is not None:
        histogram.hist(score_position(defect, scale), bins=bins, color="tab:red", alpha=0.6, label=f"defect ({defect.size})")
    if outliers.size:
        histogram.plot(score_position(outliers, scale), np.zeros(outliers.size), linestyle="none", marker="^",
                       markersize=10, color="darkorange", markeredgecolor="black", clip_on=False,
                       label=f"good outliers, {'kept' if outliers_kept else 'left out'} ({outliers.size})")
    histogram.axvline(score_position(threshold, scale), color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    histogram.set_ylabel("parts")
    histogram.legend()
    _score_ticks(histogram, scale)
    if defect is not None:
        _plot_roc(axes[1], good if outliers_kept else usual, defect, threshold)  # the parts the rates are of
    if title:
        figure.suptitle(title, wrap=True)
    return figure


def score_position(scores: Any, scale: ScoreScale) -> np.ndarray:
    """Where scores sit on calibration.png's axis: asinh of their distance from typical good in
    typical-good-to-threshold units (the threshold at asinh(1), defects decades away still near)."""
    return np.arcsinh((np.asarray(scores, dtype=np.float64) - scale.typical_good) / scale.span)


def _score_ticks(axis, scale: ScoreScale) -> None:
    """Bottom: raw scores at 0, 1, +-10, +-100... threshold distances from typical good (the
    axis is asinh of that distance); top: the readable score 0, 50, 75, 90, 99 at theirs."""
    low, high = axis.get_xlim()
    decades = np.concatenate([-(10.0 ** np.arange(1, 8)), [0.0], 10.0 ** np.arange(8)])
    at = np.arcsinh(decades)
    inside = (at >= low) & (at <= high)
    axis.set_xticks(at[inside], [f"{scale.typical_good + d * scale.span:.3g}" for d in decades[inside]])
    axis.set_xlabel("anomaly score (asinh axis; parts right of the dashed line are rejected)")
    marks = np.array([0.0, 50.0, 75.0, 90.0, 99.0])
    at = np.arcsinh(marks / (100.0 - marks))  # level = index / (100 - index)
    inside = (at >= low) & (at <= high)
    top = axis.twiny()
    top.set_xlim(low, high)
    top.set_xticks(at[inside], [f"{mark:g}" for mark in marks[inside]])
    top.set_xlabel("readable score (typical good part 0, threshold 50)", fontsize=9)


def _plot_roc(axis, good: np.ndarray, defect: np.ndarray, threshold: float) -> None:
    metrics = require("sklearn.metrics", "the ROC curve")
    labels = np.concatenate([np.zeros(good.size), np.ones(defect.size)])
    false_reject, recall, _ = metrics.roc_curve(labels, np.concatenate([good, defect]))
    auroc = metrics.auc(false_reject, recall)
    axis.plot(false_reject, recall, color="tab:blue", label=f"ROC (AUROC {auroc:.3f})")
    axis.plot(
        [np.mean(good > threshold)], [np.mean(defect > threshold)], "ko", label="at the threshold"
    )
    axis.set_xlabel("false-reject rate (good parts rejected)")
    axis.set_ylabel("recall (defects caught)")
    axis.set_xlim(-0.02, 1.02)
    axis.set_ylim(-0.02, 1.02)
    axis.legend(loc="lower right")
