"""NG frames on disk, with a cap: the oldest images go first, so an unattended line never fills its disk."""

from __future__ import annotations

import logging
import re
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from runtime.atomic import atomic_write_bytes
from runtime.errors import DaadError
from runtime.line.events import NG
from runtime.optional import cv2
from runtime.line.overlay import render
from runtime.preprocess import PreprocessConfig

if TYPE_CHECKING:
    from runtime.line.loop import Outcome

log = logging.getLogger(__name__)


class NgStore:
    """Writes PNGs into `folder` and keeps their total size under `max_bytes`."""

    def __init__(self, folder: str | Path, max_bytes: int) -> None:
        self.folder, self.max_bytes = Path(folder), int(max_bytes)
        self.folder.mkdir(parents=True, exist_ok=True)
        # Files of earlier runs count against the cap too, oldest first.
        existing = sorted(self.folder.glob("*.png"), key=lambda path: (path.stat().st_mtime, path.name))
        self._files: deque[tuple[Path, int]] = deque((path, path.stat().st_size) for path in existing)
        self.total_bytes = sum(size for _, size in self._files)
        self.saved = self.removed = 0
        self._evict()

    def save(self, image: np.ndarray, stem: str) -> Path:
        """Encode `image` as PNG under a safe form of `stem`, then remove the oldest files over the cap."""
        cv = cv2()
        ok, encoded = cv.imencode(".png", image)
        if not ok:
            raise DaadError(f"OpenCV could not encode an NG image of shape {image.shape} as PNG")
        path = self.folder / (re.sub(r"[^A-Za-z0-9._-]+", "_", stem) + ".png")
        data = encoded.tobytes()
        atomic_write_bytes(path, data)
        self._files.append((path, len(data)))
        self.total_bytes += len(data)
        self.saved += 1
        self._evict()
        return path

    def _evict(self) -> None:
        while self.total_bytes > self.max_bytes and self._files:
            path, size = self._files.popleft()
            path.unlink(missing_ok=True)
            self.total_bytes -= size
            self.removed += 1


class SaveNg:
    """Sink: every NG frame, with its heat map, into an NgStore.

    A full or read-only disk costs the image, not the inspection: the failure is logged and counted.
    """

    def __init__(self, store: NgStore, config: PreprocessConfig, scale: float) -> None:
        self.store, self.config, self.scale = store, config, scale
        self.failed = 0

    def emit(self, outcome: "Outcome") -> None:
        if outcome.verdict != NG:
            return
        image = render(outcome, self.config, self.scale)
        if image is None:
            return
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        origin = Path(outcome.frame.name).stem if outcome.frame.name else "frame"
        try:
            self.store.save(image, f"{stamp}_{outcome.frame.index:08d}_{origin}")
        except (OSError, DaadError) as exc:
            self.failed += 1
            log.warning("could not save NG frame %d into %s: %s", outcome.frame.index, self.store.folder, exc)

    @property
    def counts(self) -> dict[str, int]:
        return {"ng_saved": self.store.saved, "ng_removed": self.store.removed, "ng_save_failed": self.failed}

    def close(self) -> None:
        """Nothing to release: every image was written whole when it was saved."""
