"""The threshold the loop judges by, changeable while the line runs.

A technician who saves or rolls back a threshold (the web console) must not have to stop the
line; the loop reads the holder once per frame and logs a switch as its own line in the event
log, at the frame it takes effect, so every verdict can be traced to the threshold behind it.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone


@dataclass
class ThresholdSwitch:
    """An event-log line: from `frame` on, verdicts use `threshold` instead of `previous`."""

    threshold: float
    previous: float
    origin: str  # who or what set it, e.g. "console save by anna"
    frame: int  # the first frame judged with the new threshold
    event: str = "threshold_switch"  # frame lines carry a verdict instead
    run_id: str | None = None  # stamped by the EventLog, as on frame lines
    time: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="milliseconds"))

    def to_json(self) -> str:
        return json.dumps(asdict(self), allow_nan=False)


@dataclass(frozen=True)
class Setting:
    """The threshold in force, who set it, and how many times it was set before (0: at start)."""

    value: float
    origin: str
    version: int = 0


class LiveThreshold:
    """A thread-safe threshold: one thread sets it, the loop reads it each frame.

    No check of the value here: judge() makes every frame a FAULT under a threshold that is not a
    finite number. Every `set` is a switch, even to the same value: the log shows each save.
    """

    def __init__(self, value: float, origin: str) -> None:
        self._lock = threading.Lock()
        self._setting = Setting(float(value), origin)

    def get(self) -> Setting:
        with self._lock:
            return self._setting

    @property
    def value(self) -> float:
        return self.get().value

    def set(self, value: float, origin: str) -> None:
        with self._lock:
            self._setting = Setting(float(value), origin, self._setting.version + 1)
