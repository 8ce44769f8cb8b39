"""threshold.json: the per-product threshold, bound to one model, backend and precision.

calibration/ measures and writes it; the camera loop reads it and refuses one that was measured
on another model or precision.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from runtime.atomic import atomic_write_json
from runtime.bundle import THRESHOLD_FILE, Bundle
from runtime.errors import ThresholdError

HISTORY_DIR = "thresholds"


@dataclass
class ThresholdRecord:
    """A calibrated threshold and the evidence behind it."""

    threshold: float
    model_sha256: str
    backend: str
    precision: str
    method: str = "quantile"
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    note: str = ""
    targets: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    rates: dict[str, Any] = field(default_factory=dict)
    score_stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ThresholdRecord":
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})


def read_threshold(bundle: Bundle) -> ThresholdRecord | None:
    """The bundle's threshold, or None when it has not been calibrated yet."""
    path = bundle.threshold_path
    if not path.exists():
        return None
    try:
        record = ThresholdRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
        record.threshold = float(record.threshold)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ThresholdError(f"{path} is corrupt ({exc}): re-run `daad calibrate --bundle {bundle.root}`.") from exc
    return record


def check_binding(record: ThresholdRecord, bundle: Bundle, precision: str, path: Path | None = None) -> None:
    """Refuse a threshold measured on another model or precision; the message names both."""
    where = path or bundle.threshold_path
    if record.model_sha256 != bundle.sha256:
        raise ThresholdError(
            f"{where} was calibrated for model sha256 {record.model_sha256[:12]}…, but this bundle's model.onnx "
            f"is {bundle.sha256[:12]}…: re-run `daad calibrate --bundle {bundle.root}` for this model."
        )
    if record.precision != precision:
        raise ThresholdError(
            f"{where} was calibrated at precision {record.precision}, but this run uses {precision}: "
            f"re-run `daad calibrate --bundle {bundle.root}` with the backend and precision that will run."
        )


def write_threshold(bundle: Bundle, record: ThresholdRecord) -> Path:
    """Write threshold.json atomically and keep a timestamped copy in thresholds/."""
    stamp = record.created.replace(":", "").replace("+0000", "Z").replace("+00:00", "Z")
    history = bundle.root / HISTORY_DIR
    copy = history / f"threshold-{stamp}.json"
    serial = 1
    while copy.exists():  # two calibrations within one timestamp keep both copies
        serial += 1
        copy = history / f"threshold-{stamp}-{serial}.json"
    atomic_write_json(copy, record.to_dict())
    return atomic_write_json(bundle.root / THRESHOLD_FILE, record.to_dict())
