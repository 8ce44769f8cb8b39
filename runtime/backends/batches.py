"""Score many prepared images through a backend, a batch at a time.

The one loop behind calibration (calibration/scoring.py), export parity (export/parity.py) and
evaluation (train/evaluate.py, so `daad eval` and the results run): whatever scores a set of
images scores it the way the camera loop does, through Backend.infer.
"""

from __future__ import annotations

import numpy as np

from runtime.backends.base import Backend, InferenceResult
from runtime.optional import require


def infer_batches(
    backend: Backend, images: np.ndarray, batch_size: int, progress: bool = False, keep_maps: bool = True
) -> InferenceResult:
    """uint8 N x H x W x C `images` -> all N scores (and anomaly maps), `batch_size` frames per call.

    Scores and maps are concatenated as the backend returned them (NaN kept: callers decide);
    timings are summed per stage. With `keep_maps=False` the maps are dropped batch by batch
    (anomaly_maps is then empty), so scoring thousands of parts holds only their scores.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    starts = range(0, len(images), batch_size)
    if progress:
        starts = require("tqdm", "progress bars").tqdm(starts, desc="scoring", unit="batch", leave=False)
    scores, maps, timings = [], [], {}
    for start in starts:
        result = backend.infer(images[start : start + batch_size])
        scores.append(np.asarray(result.scores, dtype=np.float32).reshape(-1))
        if keep_maps:
            maps.append(np.asarray(result.anomaly_maps, dtype=np.float32))
        for stage, seconds in result.timings.items():
            timings[stage] = timings.get(stage, 0.0) + seconds
    return InferenceResult(
        scores=np.concatenate(scores) if scores else np.empty(0, dtype=np.float32),
        anomaly_maps=np.concatenate(maps) if maps else np.empty((0, 1, 0, 0), dtype=np.float32),
        timings=timings,
    )
