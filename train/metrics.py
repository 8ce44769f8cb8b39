"""Anomaly detection metrics over numpy arrays, as the MVTec AD evaluation defines them.

Torch-free on purpose: calibration/ imports these on a device without PyTorch. Arguments are
validated the way scikit-learn validates them, with messages that say what was wrong, because
a silently wrong AUROC (NaN scores, one class only, misaligned maps) is worse than a crash.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from calibration.methods import best_f1
from runtime.optional import require

GOOD = "good"


def _sklearn_metrics() -> Any:
    return require("sklearn.metrics", "evaluation metrics")


def _labels(labels: Any, name: str = "labels") -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} must be 0 (good) or 1 (defective), got values {np.unique(array)[:10].tolist()}")
    _both_classes(array.astype(bool), name)
    return array.astype(bool)


def _both_classes(positive: np.ndarray, name: str) -> None:
    if positive.all() or not positive.any():
        only = "defective" if positive.any() else "good"
        raise ValueError(f"{name} hold only {only} samples: AUROC needs both good and defective ones")


def _finite(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise ValueError(f"{name} contain {bad} NaN or infinite value(s) out of {array.size}")
    return array


def _scores(scores: Any, count: int) -> np.ndarray:
    array = _finite(scores, "scores")
    if array.shape != (count,):
        raise ValueError(f"scores must have shape ({count},) to match the labels, got {array.shape}")
    return array


def _masks_and_maps(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    """bool N x H x W masks and float N x H x W maps; a backend's N x 1 x H x W maps are accepted."""
    mask_array, map_array = np.asarray(masks), _finite(maps, "anomaly maps")
    if map_array.ndim == 4 and map_array.shape[1] == 1:
        map_array = map_array[:, 0]
    if mask_array.ndim != 3:
        raise ValueError(f"masks must be N x H x W, got shape {mask_array.shape}")
    if map_array.shape != mask_array.shape:
        raise ValueError(f"anomaly maps have shape {map_array.shape} but masks have shape {mask_array.shape}")
    if mask_array.dtype != bool and not np.isin(mask_array, (0, 1)).all():
        raise ValueError("masks must be boolean or 0/1")
    return mask_array.astype(bool), map_array


def image_auroc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve of image scores; labels 1 = defective, higher score = more anomalous."""
    truth = _labels(labels)
    return float(_sklearn_metrics().roc_auc_score(truth, _scores(scores, truth.size)))


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float:
    """ROC AUC over every pixel of every image: masks N x H x W (bool), maps N x H x W."""
    truth, values = _masks_and_maps(masks, maps)
    _both_classes(truth, "masks")
    return float(_sklearn_metrics().roc_auc_score(truth.ravel(), values.ravel()))


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3, num_thresholds: int | None = None) -> float:
    """Area under the per-region-overlap curve up to `fpr_limit`, divided by `fpr_limit`.

    PRO weighs every connected defect region (8-connected, per image) equally, so one large
    stain cannot hide many missed small scratches, as pixel AUROC lets it. The false positive
    rate counts every defect-free pixel of every image. `num_thresholds=None` evaluates at every
    distinct map value (exact); an integer uses that many evenly spaced thresholds (faster).
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    truth, values = _masks_and_maps(masks, maps)
    weights_pro, weights_fpr = _pro_weights(truth)
    order = np.argsort(values, axis=None, kind="stable")
    sorted_values = values.ravel()[order]
    pro_above = _mass_at_or_above(sorted_values, weights_pro.ravel()[order], num_thresholds)
    fpr_above = _mass_at_or_above(sorted_values, weights_fpr.ravel()[order], num_thresholds)
    # Threshold above every value first: nothing flagged, (0, 0) on the curve.
    fpr = np.concatenate(([0.0], fpr_above[::-1]))
    pro = np.concatenate(([0.0], pro_above[::-1]))
    return _area_to(fpr, pro, fpr_limit) / fpr_limit


def _pro_weights(truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel weights whose sums over flagged pixels are the mean region overlap and the FPR."""
    ndimage = require("scipy.ndimage", "connected components for AUPRO")
    pro = np.zeros(truth.shape, dtype=np.float64)
    regions = 0
    for index, mask in enumerate(truth):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
        if count == 0:
            continue
        sizes = np.bincount(labelled.ravel())
        pro[index] = np.where(labelled > 0, 1.0 / sizes[labelled], 0.0)
        regions += count
    normal = ~truth
    if regions == 0:
        raise ValueError("masks contain no defect region: AUPRO needs at least one defective pixel")
    if not normal.any():
        raise ValueError("masks contain no defect-free pixel: AUPRO needs some to measure false positives")
    return pro / regions, normal / float(normal.sum())


def _mass_at_or_above(sorted_values: np.ndarray, sorted_weights: np.ndarray, num_thresholds: int | None) -> np.ndarray:
    """For ascending thresholds, the summed weight of values >= threshold."""
    if num_thresholds is None:
        thresholds = np.unique(sorted_values)
    elif num_thresholds < 2:
        raise ValueError(f"num_thresholds must be at least 2 or None, got {num_thresholds}")
    else:
        thresholds = np.linspace(sorted_values[0], sorted_values[-1], num_thresholds)
    below = np.concatenate(([0.0], np.cumsum(sorted_weights)))
    first_at_or_above = np.searchsorted(sorted_values, thresholds, side="left")
    return below[-1] - below[first_at_or_above]


def _area_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoidal area under a curve with non-decreasing x, cut at x = limit (interpolated)."""
    inside = x <= limit
    x_in, y_in = x[inside], y[inside]
    if x_in[-1] < limit and inside.size > x_in.size:
        after = int(np.argmax(~inside))
        x0, x1, y0, y1 = x[after - 1], x[after], y[after - 1], y[after]
        y_limit = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        x_in, y_in = np.append(x_in, limit), np.append(y_in, y_limit)
    return float(np.sum((x_in[1:] - x_in[:-1]) * (y_in[1:] + y_in[:-1]) / 2.0))


def f1_max(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Best F1 over all thresholds and that threshold, under the line's rule: defective when score > it.

    The sweep is calibration.methods.best_f1, the one calibration's f1 method uses.
    """
    truth = _labels(labels)
    values = _scores(scores, truth.size)
    return best_f1(values[~truth], values[truth])


def per_defect_auroc(defects: Sequence[str], scores: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Image AUROC of each defect type against all good samples."""
    names = np.asarray(defects, dtype=object)
    if names.ndim != 1:
        raise ValueError(f"defects must be a 1-D list of names, got shape {names.shape}")
    values = _scores(scores, names.size)
    good = names == GOOD
    if not good.any():
        raise ValueError(f"defects contain no {GOOD!r} sample: each defect type is scored against the good ones")
    result = {}
    for defect in sorted(set(names.tolist()) - {GOOD}):
        chosen = good | (names == defect)
        result[defect] = image_auroc((names[chosen] == defect).astype(int), values[chosen])
    return result


def evaluate_scores(
    labels: Sequence[Any],
    defects: Sequence[str] | None,
    scores: Sequence[float] | np.ndarray,
    masks: np.ndarray | None = None,
    maps: np.ndarray | None = None,
) -> dict[str, Any]:
    """Every metric of `daad eval` in one dict.

    `labels` is a list of 0/1 labels or of samples (anything with `.label` and `.defect`, such
    as runtime.dataset.Sample), in which case `defects` may be None. Pixel metrics are None when
    no masks/maps are given or the masks hold no defect pixel (defects without ground truth).
    """
    if len(labels) and hasattr(labels[0], "label"):
        defects = [sample.defect for sample in labels] if defects is None else defects
        labels = [sample.label for sample in labels]
    if defects is None:
        raise ValueError("defects are needed when labels are plain numbers: pass the defect name of each sample")
    f1, threshold = f1_max(labels, scores)
    result: dict[str, Any] = {
        "image_auroc": image_auroc(labels, scores),
        "pixel_auroc": None,
        "aupro": None,
        "f1_max": f1,
        "f1_threshold": threshold,
        "per_defect": per_defect_auroc(defects, scores),
    }
    if masks is not None and maps is not None and np.asarray(masks).any():
        result["pixel_auroc"] = pixel_auroc(masks, maps)
        result["aupro"] = aupro(masks, maps)
    return result
