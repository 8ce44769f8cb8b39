"""The New product page's work: teach a product from good parts with `daad teach`'s own functions.

One teach at a time, in a thread of its own so the other pages and the camera loop go on, in
stages the page polls: take the parts (the next N camera frames of the running line, or the
first N images of a folder on the device), let the technician drop any, fit and calibrate,
then save.

Where the product goes: PRODUCTS/NAME, where PRODUCTS is the folder that holds the console's
bundle (with `daad run --products DIR`, that DIR: the new product can be switched to at once).
The fit writes the whole calibrated bundle into PRODUCTS/.teach/NAME, the console's own staging
folder (no model.json at its top, so never listed as a product); saving renames it to
PRODUCTS/NAME, which must not exist yet. Replacing or discarding a teach removes only its own
staging folder: nothing the console did not create is ever written over or removed.

The fit shares the device with the running line, so it takes half the cores (`daad console
--threads N`: N) and runs at nice +10, as the line's picture threads do: the
ONNX Runtime threads it starts inherit that, and the kernel serves the verdicts first.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import shutil
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from calibration.intervals import RateEstimate
from calibration.report import false_reject_sentence
from console.errors import Busy, NotFound, Refused
from console.line_view import LineView, encode_jpeg
from console.validate import checked
from patchmemory.backbone_part import BACKBONE_METADATA, read_backbone_part
from runtime.errors import DaadError, DataError
from runtime.line.priority import renice_thread
from runtime.optional import require
from runtime.preprocess import PreprocessConfig, prepare_frame
from runtime.threshold import ThresholdRecord
from teach.parts import GoodParts, check_enough_parts, read_good_parts
from teach import teach_cli

STAGING_DIR = ".teach"
LINE = "line"  # the source that means the running line's next frames
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_PARTS = 2000  # more good parts than a shift's teach needs; each is kept prepared in memory
TAKE_WAIT_S = 0.5  # how often a take from the line looks whether it was discarded
FIT_NICENESS = 10  # added to the fit's thread, like the line's picture threads (runtime/line/artefacts.py)

TAKING, TAKEN, FITTING, FITTED, SAVED, FAILED = "taking", "taken", "fitting", "fitted", "saved", "failed"


@dataclass
class Teach:
    """One product being taught: what the page shows of it, and what the next stage needs."""

    name: str
    source: str
    wanted: int
    staged: Path
    stage: str = TAKING
    step: str = ""  # the fit's step under way: features, coreset, calibration
    names: list[str] = field(default_factory=list)
    thumbnails: list[bytes] = field(default_factory=list)
    parts: GoodParts | None = None
    dropped: list[str] = field(default_factory=list)
    record: ThresholdRecord | None = None
    saved: Path | None = None
    error: str | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def to_dict(self) -> dict[str, Any]:
        state = {"name": self.name, "source": self.source, "wanted": self.wanted, "stage": self.stage,
                 "step": self.step, "taken": len(self.names), "names": self.names, "dropped": self.dropped,
                 "error": self.error, "saved": None if self.saved is None else str(self.saved), "evidence": None}
        if self.parts is not None and self.parts.skipped:
            state["skipped"] = self.parts.skipped
        if self.record is not None:
            state["evidence"] = evidence(self.record)
        return state


def evidence(record: ThresholdRecord) -> dict[str, Any]:
    """What the calibration of the held-out parts promises, as the Calibrate page shows it."""
    rate = RateEstimate.from_dict(record.rates["false_reject"])
    outliers = record.score_stats.get("good_outliers", [])
    lines = [f"threshold {record.threshold:.4g} - {false_reject_sentence(rate)}",
             f"  set on {record.counts.get('good', 0)} held-out good parts the memory did not see"]
    lines += [f"  left out as outliers (far above the other good parts): {', '.join(o['image'] for o in outliers)}"
              ] if outliers else []  # fmt: skip
    return {"threshold": record.threshold, "false_reject": rate.estimate, "false_reject_upper": rate.upper,
            "outliers": [outlier["image"] for outlier in outliers], "lines": lines}


class TeachDesk:
    """The console's teach: `products` is where products are saved, `backbone` the part they are taught on."""

    def __init__(self, products: Path, backbone: Path | None, line: LineView | None = None,
                 threads: int | None = None, scored_on: tuple[str, str] = ("auto", "fp32")) -> None:  # fmt: skip
        """`scored_on`: the line's backend and precision, which a new product's threshold is measured on
        (`daad teach --backend --precision`), so the line can switch to it."""
        self.products, self.backbone, self.line, self.scored_on = Path(products), backbone, line, scored_on
        self.threads = threads or max(1, (os.cpu_count() or 1) // 2)  # the fit's: the line keeps the other half
        self._teach: Teach | None = None
        self._lock = threading.Lock()

    # -- reading --------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        with self._lock:
            teach = self._teach
            state = {"stage": None} if teach is None else teach.to_dict()
        return {**state, "products": str(self.products), "backbone": None if self.backbone is None else str(self.backbone),
                "has_line": self.line is not None}  # fmt: skip

    def thumbnail(self, index: int) -> bytes:
        teach = self._current()
        if not 0 <= index < len(teach.thumbnails):
            raise NotFound(f"no part {index} in this teach")
        return teach.thumbnails[index]

    def plot(self) -> bytes:
        teach = self._current()
        if teach.stage not in (FITTED, SAVED):
            raise NotFound("no calibration yet: fit the product first")
        folder = teach.saved or teach.staged
        return (folder / "calibration.png").read_bytes()

    # -- changes --------------------------------------------------------------------------------------

    def take(self, name: str, source: str, parts: int) -> None:
        """Begin a teach of `name`: take `parts` good parts from the line or a folder, in the background."""
        if self.backbone is None:
            raise Refused("no backbone part to teach on: start the console with --backbone PART (a folder with "
                          f"backbone.onnx and {BACKBONE_METADATA}, or a taught bundle)")  # fmt: skip
        checked("parts", parts, int, 1, MAX_PARTS)
        self._check_name(name)
        config = read_backbone_part(self.backbone).preprocess_config  # a wrong --backbone is said here, in one line
        if source == LINE and self.line is None:
            raise Refused("no running line here: give a folder of good parts on this device")
        if source != LINE and not Path(source).is_dir():
            raise Refused(f"{source} is not a folder on this device: give the folder that holds the good parts' images")
        with self._lock:
            self._check_idle()
            self._discard()
            teach = self._teach = Teach(name, "the line" if source == LINE else source, parts,
                                        self.products / STAGING_DIR / name)  # fmt: skip
        reader = self._take_from_line if source == LINE else self._take_from_folder
        self._start(teach, lambda: reader(teach, config))

    def fit(self, drop: list[int]) -> None:
        """Fit and calibrate on the parts taken, less those dropped (by index), in the background."""
        with self._lock:
            teach = self._current()
            if teach.stage not in (TAKEN, FITTED, FAILED) or teach.parts is None:
                raise Busy(f"the teach of {teach.name} is {teach.stage}: take the parts first")
            parts = teach.parts
            for index in drop:
                checked("drop", index, int, 0, len(parts.names) - 1)
            kept = np.ones(len(parts.names), dtype=bool)
            kept[list(drop)] = False
            teach.dropped = [name for name, keep in zip(parts.names, kept) if not keep]
            chosen = GoodParts(parts.source, parts.images[kept], [n for n, keep in zip(parts.names, kept) if keep],
                               parts.skipped, parts.grey)  # fmt: skip
            check_enough_parts(chosen, self._args(teach).holdout)
            teach.stage, teach.step, teach.error, teach.record = FITTING, "", None, None
        self._start(teach, lambda: self._fit(teach, chosen))

    def save(self) -> Path:
        """Move the fitted, calibrated product to PRODUCTS/NAME, which must not exist yet."""
        with self._lock:
            teach = self._current()
            if teach.stage != FITTED:
                raise Busy(f"the teach of {teach.name} is {teach.stage}: fit it before saving")
            target = self.products / teach.name
            if target.exists():
                raise Busy(f"{target} already exists: teach under another name (nothing was written over)")
            try:  # within one folder, so a rename: the product appears whole or not at all
                os.rename(teach.staged, target)
            except OSError as exc:
                raise Refused(f"could not move {teach.staged} to {target}: {exc.strerror or exc}; fit it again") from exc
            teach.stage, teach.saved = SAVED, target
            return target

    def discard(self) -> None:
        with self._lock:
            self._check_idle()
            self._discard()
            self._teach = None

    # -- the work, in its own thread ----------------------------------------------------------------

    def _start(self, teach: Teach, work: Callable[[], None]) -> None:
        def run() -> None:
            try:
                work()
            except DaadError as exc:
                self._fail(teach, str(exc))
            except Exception as exc:  # a teach that breaks must say so on its page and leave the console up
                traceback.print_exc(file=sys.stderr)
                self._fail(teach, f"the teach failed: {type(exc).__name__}: {exc}")

        threading.Thread(target=run, name=f"daad-teach-{teach.name}", daemon=True).start()

    def _take_from_folder(self, teach: Teach, config: PreprocessConfig) -> None:
        parts = read_good_parts(teach.source, teach.wanted, config)
        self._taken(teach, parts)

    def _take_from_line(self, teach: Teach, config: PreprocessConfig) -> None:
        images, names, skipped = [], [], []
        taking = self.line.take_frames()
        try:
            while len(names) < teach.wanted and not teach.cancelled.is_set():
                try:
                    frame = taking.get(timeout=TAKE_WAIT_S)
                except queue.Empty:  # no frame yet: look again whether the teach is still wanted
                    continue
                name = frame.name or f"frame {frame.index}"
                try:
                    images.append(prepare_frame(frame.image, config))
                    names.append(name)
                    self._thumbnail(teach, name, images[-1])
                except DataError:
                    skipped.append(name)
        finally:
            self.line.stop_taking(taking)
        if names:
            self._taken(teach, GoodParts("the line", np.stack(images), names, skipped))

    def _fit(self, teach: Teach, parts: GoodParts) -> None:
        renice_thread(FIT_NICENESS)  # this thread is the fit's alone; the sessions it opens start theirs from it
        begun = time.perf_counter()
        args = self._args(teach)
        settings, calibration = teach_cli.teach_settings(args)
        shutil.rmtree(teach.staged, ignore_errors=True)  # an earlier fit of this teach: the console's own
        teach.staged.mkdir(parents=True)
        part = read_backbone_part(self.backbone)
        limits = require("threadpoolctl", "the console's teach").threadpool_limits
        with limits(limits=self.threads):  # numpy's BLAS (the coreset) to the fit's share too
            taught = teach_cli.fit(args, part, parts, settings, lambda step: self._step(teach, step))
        taught.training["fit_seconds"] = time.perf_counter() - begun  # as `daad teach` records it
        saved = teach_cli.save_and_calibrate(args, taught, calibration, lambda step: self._step(teach, step))
        with self._lock:
            teach.record, teach.stage, teach.step = saved.record, FITTED, ""

    def _args(self, teach: Teach) -> argparse.Namespace:
        """`daad teach`'s arguments for this teach: the command line's defaults, the fit's threads."""
        argv = ["--backbone", str(self.backbone), "--good", teach.source, "--out", str(teach.staged),
                "--name", teach.name, "--no-progress", "--note", f"taught in the console from {teach.source}",
                "--threads", str(self.threads), "--backend", self.scored_on[0], "--precision", self.scored_on[1]]  # fmt: skip
        return teach_cli.build_parser().parse_args(argv)

    def _taken(self, teach: Teach, parts: GoodParts) -> None:
        thumbnails = [encode_jpeg(image) for image in parts.images[len(teach.thumbnails) :]]
        with self._lock:
            teach.thumbnails += thumbnails
            teach.names, teach.parts = list(parts.names), parts
            teach.stage = TAKEN

    def _thumbnail(self, teach: Teach, name: str, image: np.ndarray) -> None:
        """A part taken from the line, shown at once: the page counts them in."""
        jpeg = encode_jpeg(image)
        with self._lock:
            teach.thumbnails.append(jpeg)
            teach.names.append(name)

    def _step(self, teach: Teach, step: str) -> None:
        with self._lock:
            teach.step = step

    def _fail(self, teach: Teach, reason: str) -> None:
        with self._lock:
            teach.stage, teach.error = FAILED, reason

    # -- guards ---------------------------------------------------------------------------------------

    def _current(self) -> Teach:
        teach = self._teach
        if teach is None:
            raise NotFound("no product is being taught: name one and take its parts first")
        return teach

    def _check_name(self, name: str) -> None:
        if not NAME.fullmatch(name):
            raise Refused(f"product name {name!r}: use up to 64 letters, digits, '-', '_' or '.', beginning with a "
                          "letter or digit (it becomes the product's folder name)")  # fmt: skip
        if (self.products / name).exists():
            raise Busy(f"{self.products / name} already exists: choose another name (nothing is written over)")

    def _check_idle(self) -> None:
        teach = self._teach
        if teach is not None and teach.stage == FITTING:
            raise Busy(f"{teach.name} is being fitted: wait for it (one teach at a time)")

    def _discard(self) -> None:
        """Stop a take under way and remove this teach's staging folder (the console's own, never a product)."""
        teach = self._teach
        if teach is not None:
            teach.cancelled.set()
            if teach.stage != SAVED:
                shutil.rmtree(teach.staged, ignore_errors=True)
