"""Metrics against scikit-learn and against small cases worked out by hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from calibration.methods import f1_threshold
from runtime.dataset import Sample
from runtime.line.events import judge
from train.metrics import aupro, evaluate_scores, f1_max, image_auroc, per_defect_auroc, pixel_auroc


def test_image_auroc_matches_scikit_learn_and_a_hand_count() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = rng.normal(size=200) + labels
    assert image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    # 4 (good, defective) pairs, 3 ordered correctly.
    assert image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_pixel_auroc_matches_scikit_learn_and_takes_backend_maps() -> None:
    rng = np.random.default_rng(1)
    masks = rng.random((3, 8, 8)) > 0.8
    maps = rng.random((3, 8, 8)) + masks
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(masks, maps) == pytest.approx(expected)
    assert pixel_auroc(masks, maps[:, None]) == pytest.approx(expected)  # N x 1 x H x W, as backends return


def _two_region_case() -> tuple[np.ndarray, np.ndarray]:
    """Region A = 2 pixels of image 0, region B = 1 pixel of image 1, 7 defect-free pixels.

    Descending thresholds: 0.9 -> PRO 1/4; 0.8 -> 3/4 (B found); 0.7, 0.6 -> FPR 1/7, 2/7;
    0.5 -> PRO 1 (A complete) at FPR 2/7; then only FPR grows.
    Area to FPR 0.3: 3/4 * 2/7 + 1 * (0.3 - 2/7) = 16/70; normalised by 0.3: 16/21.
    Area to FPR 1.0: 3/4 * 2/7 + 1 * 5/7 = 13/14.
    """
    masks = np.array([[[1, 1, 0, 0, 0]], [[0, 0, 0, 1, 0]]], dtype=bool)
    maps = np.array([[[0.9, 0.5, 0.7, 0.2, 0.1]], [[0.3, 0.05, 0.6, 0.8, 0.4]]])
    return masks, maps


def test_aupro_matches_hand_computation() -> None:
    masks, maps = _two_region_case()
    assert aupro(masks, maps) == pytest.approx(16 / 21)
    assert aupro(masks, maps, fpr_limit=1.0) == pytest.approx(13 / 14)


def test_aupro_with_evenly_spaced_thresholds_approximates_the_exact_value() -> None:
    masks, maps = _two_region_case()
    assert aupro(masks, maps, num_thresholds=2000) == pytest.approx(16 / 21, abs=0.01)


def test_aupro_weighs_regions_not_pixels() -> None:
    masks = np.zeros((1, 10, 10), dtype=bool)
    masks[0, :4, :] = True  # a large region of 40 pixels, missed
    masks[0, 8, 8] = True  # a one-pixel region, found
    maps = np.random.default_rng(2).uniform(0.1, 0.5, (1, 10, 10))
    maps[masks] = 0.0
    maps[0, 8, 8] = 1.0
    # The small region alone scores above the normal pixels: PRO 1/2 from FPR 0 to 1.
    assert aupro(masks, maps) == pytest.approx(0.5)
    assert pixel_auroc(masks, maps) == pytest.approx(59 / (41 * 59))  # 1 of 41 defect pixels ranks high


def test_aupro_of_a_perfect_map_is_one() -> None:
    masks, _ = _two_region_case()
    assert aupro(masks, masks.astype(float)) == pytest.approx(1.0)


def test_f1_max_matches_hand_computation() -> None:
    # Rejecting 0.4 and above: 3 of 4 flagged are defective and all 3 defective are flagged: F1 = 6/7.
    # Under the line's rule (score > threshold) the cut sits midway between 0.1 and 0.4.
    labels, scores = [0, 0, 1, 1, 1], [0.1, 0.6, 0.4, 0.7, 0.9]
    f1, threshold = f1_max(labels, scores)
    assert f1 == pytest.approx(6 / 7)
    assert threshold == pytest.approx(0.25)
    assert [judge(score, threshold) for score in scores] == ["OK", "NG", "NG", "NG", "NG"]


def test_f1_threshold_is_the_one_calibration_sets() -> None:
    rng = np.random.default_rng(5)
    good, defect = rng.normal(0, 1, 40), rng.normal(1.5, 1, 15)
    labels = np.r_[np.zeros(40), np.ones(15)].astype(int)
    f1, threshold = f1_max(labels, np.r_[good, defect])
    assert threshold == f1_threshold(good, defect)
    rejected = np.r_[good, defect] > threshold
    true_positives = int(np.sum(rejected & (labels == 1)))
    assert f1 == pytest.approx(2 * true_positives / (rejected.sum() + 15))


def test_per_defect_auroc_scores_each_type_against_all_good() -> None:
    result = per_defect_auroc(["good", "good", "scratch", "hole"], [0.1, 0.5, 0.3, 0.9])
    assert result == {"hole": pytest.approx(1.0), "scratch": pytest.approx(0.5)}


def test_evaluate_scores_from_samples_with_and_without_masks() -> None:
    samples = [Sample(Path(f"{i}.png"), int(i >= 2), "good" if i < 2 else "dent", None) for i in range(4)]
    scores = [0.1, 0.2, 0.3, 0.05]
    masks, maps = _two_region_case()
    masks = np.concatenate([np.zeros_like(masks), masks])
    maps = np.concatenate([maps, maps])
    result = evaluate_scores(samples, None, scores, masks, maps)
    assert result["image_auroc"] == pytest.approx(0.5)
    assert result["per_defect"] == {"dent": pytest.approx(0.5)}
    assert result["aupro"] == pytest.approx(aupro(masks, maps))
    assert result["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    plain = evaluate_scores([0, 0, 1, 1], ["good", "good", "dent", "dent"], scores)
    assert plain["pixel_auroc"] is None and plain["aupro"] is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: image_auroc([0, 1, 1], [0.1, np.nan, np.nan]), "2 NaN"),
        (lambda: image_auroc([1, 1], [0.1, 0.2]), "only defective"),
        (lambda: image_auroc([0, 2], [0.1, 0.2]), "0 \\(good\\) or 1"),
        (lambda: image_auroc([0, 1], [0.1, 0.2, 0.3]), "shape \\(2,\\)"),
        (lambda: f1_max([0, 0], [0.1, 0.2]), "only good"),
        (lambda: pixel_auroc(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 5))), "shape"),
        (lambda: aupro(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4))), "no defect region"),
        (lambda: aupro(*_two_region_case(), fpr_limit=0.0), "fpr_limit"),
        (lambda: per_defect_auroc(["dent", "dent"], [0.1, 0.2]), "no 'good'"),
        (lambda: evaluate_scores([0, 1], None, [0.1, 0.2]), "defects are needed"),
    ],
)
def test_invalid_arguments_say_what_was_wrong(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_metrics_and_synth_import_without_torch() -> None:
    # `daad eval --bundle` and calibration use these on a device where PyTorch is not installed.
    code = "import sys; sys.modules['torch'] = None; import train.metrics, train.synth_cli"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
