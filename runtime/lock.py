"""One writer at a time: a lock file that names its holder, released by the kernel if it dies.

The lock is `flock` on the file, so a holder killed with SIGKILL or a power cut never leaves a
lock that blocks the next run; the pid, host and start time written into the file only serve
to tell the user who holds it, or whose run died holding it (the next holder takes over and
says so). The file is removed on a clean release.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from runtime.atomic import writing
from runtime.errors import DaadError


class LockedError(DaadError):
    """Another process holds the lock: the message names it and says to wait."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) a lock: enough to find the process, or to tell that it is gone."""

    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)
    started: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}"


POLL_S = 0.1  # how often a waiting process tries the lock again


@contextmanager
def exclusive(path: str | os.PathLike, what: str, wait_s: float = 0.0,
              waiting: Callable[[LockHolder | None], None] | None = None) -> Iterator[LockHolder | None]:
    """Hold `path` exclusively while `what` runs; yield the holder that died holding it, or None.

    When another process holds it, waits up to `wait_s` seconds for it (telling `waiting` once,
    with the holder, so the wait is never silent), then refuses (LockedError). The default is
    to refuse at once: a second calibration should not sit behind the first unless asked to.
    """
    path = Path(path)
    fd = _acquire(path, what, wait_s, waiting)
    try:
        previous = _read_holder(fd)
        with writing(path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(asdict(LockHolder())).encode(), 0)
        yield previous
    finally:
        path.unlink(missing_ok=True)  # while still held: a waiter that opened it retries on the new file
        os.close(fd)


def _acquire(path: Path, what: str, wait_s: float, waiting: Callable[[LockHolder | None], None] | None) -> int:
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        with writing(path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            left = deadline - time.monotonic()
            if left <= 0:
                who = f" ({holder})" if holder else ""
                if wait_s:
                    raise LockedError(f"{path}: another {what} is still running after {wait_s:g} s of waiting{who}: "
                                      "wait longer, or until it has finished")
                raise LockedError(f"{path}: another {what} is running{who}: wait until it has finished, then run again")
            if waiting is not None and not told:
                waiting(holder)
                told = True
            time.sleep(min(POLL_S, left))
            continue
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            return fd
        os.close(fd)  # the holder released and removed it between our open and our lock: take the new one


def _read_holder(fd: int) -> LockHolder | None:
    try:
        return LockHolder(**json.loads(os.pread(fd, 4096, 0)))
    except (OSError, ValueError, TypeError):
        return None
