"""The NG store counts and removes only the images it wrote, in this run or an earlier one of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_bundle import grey_frame

from runtime.errors import DaadError
from runtime.line.ng_store import MANIFEST, NgStore

ROOT = Path(__file__).resolve().parents[1]


def user_images(folder: Path, count: int) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        (folder / f"photo_{index:02d}.png").write_bytes(b"the user's own image %d" % index)
    (folder / "notes.txt").write_text("keep me")
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def test_a_folder_of_the_users_images_loses_nothing_and_does_not_count(tmp_path) -> None:
    folder = tmp_path / "ng"
    before = user_images(folder, 40)
    store = NgStore(folder, max_bytes=1)  # a cap every image exceeds
    assert store.total_bytes == 0 and store.removed == 0
    store.save(grey_frame(16, 16), "run1_00000001_a")
    store.save(grey_frame(16, 16), "run1_00000002_b")
    assert store.saved == 2 and store.removed == 2
    assert {path.name: path.read_bytes() for path in folder.iterdir() if path.name != MANIFEST} == before


def test_an_earlier_runs_images_count_and_go_first_the_users_never(tmp_path) -> None:
    folder = tmp_path / "ng"
    before = user_images(folder, 3)
    first = NgStore(folder, max_bytes=10**9)
    old = [first.save(grey_frame(16, 16), f"run1_{index:08d}_x") for index in range(3)]
    size = old[0].stat().st_size
    second = NgStore(folder, max_bytes=2 * size + size // 2)  # room for two of its own
    assert second.total_bytes == 2 * size and second.removed == 1 and not old[0].exists()
    second.save(grey_frame(16, 16), "run2_00000000_x")
    assert not old[1].exists() and old[2].exists() and (folder / "run2_00000000_x.png").exists()
    assert all((folder / name).read_bytes() == data for name, data in before.items())


def test_a_manifest_naming_other_files_deletes_nothing_of_theirs(tmp_path) -> None:
    folder = tmp_path / "ng"
    before = user_images(folder, 2)
    (tmp_path / "outside.png").write_bytes(b"x" * 100)
    (folder / MANIFEST).write_text('{"file": "../outside.png"}\n{"file": "notes.txt"}\n{"torn\n'
                                   '{"file": "photo_00.png"}\n')
    store = NgStore(folder, max_bytes=1)
    # photo_00.png is named by the manifest, so it is trusted as one of ours; paths out and non-PNGs never are.
    assert (tmp_path / "outside.png").exists() and (folder / "notes.txt").exists() and store.removed == 1
    assert (folder / "photo_01.png").read_bytes() == before["photo_01.png"]


def test_two_processes_sharing_one_folder_never_overwrite_each_other(tmp_path) -> None:
    folder = tmp_path / "ng"
    script = ("import sys; sys.path.insert(0, 'tests'); from tiny_bundle import grey_frame;"
              "from runtime.line.ng_store import NgStore; from runtime.line.events import new_run_id;"
              "store = NgStore(sys.argv[1], 10**9); run = new_run_id();"
              "[store.save(grey_frame(8, 8), f'{run}_{i:08d}_frame') for i in range(60)]")
    processes = [subprocess.Popen([sys.executable, "-c", script, str(folder)], cwd=ROOT) for _ in range(2)]
    assert [process.wait(timeout=120) for process in processes] == [0, 0]
    assert len(list(folder.glob("*.png"))) == 120
    assert NgStore(folder, 10**9).total_bytes == sum(path.stat().st_size for path in folder.glob("*.png"))


def test_save_ng_into_a_bundle_or_an_unwritable_folder_is_refused(tiny_bundle, tmp_path) -> None:
    for place in (tiny_bundle, tiny_bundle / "ng"):
        with pytest.raises(DaadError, match="inside the bundle"):
            NgStore(place, 10**9)
    assert not (tiny_bundle / "ng").exists() and not (tiny_bundle / MANIFEST).exists()
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: permissions do not bind")
        with pytest.raises(DaadError, match="cannot write .*locked/ng"):
            NgStore(locked / "ng", 10**9)
    finally:
        os.chmod(locked, 0o700)


def test_two_runs_sharing_a_folder_count_each_removed_image_once(tmp_path) -> None:
    folder = tmp_path / "ng"
    earlier = NgStore(folder, max_bytes=10**9)
    for index in range(4):
        earlier.save(grey_frame(16, 16, blob=index * 60), f"run0_{index:08d}_a")
    size = max(path.stat().st_size for path in folder.glob("*.png"))
    first, second = NgStore(folder, max_bytes=3 * size), NgStore(folder, max_bytes=3 * size)  # both list run0's 4
    for index in range(3):
        first.save(grey_frame(16, 16, blob=200 + index), f"run1_{index:08d}_a")
        second.save(grey_frame(16, 16, blob=210 + index), f"run2_{index:08d}_a")
    gone = 4 + 6 - len(list(folder.glob("*.png")))
    assert first.removed + second.removed == gone and gone >= 4


def test_the_users_hidden_tmp_files_stay_and_only_the_stores_own_orphans_go(tmp_path) -> None:
    folder = tmp_path / "ng"
    folder.mkdir()
    users = [".holiday.abcdefgh.tmp", ".notes.20261201.tmp", ".photo.png.k1ll3d_x.tmp"]
    orphan = folder / ".run1_00000001_a.png.k1ll3d_x.daad.tmp"  # as a kill mid-write leaves one
    for path in [folder / name for name in users] + [orphan]:
        path.write_text("x")
        os.utime(path, (0, 0))  # long stale
    NgStore(folder, max_bytes=10**9)
    assert sorted(path.name for path in folder.iterdir() if path.name != MANIFEST) == sorted(users)
