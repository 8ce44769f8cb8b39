"""Atomic writes (temp file + fsync + rename), append-only lines, and what a failed write says.

A crash or kill mid-write leaves either the old file or the new one, never a torn one; what it
can leave is a temp file, named `.<target>.<8 random>.daad.tmp`, which `remove_orphan_temp_files`
recognises by that name (and nothing else) once it is old enough that no writer can own it. The
`.daad` mark is what makes the name the product's own: a user's hidden `.notes.20261201.tmp`
in the same folder has the other parts of the pattern, and is never touched.
A write that fails (no permission, a file where a folder should be, a full disk) raises
`OutputError`: one line naming the path and the fix, never a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from runtime.errors import OutputError

TEMP_SUFFIX = ".daad.tmp"
# mkstemp's names: prefix + 8 characters of [a-z0-9_] + suffix. Only these are ever removed.
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX) + "$")
# A live write renames its temp file within seconds; one this old was left by a killed writer.
STALE_TEMP_S = 600.0

_FIXES = {
    errno.ENOSPC: "the disk is full: free space on it or write somewhere else",
    errno.EDQUOT: "the disk quota is used up: free space or write somewhere else",
    errno.EACCES: "no permission to write there: choose another place or fix the folder's permissions",
    errno.EPERM: "no permission to write there: choose another place or fix the folder's permissions",
    errno.EROFS: "that file system is read-only: choose another place",
    errno.ENOTDIR: "a part of that path is a file, not a folder: choose another path",
    errno.EEXIST: "a part of that path is a file, not a folder: choose another path",
    errno.EISDIR: "that path is a folder: name a file inside it",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
}


def output_error(path: str | os.PathLike, exc: OSError) -> OutputError:
    """The one-line error for a failed write of `path`: what the system said and what to do."""
    fix = _FIXES.get(exc.errno, "check that the folder exists and can be written, or choose another place")
    return OutputError(f"cannot write {path}: {exc.strerror or exc}; {fix}")


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OSError raised while writing `path` into an OutputError naming it."""
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        raise output_error(path, exc) from exc


def check_output_folder(folder: str | os.PathLike) -> Path:
    """Prove that `folder` can be created or written, before any long work starts; create nothing.

    The probe is a temp file in `folder` or, when it does not exist yet, in the nearest folder
    above it that does. A full disk cannot be seen this way (an empty probe fits); that surfaces
    at the write itself, as an OutputError too.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise output_error(folder, NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)))
    with writing(folder):
        fd, probe = tempfile.mkstemp(prefix=".daad-probe.", suffix=TEMP_SUFFIX, dir=existing)
        os.close(fd)
        os.unlink(probe)
    return folder


def check_output_file(path: str | os.PathLike) -> Path:
    """Refuse an output file path that is a folder or whose folder cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise output_error(path, IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR)))
    check_output_folder(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; the parent folder is created if needed."""
    with staged_write(path, data) as target:
        return target


@contextmanager
def staged_write(path: str | os.PathLike, data: bytes) -> Iterator[Path]:
    """Write and sync `data` beside `path` first; rename it onto `path` only when the block ends
    without an error. For a file that belongs to another write: calibration.png is put in place
    only once threshold.json was, and a full disk fails before either."""
    target = Path(path)
    with writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    try:
        with writing(target):
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp_name, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the mode a plain open() would
        yield target
        with writing(target):
            os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def append_line(handle: IO[str], line: str) -> None:
    """Append one line and flush it to the OS, so a kill loses at most the line in flight."""
    handle.write(line.rstrip("\n") + "\n")
    handle.flush()


def remove_orphan_temp_files(folder: str | os.PathLike, older_than_s: float = STALE_TEMP_S) -> list[Path]:
    """Delete the temp files killed atomic writes left directly in `folder`; return what was removed.

    Only names `atomic_write_bytes` makes are touched, only plain files, and only those not
    modified for `older_than_s`, so a write in flight (this or another process) keeps its file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    cutoff = time.time() - older_than_s
    removed = []
    for path in sorted(folder.iterdir()):
        if not is_temp_file_name(path.name) or path.is_symlink() or not path.is_file():
            continue
        try:
            if path.stat().st_mtime > cutoff:
                continue
            path.unlink()
        except OSError:  # gone meanwhile, or not ours to remove: leave it
            continue
        removed.append(path)
    return removed


def is_temp_file_name(name: str) -> bool:
    """Whether `name` is one `atomic_write_bytes` gives its temp files."""
    return _TEMP_NAME.match(name) is not None


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = _read_umask()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
