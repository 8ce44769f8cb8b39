"""The events file as the network's spool: what the broker acknowledged is a byte offset beside it.

events.jsonl is append-only and flushed line by line, so it already holds every verdict in
order. A publisher reads it from a cursor (`<events>.published`, written atomically by the
product) and moves the cursor only past lines the broker acknowledged. After an outage, a
restart or a crash it carries on from the cursor: nothing is lost, and a line sent twice
(at-least-once) is the same line, with the same event id. The cursor is saved at most once a
second (a crash repeats at most that second) and on close. An events file deleted or replaced
mid-run (the event log recreates it) is followed: once every line of the old file is
acknowledged, publishing carries on from the start of the new one.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from runtime.atomic import atomic_write_json
from runtime.errors import DaadError

log = logging.getLogger(__name__)

SAVE_EVERY_S = 1.0


@dataclass(frozen=True)
class Cursor:
    """How far the events file was acknowledged: `offset` bytes of the file with inode `inode`."""

    offset: int
    inode: int


def cursor_path(events: Path) -> Path:
    return events.with_name(events.name + ".published")


class Spool:
    """Reads complete lines of an events file from the acknowledged cursor on, in order."""

    def __init__(self, events: str | os.PathLike, clock=time.monotonic) -> None:
        self.events, self.clock = Path(events), clock
        self.path = cursor_path(self.events)
        self.events.touch()  # the event log creates it anyway; the cursor needs its inode now
        stat = self.events.stat()
        cursor = self._read_cursor()
        if cursor is None:  # publishing starts now: earlier runs' lines were never meant for the broker
            cursor = Cursor(stat.st_size, stat.st_ino)
        elif cursor.inode != stat.st_ino or cursor.offset > stat.st_size:
            log.warning("%s was rotated or truncated since %s was saved: publishing it from its start",
                        self.events, self.path)
            cursor = Cursor(0, stat.st_ino)
        self.acknowledged = cursor
        self._handle = open(self.events, "rb")
        self._handle.seek(cursor.offset)
        self._saved_at = -SAVE_EVERY_S
        self.save()
        self._counter: IO[bytes] | None = open(self.events, "rb")  # counts lines as they arrive, from the start cursor on
        self._counter.seek(cursor.offset)
        self._lines = 0
        self._counting = threading.Lock()

    def _read_cursor(self) -> Cursor | None:
        if not self.path.exists():
            return None
        try:
            return Cursor(**json.loads(self.path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:
            raise DaadError(f"{self.path} is not a publish cursor ({exc}): move it away, or publish events "
                            f"to another --events file.") from exc

    def lines(self) -> int:
        """Complete lines in the file after the cursor it started from (read incrementally, any thread)."""
        with self._counting:
            if self._counter is not None:  # after close: the count it closed with
                self._count_to_end()
            return self._lines

    def _count_to_end(self) -> None:
        self._lines += sum(chunk.count(b"\n") for chunk in iter(lambda: self._counter.read(1 << 20), b""))

    def next_line(self) -> tuple[bytes, int] | None:
        """The next complete line and the offset just past it; None until one is complete."""
        start = self._handle.tell()
        line = self._handle.readline()
        if not line.endswith(b"\n"):
            self._handle.seek(start)  # a line being written, or nothing new
            if self.acknowledged.offset >= start:  # the old file is done with: follow a replaced one
                self._follow()
            return None
        return line, self._handle.tell()

    def _follow(self) -> None:
        """The events file was replaced (deleted and recreated by the event log): carry on in the new one.

        The open handles keep the old file's inode taken, so a new file never has the same number."""
        try:
            inode = self.events.stat().st_ino
        except OSError:  # gone and not yet recreated: the event log recreates it at its next line
            return
        if inode == self.acknowledged.inode:
            return
        log.warning("%s was replaced during the run: publishing the new file from its start", self.events)
        replaced, self._handle = self._handle, open(self.events, "rb")
        replaced.close()
        with self._counting:
            self._count_to_end()
            self._counter.close()
            self._counter = open(self.events, "rb")
        self.acknowledged = Cursor(0, inode)
        self.save()

    @property
    def caught_up(self) -> bool:
        """Every complete line in the file is acknowledged."""
        read = self._handle.tell()
        complete = self._handle.readline().endswith(b"\n")
        self._handle.seek(read)
        return self.acknowledged.offset >= read and not complete

    def acknowledge(self, offset: int) -> None:
        self.acknowledged = Cursor(offset, self.acknowledged.inode)
        if self.clock() - self._saved_at >= SAVE_EVERY_S:
            self.save()

    def save(self) -> None:
        atomic_write_json(self.path, asdict(self.acknowledged))
        self._saved_at = self.clock()

    def close(self) -> None:
        self.save()
        self._handle.close()
        self.lines()
        with self._counting:
            self._counter.close()
            self._counter = None
