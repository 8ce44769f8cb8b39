"""NG frames on disk, with a cap: the oldest images go first, so an unattended line never fills its disk.

The store counts and removes only images it wrote itself. Each one is recorded in a manifest in
the folder (`.daad-ng.jsonl`, one JSON line per image, appended once the image is written),
so a folder that also holds the user's own files, or another program's, loses none of them, and
the images of earlier runs (recorded in the same manifest) still count against the cap. Names
carry the run id and the frame index, so two runs sharing a folder never overwrite each other.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator

import numpy as np

from runtime.atomic import append_line, atomic_write_bytes, atomic_write_text, remove_orphan_temp_files, writing
from runtime.bundle import METADATA_FILE, MODEL_FILE
from runtime.errors import DaadError
from runtime.line.events import NG
from runtime.optional import cv2
from runtime.line.overlay import render
from runtime.preprocess import PreprocessConfig

if TYPE_CHECKING:
    from runtime.line.loop import Outcome

log = logging.getLogger(__name__)

MANIFEST = ".daad-ng.jsonl"
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+\.png$")  # what the store writes; a manifest line naming anything else is ignored


class NgStore:
    """Writes PNGs into `folder` and keeps the total size of its own images under `max_bytes`."""

    def __init__(self, folder: str | Path, max_bytes: int, in_bundle: bool = False) -> None:
        """`in_bundle`: the folder may lie in a bundle (the console's own review area, BUNDLE/review/pending)."""
        self.folder, self.max_bytes = Path(folder), int(max_bytes)
        self.manifest = self.folder / MANIFEST
        if not in_bundle:
            refuse_bundle(self.folder)
        with writing(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
            remove_orphan_temp_files(self.folder)  # images a kill left half-written (only stale temp files)
            with self._locked_manifest() as handle:
                listed = self._own_files(handle.read())
                # Keep the manifest as long as the images it lists (plus the ones this run adds).
                atomic_write_text(self.manifest, "".join(json.dumps({"file": name, **about}) + "\n"
                                                         for name, (_, about) in listed.items()))
        self._files = deque((name, size) for name, (size, _) in listed.items())
        self.total_bytes = sum(size for _, size in self._files)
        self.saved = self.removed = 0
        self._evict()

    @contextmanager
    def _locked_manifest(self) -> Iterator[IO[str]]:
        """The manifest, opened for appending and locked against the other runs sharing the folder.

        A run that rewrites it (at start) replaces the file under the lock; one that was waiting
        then finds its handle on the old file and opens the new one.
        """
        while True:
            handle = open(self.manifest, "a+", encoding="utf-8", errors="replace")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX)
                if os.fstat(handle.fileno()).st_ino == os.stat(self.manifest).st_ino:
                    handle.seek(0)
                    yield handle
                    return
            except FileNotFoundError:  # replaced and not yet renamed into place: try again
                pass
            finally:
                handle.close()  # also releases the lock

    def _own_files(self, manifest: str) -> dict[str, tuple[int, dict[str, Any]]]:
        """name -> (bytes, what its lines say about it) of the images the manifest lists that still
        exist, oldest first; later lines about an image (`annotate`) add to the earlier ones."""
        files: dict[str, tuple[int, dict[str, Any]]] = {}
        for line in manifest.splitlines():
            try:
                record = json.loads(line)
                name = str(record.pop("file"))
            except (ValueError, TypeError, KeyError, AttributeError):  # a line torn by a kill
                continue
            path = self.folder / name
            if SAFE_NAME.match(name) and path.is_file() and not path.is_symlink():
                files[name] = (path.stat().st_size, {**files.get(name, (0, {}))[1], **record})
        return files

    def entries(self) -> dict[str, dict[str, Any]]:
        """The own images that exist now, oldest first, with what the manifest says about each:
        this run's and those of other runs sharing the folder."""
        with self._locked_manifest() as handle:
            return {name: about for name, (_, about) in self._own_files(handle.read()).items()}

    def annotate(self, name: str, about: dict[str, Any]) -> None:
        """Record more about an own image (a line of its own, appended); its entry merges it in."""
        with self._locked_manifest() as handle:
            append_line(handle, json.dumps({**about, "file": name}))

    def save(self, image: np.ndarray, stem: str, about: dict[str, Any] | None = None) -> Path:
        """Encode `image` as PNG under a safe form of `stem`, then remove the oldest own files over the cap.

        `about` (JSON values) goes into the image's manifest line, for a reader of `entries`.
        """
        cv = cv2()
        ok, encoded = cv.imencode(".png", image)
        if not ok:
            raise DaadError(f"OpenCV could not encode an NG image of shape {image.shape} as PNG")
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", stem) + ".png"
        data = encoded.tobytes()
        path = atomic_write_bytes(self.folder / name, data)
        # Recorded once the image is whole: a run starting meanwhile drops listed images it cannot find
        # (removed ones), so a line must never come before its image. A kill between the two steps
        # leaves one image the store will not count or remove: the safe side.
        with self._locked_manifest() as handle:
            append_line(handle, json.dumps({**(about or {}), "file": name}))
        self._files.append((name, len(data)))
        self.total_bytes += len(data)
        self.saved += 1
        self._evict()
        return path

    def _evict(self) -> None:
        """Remove the oldest own images over the cap; `removed` counts only what this store removed,
        so two runs sharing a folder (both listing an earlier run's images) never count one image twice."""
        while self.total_bytes > self.max_bytes and self._files:
            name, size = self._files.popleft()
            self.total_bytes -= size
            try:
                (self.folder / name).unlink()
            except FileNotFoundError:  # another run sharing the folder removed it first
                continue
            self.removed += 1


def refuse_bundle(folder: Path) -> None:
    """NG images never go into a bundle folder (or below one): its files are not the store's to crowd or remove."""
    for place in (folder, *folder.resolve().parents):
        if (place / METADATA_FILE).is_file() and (place / MODEL_FILE).is_file():
            raise DaadError(f"--save-ng {folder} is inside the bundle {place}: choose a folder outside any bundle.")


class SaveNg:
    """Sink: every NG frame, with its heat map, into an NgStore.

    A full or read-only disk costs the image, not the inspection: the failure is logged and counted.
    """

    def __init__(self, store: NgStore, config: PreprocessConfig, run_id: str) -> None:
        self.store, self.config, self.run_id = store, config, run_id
        self.failed = 0

    def emit(self, outcome: "Outcome") -> None:
        if outcome.verdict != NG:
            return
        image = render(outcome, self.config)
        if image is None:
            return
        origin = str(Path(outcome.frame.name).with_suffix("")) if outcome.frame.name else "frame"
        try:  # unique across runs and processes: the run id (start time + random), then the frame index
            self.store.save(image, f"{self.run_id}_{outcome.frame.index:08d}_{origin}")
        except (OSError, DaadError) as exc:
            self.failed += 1
            log.warning("could not save NG frame %d into %s: %s", outcome.frame.index, self.store.folder, exc)

    @property
    def counts(self) -> dict[str, int]:
        return {"ng_saved": self.store.saved, "ng_removed": self.store.removed, "ng_save_failed": self.failed}

    def close(self) -> None:
        """Nothing to release: every image was written whole when it was saved."""
