"""Atomic writes: a failed write is one line naming the path and the fix; orphaned temp files of
killed writers are recognised by name and age, and nothing else is ever removed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.atomic import (
    STALE_TEMP_S,
    atomic_write_bytes,
    check_output_file,
    check_output_folder,
    remove_orphan_temp_files,
)
from runtime.errors import DaadError, OutputError

ROOT = Path(__file__).resolve().parents[1]


def test_a_write_under_a_file_names_the_path_and_the_fix(tmp_path) -> None:
    (tmp_path / "plain-file").write_text("not a folder")
    target = tmp_path / "plain-file" / "out" / "report.json"
    with pytest.raises(OutputError) as caught:
        atomic_write_bytes(target, b"{}")
    message = str(caught.value)
    assert str(target) in message and "is a file, not a folder" in message and "\n" not in message
    assert isinstance(caught.value, DaadError) and isinstance(caught.value, OSError)
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_folder(tmp_path / "plain-file" / "run")
    with pytest.raises(OutputError, match="that path is a folder"):
        check_output_file(tmp_path)
    assert check_output_file(tmp_path / "new" / "bench.json") == tmp_path / "new" / "bench.json"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["plain-file"]  # a check creates nothing


def test_a_full_disk_keeps_the_old_file_and_says_so(small_disk) -> None:
    target = small_disk / "threshold.json"
    atomic_write_bytes(target, b"old")
    small_disk.fill()
    with pytest.raises(OutputError, match="the disk is full"):
        atomic_write_bytes(target, b"x" * 200_000)
    assert target.read_bytes() == b"old" and sorted(p.name for p in small_disk.iterdir()) == [".filler", "threshold.json"]


KILLED_WRITER = """
import os, sys
from runtime.atomic import atomic_write_bytes
os.fsync = lambda fd: os.kill(os.getpid(), 9)  # die with the temp file written, before the rename
atomic_write_bytes(sys.argv[1], b"new" * 1000)
"""


def test_orphans_of_killed_writes_are_removed_once_stale_and_nothing_else(tmp_path) -> None:
    target = tmp_path / "threshold.json"
    target.write_text("old")
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], cwd=ROOT)
    assert killed.returncode == -signal.SIGKILL
    orphans = [p for p in tmp_path.iterdir() if p.name.startswith(".threshold.json.")]
    assert len(orphans) == 1 and orphans[0].name.endswith(".daad.tmp") and target.read_text() == "old"
    users = ["notes.tmp", ".notes.tmp", ".my.draft.tmp", "image.png.abcdefgh.tmp", ".notes.20261201.tmp",
             ".image.png.abcdefgh.tmp"]  # hidden, 8 characters before .tmp: the shape of a temp name, not its mark
    for name in users:
        (tmp_path / name).write_text("the user's")

    assert remove_orphan_temp_files(tmp_path) == []  # fresh: it could be a write still in flight
    old = time.time() - STALE_TEMP_S - 1
    for path in tmp_path.iterdir():
        os.utime(path, (old, old))
    assert remove_orphan_temp_files(tmp_path) == orphans
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*users, "threshold.json"])
