"""Turn a calibration into the bundle's threshold: the record, calibration.png, threshold.json.

`daad calibrate` and the web console both save through here, so a threshold set from a browser
carries the same evidence, binding and history as one set from the command line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from calibration.calibrate import Calibration
from calibration.report import calibration_plot
from calibration.scoring import ScoredParts
from runtime.atomic import staged_write
from runtime.bundle import Bundle
from runtime.threshold import ThresholdRecord, write_threshold

PLOT_FILE = "calibration.png"


@dataclass
class Saved:
    record: ThresholdRecord
    threshold_path: Path
    plot_path: Path


def part_counts(result: Calibration, good: ScoredParts, defect: ScoredParts | None) -> dict:
    """What the threshold rests on: parts scored, skipped, NaN and outliers, per kind."""
    counts = good.counts("good") | ({} if defect is None else defect.counts("defect"))
    counts["good_outliers"] = len(result.good_outliers)
    return counts


def threshold_record(bundle: Bundle, result: Calibration, counts: dict, backend: str, precision: str,
                     note: str = "", saved_by: str = "") -> ThresholdRecord:
    """The record of `result`, bound to this bundle's model and the backend/precision it was scored on."""
    return ThresholdRecord(
        threshold=result.threshold,
        model_sha256=bundle.sha256,
        backend=backend,
        precision=precision,
        method=result.settings.method,
        note=note,
        saved_by=saved_by,
        targets=result.settings.targets(),
        counts=counts,
        rates=result.rates(),
        score_stats=result.score_stats,
        created=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
    )


def save_calibration(bundle: Bundle, record: ThresholdRecord, good: np.ndarray, defect: np.ndarray | None) -> Saved:
    """Replace threshold.json atomically (and file it in history), and calibration.png with it.

    The picture is drawn and written to disk first, but put in place only once threshold.json
    is: a calibration that fails (a refused threshold, a full disk) leaves both files as they were.
    Call under runtime.threshold.threshold_lock, as write_threshold asks.
    """
    title = (
        f"{bundle.root.name}: {record.method} threshold {record.threshold:.4g} "
        f"({record.backend} {record.precision}, {record.created})"
    )
    picture = calibration_plot(good, defect, record.threshold, title, record.targets.get("good_outliers") == "kept")
    with staged_write(bundle.root / PLOT_FILE, picture) as plot:
        written = write_threshold(bundle, record)
    return Saved(record, written, plot)
