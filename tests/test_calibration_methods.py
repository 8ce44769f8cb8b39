"""Threshold methods, confidence bounds and drift tests on hand-made and simulated scores."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.calibrate import CalibrationSettings, calibrate
from calibration.drift import check_drift
from calibration.intervals import estimate_rate, lower_bound, samples_needed, upper_bound
from calibration.methods import count_rejected, f1_threshold, quantile_threshold, recall_threshold
from calibration.outliers import upper_outliers
from calibration.report import calibration_summary, per_thousand
from runtime.errors import ThresholdError
from runtime.threshold import ThresholdRecord

GOOD = np.array([0.1, 0.2, 0.3, 0.4])
DEFECT = np.array([0.35, 0.5, 0.6])


def test_quantile_leaves_target_share_of_good_scores_above() -> None:
    good = np.arange(1, 1001) / 1000
    threshold = quantile_threshold(np.random.default_rng(0).permutation(good), 0.005)
    assert threshold == 0.995
    assert count_rejected(good, threshold) == 5
    assert quantile_threshold(good, 0.0001) == 1.0  # fewer parts than 1/target: nothing may be rejected


def test_quantile_bound_covers_the_true_false_reject_rate() -> None:
    """Scores from Exp(1), whose true false-reject rate above t is exp(-t): the stated 95% bound
    must hold in about 95% of repetitions (exact for order statistics), not in all or few."""
    repetitions, covered, estimate_below_truth = 200, 0, 0
    for seed in range(repetitions):
        good = np.random.default_rng(seed).exponential(size=400)
        result = calibrate(good, None, CalibrationSettings(target_frr=0.01, confidence=0.95))
        true_frr = float(np.exp(-result.threshold))
        covered += true_frr <= result.false_reject.upper
        estimate_below_truth += result.false_reject.estimate < true_frr
    assert 0.90 <= covered / repetitions <= 0.99
    assert estimate_below_truth > repetitions // 4  # the point estimate alone is often optimistic


def test_f1_and_recall_on_hand_made_scores() -> None:
    # Rejecting >= 0.35 gives TP 3, FP 1, FN 0: F1 6/7, the best; the cut sits midway to 0.3.
    assert f1_threshold(GOOD, DEFECT) == pytest.approx(0.325)
    assert recall_threshold(GOOD, DEFECT, 1.0) == pytest.approx(0.325)
    assert recall_threshold(GOOD, DEFECT, 0.6) == pytest.approx(0.45)  # 2 of 3 must be caught
    assert recall_threshold(GOOD, DEFECT, 0.3) == pytest.approx(0.55)
    perfect = f1_threshold(np.array([0.1, 0.2]), np.array([0.8, 0.9]))
    assert perfect == pytest.approx(0.5)
    # The lowest defect below every good score: the cut falls just under it, rejecting all parts.
    below_all = recall_threshold(np.array([0.5, 0.6]), np.array([0.1, 0.9]), 1.0)
    assert below_all < 0.1 and count_rejected(np.array([0.1]), below_all) == 1


def test_f1_and_recall_report_both_rates_with_intervals() -> None:
    result = calibrate(GOOD, DEFECT, CalibrationSettings(method="recall", target_recall=0.6))
    assert (result.false_reject.count, result.false_reject.total) == (0, 4)
    assert (result.recall.count, result.recall.total) == (2, 3)
    assert result.recall.lower < 2 / 3 < result.recall.upper
    assert result.false_reject.upper == pytest.approx(1 - 0.05 ** (1 / 4))
    assert set(result.rates()) == {"false_reject", "recall", "auroc"}


def test_methods_refuse_bad_arguments_with_what_was_wrong() -> None:
    with pytest.raises(ValueError, match="NaN"):
        quantile_threshold(np.array([0.1, np.nan]), 0.01)
    with pytest.raises(ValueError, match="empty"):
        f1_threshold(np.array([]), DEFECT)
    with pytest.raises(ValueError, match="target_recall"):
        recall_threshold(GOOD, DEFECT, 0.0)
    with pytest.raises(ValueError, match="needs defect scores"):
        calibrate(GOOD, None, CalibrationSettings(method="f1"))
    with pytest.raises(ValueError, match="needs a target recall"):
        CalibrationSettings(method="recall")


def test_clopper_pearson_bounds() -> None:
    assert upper_bound(0, 200) == pytest.approx(1 - 0.05 ** (1 / 200))
    assert lower_bound(0, 10) == 0.0 and upper_bound(10, 10) == 1.0
    rate = estimate_rate(4, 1000)
    assert rate.lower < 0.004 < rate.upper
    assert samples_needed(0.001) == 2995  # a 0.1% target needs ~3000 parts...
    assert upper_bound(0, samples_needed(0.001)) <= 0.001 < upper_bound(0, samples_needed(0.001) - 1)


def test_too_few_good_parts_warning_says_how_many_are_needed() -> None:
    good = np.random.default_rng(1).normal(size=200)
    warned = calibrate(good, None, CalibrationSettings(target_frr=0.001)).warnings
    assert len(warned) == 1 and "200 good parts cannot show" in warned[0] and "at least 2995" in warned[0]
    enough = np.random.default_rng(1).normal(size=700)
    assert calibrate(enough, None, CalibrationSettings(target_frr=0.005)).warnings == []


def test_indistinguishable_defects_warn_under_every_method() -> None:
    rng = np.random.default_rng(2)
    good, fake_defect = rng.normal(size=300), rng.normal(size=40)
    for settings in (CalibrationSettings(method="f1"), CalibrationSettings(method="recall", target_recall=0.5),
                     CalibrationSettings(target_frr=0.01)):
        result = calibrate(good, fake_defect, settings)
        assert any("hardly higher than the good scores" in text for text in result.warnings), settings.method
    assert result.recall.estimate < 0.2  # quantile: the threshold is still written, with the warning
    real_defect = rng.normal(4, 1, size=40)
    assert calibrate(good, real_defect, CalibrationSettings(method="f1")).warnings == []
    assert calibrate(good, real_defect, CalibrationSettings(target_frr=0.01)).warnings == []


def test_summary_reads_like_the_issue() -> None:
    result = calibrate(np.arange(1000) / 1000, None, CalibrationSettings(target_frr=0.004))
    first = calibration_summary(result, {"good": 1000, "good_skipped": 2, "good_nan": 1})
    assert first[0].startswith("threshold 0.995 - expect about 4 false rejects per 1000 good parts (95% bound 9")
    assert "2 unreadable or too small images skipped, 1 NaN scores left out" in first[1]
    assert per_thousand(0.0123) == "12" and per_thousand(0.00043) == "0.4" and per_thousand(0.002) == "2"


def _record(good: np.ndarray, defect: np.ndarray | None, settings: CalibrationSettings) -> ThresholdRecord:
    result = calibrate(good, defect, settings)
    return ThresholdRecord(threshold=result.threshold, model_sha256="0" * 64, backend="onnxruntime", precision="fp32",
                           targets=settings.targets(), rates=result.rates(), score_stats=result.score_stats)


def test_drift_check_passes_a_healthy_line_and_flags_shifts() -> None:
    rng = np.random.default_rng(3)
    record = _record(rng.normal(size=1500), rng.normal(4, 1, size=60), CalibrationSettings(target_frr=0.01))
    assert len(record.score_stats["good"]["quantiles"]) == 1000
    false_alarms = sum(check_drift(record, rng.normal(size=300)).drifted for _ in range(100))
    assert false_alarms <= 10  # Bonferroni keeps a healthy line quiet at about 1 - confidence
    higher = check_drift(record, rng.normal(0.5, 1, size=300))
    assert higher.drifted and any("score higher" in text for text in higher.findings)
    lower = check_drift(record, rng.normal(-0.5, 1, size=300))
    assert lower.drifted and any("score lower" in text for text in lower.findings)
    missed = check_drift(record, rng.normal(size=300), rng.normal(1, 1, size=60))
    assert missed.drifted and any("fewer defects" in text for text in missed.findings)


def test_drift_check_refuses_a_record_without_evidence() -> None:
    record = ThresholdRecord(threshold=0.5, model_sha256="0" * 64, backend="onnxruntime", precision="fp32")
    with pytest.raises(ThresholdError, match="re-run `daad calibrate`"):
        check_drift(record, np.ones(10))


def test_outliers_are_far_above_the_skewed_tail_of_good_scores() -> None:
    rng = np.random.default_rng(3)
    for good in (rng.normal(size=100_000), rng.gumbel(size=100_000), rng.lognormal(0, 0.5, 100_000)):
        assert not upper_outliers(good).any()  # the natural tail, however long, is not flagged
        damaged = np.append(good[:300], np.median(good) + 40 * (np.quantile(good, 0.9) - np.median(good)))
        assert np.flatnonzero(upper_outliers(damaged)).tolist() == [300]
    assert not upper_outliers(np.array([1.0] * 8 + [50.0])).any()  # too few to tell
    assert not upper_outliers(np.array([1.0] * 30 + [50.0])).any()  # no spread to measure by
    one_bad = np.append(np.linspace(1.0, 2.0, 100), 77.8)
    result = calibrate(one_bad, None, CalibrationSettings(target_frr=0.01), [f"p{i}.jpg" for i in range(101)])
    assert result.threshold == pytest.approx(1.99, abs=1e-3) and result.good_outliers == [("p100.jpg", 77.8)]
    assert result.false_reject.total == 100 and "p100.jpg (77.8)" in result.warnings[0]
    assert calibrate(one_bad, None, CalibrationSettings(target_frr=0.01, keep_outliers=True)).threshold == 2.0


@pytest.mark.parametrize("kept", [False, True])
def test_calibration_png_draws_outliers_as_their_own_marked_series(kept) -> None:
    from calibration.report import calibration_figure, score_position
    from runtime.score_scale import ScoreScale

    good = np.append(np.random.default_rng(0).normal(1.0, 0.05, 60), [40.0, 500.0])  # two damaged images
    figure = calibration_figure(good, np.array([2.0, 3.0, 2.5]), 1.2, outliers_kept=kept)
    histogram = figure.axes[0]
    bars = {label: sum(patch.get_height() for patch in container.patches)
            for container, label in zip(histogram.containers, ["good", "defect"])}
    assert bars == {"good": 60, "defect": 3}  # the outliers are in no bar
    marked = next(line for line in histogram.get_lines() if "outlier" in str(line.get_label()))
    assert marked.get_label() == f"good outliers, {'kept' if kept else 'left out'} (2)"
    scale = ScoreScale(1.2, float(np.median(good)))
    assert list(marked.get_xdata()) == pytest.approx(list(score_position([40.0, 500.0], scale)))
    assert marked.get_marker() == "^" and histogram.get_xlim()[1] >= score_position(500.0, scale)
    assert any("good outliers" in text.get_text() for text in histogram.get_legend().get_texts())


@pytest.mark.parametrize("defect", [None, np.array([2.0, 3.0, 2.5])])
def test_calibration_png_keeps_a_long_title_whole_and_clear_of_the_axes(defect) -> None:
    """The title `daad calibrate` gives (bundle, method, threshold, backend, time) ran off the left edge of the
    good-only picture, 7 inches wide."""
    from calibration.report import calibration_figure

    title = "bottle-cap-line-3: quantile threshold 0.0634 (onnxruntime fp32, 2026-12-05T06:21:45.962+00:00)"
    good = np.random.default_rng(0).normal(1.0, 0.05, 300)
    figure = calibration_figure(good, defect, 1.2, title)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    said = figure.get_suptitle()
    heading = next(text for text in figure.texts if text.get_text() == said).get_window_extent(renderer)
    assert " ".join(said.split()) == title  # all of it, wrapped at spaces at most
    assert 0 <= heading.x0 and heading.x1 <= figure.bbox.width and heading.y1 <= figure.bbox.height
    for axes in figure.axes:  # the histogram, its readable-score axis on top, the ROC curve
        drawn = axes.get_tightbbox(renderer)
        assert 0 <= drawn.x0 and drawn.x1 <= figure.bbox.width and drawn.y1 <= heading.y0
