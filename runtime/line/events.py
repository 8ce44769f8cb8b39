"""The verdict on each frame and the append-only JSON-lines log of them.

One line per processed frame, written and flushed as it happens, so a line-side MES can tail
the file and a kill loses at most the line in flight. A score that is not a finite number is a
FAULT, never OK: a broken model must not pass parts. A file deleted or replaced under a running
log (a careless `rm`, a rotation without copytruncate) is noticed at the next line: said, counted
(`events_lost`: the lines of this run it held) and recreated, so the record and the MQTT spool go on.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import secrets
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from runtime.atomic import append_line, output_error, writing

log = logging.getLogger(__name__)

OK, NG, FAULT = "OK", "NG", "FAULT"
# Why a frame is a FAULT, as counted in the summary, the metrics and each FAULT line (`fault_cause`);
# `fault` gives the detail.
BAD_FRAME, INFERENCE_FAILED, SCORE_NOT_FINITE, THRESHOLD_NOT_FINITE = (
    "bad_frame", "inference_failed", "score_not_finite", "threshold_not_finite")
FAULT_CAUSES = (BAD_FRAME, INFERENCE_FAILED, SCORE_NOT_FINITE, THRESHOLD_NOT_FINITE)
STAGES = ("capture", "queue", "preprocess", "infer", "postprocess", "total")


def new_run_id() -> str:
    """A run's id: its UTC start and a random suffix, so (run_id, frame) names an event across restarts."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def judge(score: float, threshold: float) -> str:
    """NG when the score is above the threshold; FAULT when the score or the threshold is NaN or infinite."""
    if not (math.isfinite(score) and math.isfinite(threshold)):
        return FAULT
    return NG if score > threshold else OK


@dataclass
class FrameEvent:
    """One line of the event log."""

    frame: int  # index in the stream (gaps are frames dropped in realtime mode)
    verdict: str  # OK, NG or FAULT
    score: float | None  # None when there was no (finite) score
    threshold: float
    source: str
    index: float | None = None  # the readable score, 0 typical good .. 50 threshold .. <100 (runtime.score_scale)
    threshold_id: str | None = None  # the thresholds/ entry that judged it (None: a trial or unfiled threshold)
    product: str | None = None  # the product that judged it, with --products (None: a run of one --bundle)
    file: str | None = None  # the image file, for folder and glob sources
    fault: str | None = None  # why a FAULT happened
    fault_cause: str | None = None  # one of FAULT_CAUSES
    latency_ms: dict[str, float] = field(default_factory=dict)  # per stage, see STAGES
    run_id: str | None = None  # the run that judged it; (run_id, frame) identifies the event
    time: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="milliseconds"))

    def to_json(self) -> str:
        # A shallow dict, not dataclasses.asdict: its deep copy was the loop's largest own cost.
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name in ("score", "threshold", "index"):  # JSON has no NaN or infinity; the fault says what it was
            if data[name] is not None and not math.isfinite(data[name]):
                data[name] = None
        data["latency_ms"] = {stage: round(ms, 3) for stage, ms in self.latency_ms.items()}
        return json.dumps(data, allow_nan=False)


def last_product(path: Path | None, tail_bytes: int = 1 << 16) -> str | None:
    """The product the last line naming one in an events file names; None without a file or such a line.

    A restarted `daad run --products` resumes the product the line was on. Only the file's tail is
    read; a line torn by a kill (or cut by where the tail starts) is passed over.
    """
    if path is None or not path.is_file():
        return None
    with open(path, "rb") as handle:
        handle.seek(max(0, handle.seek(0, os.SEEK_END) - tail_bytes))
        lines = handle.read().splitlines()
    for raw in reversed(lines):
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        if isinstance(event, dict) and "product" in event:
            return event["product"] if isinstance(event["product"], str) else None
    return None


class EventLog:
    """Appends FrameEvents to a .jsonl file (or nowhere, when no path is given), stamped with the run's id."""

    def __init__(self, path: str | os.PathLike | None, run_id: str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.run_id = run_id
        self._handle: IO[str] | None = None
        self._file: tuple[int, int] | None = None  # (device, inode) of a regular file being appended to
        self.written = self.lost = 0
        self._in_file = 0  # lines this run wrote into the file the path names now
        self.warning: str | None = None  # what was lost, for the summary
        if self.path is not None:
            self._open()

    def _open(self) -> None:
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")
            status = os.fstat(self._handle.fileno())
        self._file = (status.st_dev, status.st_ino) if stat.S_ISREG(status.st_mode) else None  # not a pipe
        self._in_file = 0

    def write(self, event: FrameEvent) -> None:
        event.run_id = self.run_id
        if self._handle is not None:
            self._still_there()
            try:
                append_line(self._handle, event.to_json())
            except OSError as exc:  # disk full, file system gone: the run ends, its summary says how far it got
                raise output_error(self.path, exc) from exc
            self._in_file += 1
        self.written += 1

    def _still_there(self) -> None:
        """Recreate the file when its path no longer names the file being appended to, and say what went."""
        if self._file is None:
            return
        try:
            status = os.stat(self.path)
            there = (status.st_dev, status.st_ino) == self._file
        except OSError:
            there = False
        if there:
            return
        self.lost += self._in_file
        self.warning = (f"{self.path} was deleted or replaced during the run: the {self.lost} event line(s) this run "
                        f"had written there are gone from it (and whatever earlier runs had written); it was "
                        f"recreated and every later line is in it")
        log.warning("%s", self.warning)
        self._handle.close()
        self._open()

    def close(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            with writing(self.path):
                try:
                    os.fsync(handle.fileno())
                except OSError as exc:
                    if exc.errno != errno.EINVAL:  # a pipe or terminal (/dev/stdout) has nothing to sync
                        raise
                finally:
                    handle.close()

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
