"""Good-part scores no good part gives: far above all the others.

A damaged image that still decodes (a corrupt JPEG, a frame of another product) can score any
amount above the real parts. With the quantile method and fewer than 1/target parts the
threshold is the highest good score, so one such image moves the line by that amount - 1.99 to
77.8 was seen - and the line then passes almost every defect. Such scores are found here and
named, so a technician sees them before trusting the threshold.

The rule, one-sided (only high scores move a threshold up): an outlier lies more than
OUTLIER_SPREADS upper spreads above the median, the upper spread being (p90 - median) / 1.2816.
For normal scores that spread is the standard deviation; for the right-skewed scores anomaly
models give it widens with the tail, so the natural tail is not flagged: the largest of
10 million normal or Gumbel-distributed good scores stays below 11 spreads.
"""

from __future__ import annotations

import numpy as np

from calibration.methods import check_scores

OUTLIER_SPREADS = 12.0
MIN_SCORES = 10  # fewer scores cannot show what "far above the others" means
_Z90 = 1.2816  # the 90% quantile of the standard normal


def upper_outliers(scores: np.ndarray) -> np.ndarray:
    """Boolean mask of `scores` that lie far above the rest (see the module docstring)."""
    array = check_scores(scores, "scores")
    if array.size < MIN_SCORES:
        return np.zeros(array.size, dtype=bool)
    median, p90 = np.median(array), np.quantile(array, 0.9)
    spread = (p90 - median) / _Z90
    if spread <= 0:  # most scores equal: no spread to measure "far" by
        return np.zeros(array.size, dtype=bool)
    return array > median + OUTLIER_SPREADS * spread
