"""The readable score and the product's one colour mapping (runtime/score_scale.py)."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.report import score_position
from runtime.line.live_threshold import Calibration
from runtime.line.loop import Outcome, Scored
from runtime.line.overlay import blend_heatmap, render
from runtime.line.sources import Frame
from runtime.preprocess import PreprocessConfig
from runtime.score_scale import ScoreScale, colour_map


def test_typical_good_reads_0_the_threshold_50_and_nothing_reaches_100() -> None:
    scale = ScoreScale(threshold=-1.0, typical_good=-1.4)  # standardised scores may be negative
    assert scale.index(-1.4) == 0.0 and scale.index(-1.0) == pytest.approx(50.0)
    assert scale.index(-2.0) == 0.0  # better than typical good: 0, not negative
    far = scale.index([-0.6, 2.6, 3.5e4])  # 2, 10 and ~87500 threshold distances above typical
    assert far[0] == pytest.approx(200 / 3) and far[1] == pytest.approx(1000 / 11) and 99.99 < far[2] < 100.0
    scores = np.linspace(-3, 50, 500)
    assert np.all(np.diff(scale.index(scores)) >= 0)  # monotone: the verdict order never changes
    assert scale.index(np.nan) == 0.0 and scale.readable(-0.6) == 66.7


def test_two_products_on_different_raw_scales_read_alike() -> None:
    small, large = ScoreScale(0.02, 0.01), ScoreScale(4000.0, 1000.0)
    assert small.index(0.01 + 0.01 * 3) == pytest.approx(large.index(1000 + 3000 * 3))
    assert np.array_equal(colour_map(np.array([[0.04]]), small), colour_map(np.array([[10000.0]]), large))


def test_the_calibration_anchors_the_scale_and_a_trial_threshold_falls_back_to_zero() -> None:
    assert ScoreScale.from_calibration(3.0, {"good": {"median": 1.0}}) == ScoreScale(3.0, 1.0)
    assert ScoreScale.from_calibration(3.0, {}) == ScoreScale(3.0, 0.0)
    assert ScoreScale(-5.0, 0.0).span == 1.0  # a trial threshold below typical good still rises


def test_colours_run_from_blue_at_typical_good_through_the_threshold_to_red() -> None:
    scale = ScoreScale(threshold=2.0, typical_good=1.0)
    blue, middle, red = colour_map(np.array([[1.0, 2.0, 1000.0]]), scale)[0]
    assert blue[0] > 100 and blue[2] == 0  # BGR
    assert middle[1] > 200  # mid-map: green-yellow
    assert red[2] > 100 and red[0] == 0


def test_the_overlay_paints_the_same_colour_for_the_same_level_on_any_image_size() -> None:
    scale = ScoreScale(threshold=2.0, typical_good=1.0)
    for height, width in ((24, 24), (30, 75)):
        grey = np.full((height, width, 3), 128, np.uint8)
        blended = blend_heatmap(grey, np.full((8, 16), 2.0, np.float32), scale, alpha=1.0)
        assert np.array_equal(blended[height // 2, width // 2], colour_map(np.array([[2.0]]), scale)[0, 0])


def test_the_calibration_axis_spreads_good_parts_when_defects_span_decades() -> None:
    rng = np.random.default_rng(0)
    good = rng.normal(-1.2, 0.15, 600)
    defect = 10 ** rng.uniform(0, 4.5, 40)
    threshold = float(np.quantile(good, 0.995))
    scale = ScoreScale(threshold, float(np.median(good)))
    everything = np.concatenate([good, defect])
    linear_bins = np.histogram_bin_edges(everything, bins=60)
    asinh_bins = np.histogram_bin_edges(score_position(everything, scale), bins=60)
    assert np.count_nonzero(np.histogram(good, linear_bins)[0]) == 1  # one bar: unreadable
    assert np.count_nonzero(np.histogram(score_position(good, scale), asinh_bins)[0]) >= 8


def test_a_picture_follows_the_threshold_its_frame_was_judged_by() -> None:
    """A technician may switch the threshold while the line runs: the label and colours follow."""
    config = PreprocessConfig(height=16, width=16, channels=3)
    scale = ScoreScale(threshold=2.0, typical_good=1.0)
    frame = Frame(np.full((64, 64, 3), 128, np.uint8), index=7)
    scored = Scored(2.0, np.full((16, 16), 2.0, np.float32))
    at_start, after_switch = (render(Outcome(frame, scored, "NG", Calibration(ScoreScale(threshold, 1.0))), config)
                              for threshold in (2.0, 3.0))
    assert not np.array_equal(at_start[60, 4], after_switch[60, 4])  # the same score, a cooler colour (below the label)
    assert np.array_equal(at_start[60, 4], blend_heatmap(frame.image, scored.anomaly_map, scale)[60, 4])
