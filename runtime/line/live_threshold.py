"""The calibration the loop judges by, changeable while the line runs.

A technician who saves or rolls back a threshold (the web console) must not have to stop the
line; the loop reads the holder once per frame and logs a switch as its own line in the event
log, at the frame it takes effect, so every verdict can be traced to the threshold behind it.
A switch carries the whole calibration, not only the threshold: the readable score and the
heat-map colours are fixed to the calibration's typical good score, and a new threshold with
the old typical good score would mix two calibrations in one picture.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from runtime.bundle import Bundle
from runtime.score_scale import ScoreScale
from runtime.errors import ThresholdError
from runtime.threshold import ThresholdRecord, history_entries, load_record


@dataclass(frozen=True)
class Calibration:
    """What a part is judged by: the threshold on its product's score scale, and where it is filed."""

    scale: ScoreScale
    entry: str | None = None  # the thresholds/ entry (file stem); None for a trial --threshold or an unfiled one

    @property
    def threshold(self) -> float:
        return self.scale.threshold


def in_force(bundle: Bundle, record: ThresholdRecord) -> Calibration:
    """The calibration of the bundle's active threshold.json, `record` as read from it.

    Its id is the newest history entry when that entry holds the same record (runtime.threshold
    files every active threshold there); a threshold.json edited by hand has no entry.
    """
    entries = history_entries(bundle)
    entry = entries[-1].stem if entries and filed_record(entries[-1]) == record else None
    return Calibration(ScoreScale.from_calibration(record.threshold, record.score_stats), entry)


def filed_record(path: Path) -> ThresholdRecord | None:
    """A history entry's record; None when it cannot be read (it then names no calibration)."""
    try:
        return load_record(path, path.parent)
    except ThresholdError:
        return None


@dataclass
class ThresholdSwitch:
    """An event-log line: from `frame` on, verdicts use `threshold` instead of `previous`."""

    threshold: float
    previous: float
    origin: str  # who or what set it, e.g. "console save by anna"
    frame: int  # the first frame judged with the new threshold
    threshold_id: str | None = None  # its thresholds/ entry, as on the frame lines it judges
    typical_good: float = 0.0  # the new calibration's typical good score (readable score 0)
    product: str | None = None  # with --products: the product whose threshold it is
    event: str = "threshold_switch"  # frame lines carry a verdict instead
    run_id: str | None = None  # stamped by the EventLog, as on frame lines
    time: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="milliseconds"))

    def to_json(self) -> str:
        return json.dumps(asdict(self), allow_nan=False)


@dataclass(frozen=True)
class Setting:
    """The calibration in force, who set it, and how many times it was set before (0: at start)."""

    calibration: Calibration
    origin: str
    version: int = 0

    @property
    def value(self) -> float:
        return self.calibration.threshold

    def switch(self, previous: "Setting", frame: int, product: str | None = None) -> ThresholdSwitch:
        """The event line that logs this setting replacing `previous` from `frame` on."""
        return ThresholdSwitch(self.value, previous.value, self.origin, frame, self.calibration.entry,
                               self.calibration.scale.typical_good, product)


class LiveThreshold:
    """A thread-safe calibration: one thread sets it, the loop reads it each frame.

    No check of the value here: judge() makes every frame a FAULT under a threshold that is not a
    finite number. Every `set` is a switch, even to the same value: the log shows each save.
    """

    def __init__(self, calibration: Calibration | float, origin: str) -> None:
        self._lock = threading.Lock()
        self._setting = Setting(as_calibration(calibration), origin)

    def get(self) -> Setting:
        with self._lock:
            return self._setting

    @property
    def value(self) -> float:
        return self.get().value

    def set(self, calibration: Calibration, origin: str) -> None:
        with self._lock:
            self._setting = Setting(calibration, origin, self._setting.version + 1)


def as_calibration(threshold: Calibration | float) -> Calibration:
    """A bare threshold (a trial, a library caller) as a calibration whose typical good score is 0."""
    return threshold if isinstance(threshold, Calibration) else Calibration(ScoreScale(float(threshold)))
