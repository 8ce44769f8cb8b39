"""Frames waiting for review, on disk, so the Review page survives the end of a run and a restart.

Every NG frame of the line goes into BUNDLE/review/pending/ of the product that judged it
(with --products each product's own bundle, so a frame of one product is never offered to
another's calibration), twice: as the camera took it
(ID.png, what a mark copies into review/good or review/defect) and with its heat map as the
console draws it (ID.heat.png, what the page shows). The folder is an NgStore, with its manifest
rules: the console counts and removes only files it wrote and listed in the manifest, keeps
their total under a cap, and removes the oldest of its own first, counted. The manifest line of
each frame also holds what the page shows (frame, score, threshold, time, run) and, appended
when a technician marks it, the label; so the next run, or `daad console` without a camera,
lists the frames of earlier runs and what was decided about them.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from runtime.errors import DaadError
from runtime.line.events import NG
from runtime.line.loop import Outcome
from runtime.line.ng_store import NgStore

log = logging.getLogger(__name__)

REVIEW_DIR = "review"  # BUNDLE/review/good and BUNDLE/review/defect: parts marked in the console
PENDING_DIR = "pending"  # BUNDLE/review/pending
LISTED = 100  # the newest frames a page lists
HEAT = ".heat"  # ID.heat.png beside ID.png
FRAME_ID = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass
class Pending:
    """One NG frame kept for review, as its manifest line describes it."""

    id: str  # the frame's file stem: RUNID_FRAME_SOURCE
    frame: int
    name: str | None
    score: float | None
    threshold: float
    time: str
    run_id: str
    label: str | None = None  # "good" (a false reject) or "defect", once a technician marked it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PendingReview:
    """BUNDLE/review/pending: NG frames and their pictures, capped, listed newest first."""

    def __init__(self, review_root: Path, max_bytes: int) -> None:
        self.store = NgStore(Path(review_root) / PENDING_DIR, max_bytes, in_bundle=True)
        self.folder = self.store.folder

    def add(self, outcome: Outcome, picture: np.ndarray | None, run_id: str) -> str:
        """Keep an NG frame as taken, then its picture; the frame's manifest line says what the page shows."""
        frame = outcome.frame
        origin = Path(frame.name).stem if frame.name else "frame"
        score = outcome.scored.score
        about = {"frame": frame.index, "name": frame.name, "score": score if math.isfinite(score) else None,
                 "threshold": outcome.threshold, "run_id": run_id,
                 "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # written within ms of the verdict
        frame_id = self.store.save(frame.image, f"{run_id}_{frame.index:08d}_{origin}", about).stem
        if picture is not None:
            self.store.save(picture, frame_id + HEAT)
        return frame_id

    def pending(self, limit: int = LISTED) -> list[Pending]:
        """The newest `limit` frames still kept, of this run and earlier ones."""
        listed = []
        for name, about in reversed(self.store.entries().items()):
            if "frame" not in about or name.endswith(HEAT + ".png"):
                continue
            try:
                listed.append(Pending(Path(name).stem, **about))
            except TypeError:  # a line written by another version: not offered
                continue
            if len(listed) == limit:
                break
        return listed

    def find(self, frame_id: str) -> Pending | None:
        if not FRAME_ID.match(frame_id):
            return None
        return next((entry for entry in self.pending(sys.maxsize) if entry.id == frame_id), None)

    def frame_file(self, frame_id: str) -> Path:
        return self.folder / f"{frame_id}.png"

    def picture_file(self, frame_id: str) -> Path:
        """The picture with its heat map; the frame itself where the picture was removed first."""
        picture = self.folder / f"{frame_id}{HEAT}.png"
        return picture if picture.is_file() else self.frame_file(frame_id)

    def mark(self, frame_id: str, label: str) -> None:
        self.store.annotate(f"{frame_id}.png", {"label": label})

    @property
    def counts(self) -> dict[str, int]:
        return {"review_saved": self.store.saved, "review_removed": self.store.removed}


class ReviewFolders:
    """The review folder of each product, opened when first needed: one PendingReview per folder,
    shared by the picture writer (adding) and the pages (listing, marking), so each cap is kept once.

    `bundle_root`: the bundle of the single --bundle run, or of the first product; `products`: the
    --products folder, whose product NAME keeps its frames in products/NAME/review. Each folder has
    its own cap of `max_bytes`.
    """

    def __init__(self, bundle_root: Path, products: Path | None, max_bytes: int) -> None:
        self.bundle_root, self.products, self.max_bytes = Path(bundle_root), products, max_bytes
        self._open: dict[Path, PendingReview] = {}
        self._lock = threading.Lock()  # the picture writer's thread and the web server's open folders

    def root(self, product: str | None) -> Path:
        """BUNDLE/review of `product` (a name from the product line, never from a request)."""
        bundle = self.products / product if self.products is not None and product is not None else self.bundle_root
        return bundle / REVIEW_DIR

    def of(self, product: str | None) -> PendingReview:
        root = self.root(product)
        with self._lock:
            if root not in self._open:
                self._open[root] = PendingReview(root, self.max_bytes)
            return self._open[root]

    @property
    def counts(self) -> dict[str, int]:
        """Frames kept and removed over the cap, in every product's folder."""
        with self._lock:
            opened = list(self._open.values())
        return {key: sum(review.counts[key] for review in opened) for key in ("review_saved", "review_removed")}


class KeepForReview:
    """Sink (behind a picture writer's queue): every NG frame with pixels into the review folder of
    the product that judged it.

    A full or read-only disk costs the frame's place on the Review page, never the inspection:
    the failure is logged and counted.
    """

    def __init__(self, reviews: ReviewFolders, picture: Callable[[Outcome], np.ndarray | None], run_id: str) -> None:
        self.reviews, self.picture, self.run_id = reviews, picture, run_id
        self.failed = 0

    def emit(self, outcome: Outcome) -> None:
        if outcome.verdict != NG or outcome.frame.image is None or outcome.frame.image.size == 0:
            return
        try:
            self.reviews.of(outcome.product).add(outcome, self.picture(outcome), self.run_id)
        except (OSError, DaadError) as exc:
            self.failed += 1
            log.warning("could not keep NG frame %d for review in %s: %s", outcome.frame.index,
                        self.reviews.root(outcome.product), exc)

    @property
    def counts(self) -> dict[str, int]:
        return {**self.reviews.counts, "review_failed": self.failed}

    def close(self) -> None:
        """Nothing to release: every frame was written whole when it was kept."""
