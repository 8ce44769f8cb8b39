"""The products of a line and the one it judges by, changed over at a frame boundary while the line runs.

A changeover must not cost a frame nor judge one by half a product. The next product's bundle,
threshold and backend are opened, and its model tried on a frame, in the thread that asked (the
console, an MQTT command) while the loop goes on with the product in hand; only a product that
passed all of that is handed over, and the loop takes it before its next frame and logs the
switch there, in the event log, like a threshold switch. The product it replaced stays open, so
rolling back is a hand-over too, without loading anything. A product that fails to load is
refused with its reason and the line keeps its product.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from runtime.backends.base import Backend
from runtime.backends.options import BackendOptions
from runtime.bundle import METADATA_FILE, Bundle, open_bundle, read_metadata
from runtime.errors import DaadError, ThresholdError
from runtime.line.live_threshold import Calibration, LiveThreshold, Setting, ThresholdSwitch, in_force
from runtime.preprocess import PreprocessConfig
from runtime.score_scale import ScoreScale
from runtime.threshold import check_binding, read_threshold


class ProductError(DaadError):
    """A product that cannot go on the line; the line keeps the one it has."""


def resolve_threshold(bundle: Bundle, options: BackendOptions, override: float | None) -> tuple[Calibration, str]:
    """(the threshold with the product's score scale and its history entry, where it came from);
    refuses a missing threshold.json or one measured elsewhere. A trial --threshold has no good
    median and no entry."""
    if override is not None:
        if not math.isfinite(override):
            raise ThresholdError(f"--threshold must be a finite number, got {override}")
        return Calibration(ScoreScale(override)), "--threshold"
    record = read_threshold(bundle)
    if record is None:
        raise ThresholdError(
            f"{bundle.threshold_path} is missing: this bundle has no calibrated threshold. Run "
            f"`daad calibrate --bundle {bundle.root}` on good (and defective) samples, or pass --threshold T."
        )
    check_binding(record, bundle, options.backend_name(bundle), options.precision)
    return in_force(bundle, record), str(bundle.threshold_path)


@dataclass
class Product:
    """What judges a frame: the model's backend, the preprocessing it takes, and its live calibration."""

    name: str | None  # the product's folder name; None for a run of one --bundle
    preprocess: PreprocessConfig
    backend: Backend
    threshold: LiveThreshold
    bundle: Bundle | None = None

    def close(self) -> None:
        self.backend.close()


def product_names(folder: Path) -> list[str]:
    """The products of a --products folder: its sub-folders holding a model.json, by name."""
    if not folder.is_dir():
        raise ProductError(f"--products {folder} is not a folder: give the folder holding one bundle per product")
    return sorted(path.name for path in folder.iterdir() if (path / METADATA_FILE).is_file())


def sharing_backbone(folder: Path, sha256: str) -> list[str]:
    """The products of `folder` taught from the backbone part `sha256`: on ONNX Runtime every one of them
    open at once runs the one backbone session (runtime/backends/backbone_lease.py)."""
    names = []
    for name in product_names(folder):
        try:
            backbone = read_metadata(folder / name).parts.get("backbone", {})
        except DaadError:
            continue  # refused with its reason if the line ever switches to it
        if backbone.get("sha256") == sha256:
            names.append(name)
    return names


def same_geometry(a: PreprocessConfig, b: PreprocessConfig) -> bool:
    """Whether frames prepared for one product fit the other (the capture thread and the pictures are set up once)."""
    return (a.shape, a.center_crop) == (b.shape, b.center_crop)


def open_product(folder: Path, name: str, options: BackendOptions, geometry: PreprocessConfig | None = None) -> Product:
    """Open product `name` of `folder` completely: bundle (sha256), threshold (bound to this backend and
    precision), backend, and one frame through the model; ProductError naming what failed otherwise."""
    names = product_names(folder)
    if name not in names:
        raise ProductError(f"no product {name!r} in {folder}: its products are {', '.join(names) or 'none'} "
                           f"(one bundle folder each)")
    try:
        bundle = open_bundle(folder / name)
        calibration, origin = resolve_threshold(bundle, options, None)
    except DaadError as exc:
        raise ProductError(f"product {name!r}: {exc}") from exc
    if geometry is not None and not same_geometry(bundle.preprocess, geometry):
        raise ProductError(f"product {name!r} takes {described(bundle.preprocess)} frames, this line "
                           f"{described(geometry)}: the capture thread and pictures are set up for the first; "
                           f"run it on its own with `daad run --bundle {bundle.root}`")
    try:
        backend = options.open(bundle)
    except Exception as exc:  # whatever the backend raises, the line keeps its product and says why
        raise ProductError(f"product {name!r}: {exc}") from exc
    try:
        try_model(backend, bundle.preprocess)
    except Exception as exc:
        backend.close()
        ran = getattr(backend, "graphs", bundle.onnx_path.name)  # model.onnx, or a taught product's parts or engines
        raise ProductError(f"product {name!r}: {bundle.root}'s {ran} did not score a test frame ({exc}): "
                           f"re-export or re-teach it") from exc
    return Product(name, bundle.preprocess, backend, LiveThreshold(calibration, origin), bundle)


def try_model(backend: Backend, preprocess: PreprocessConfig) -> None:
    """Score one mid-grey frame: the outputs must have the contract's shapes and a finite score."""
    result = backend.infer(np.full((1, *preprocess.shape), 128, dtype=np.uint8))
    scores, maps = np.asarray(result.scores), np.asarray(result.anomaly_maps)
    if scores.shape != (1,) or maps.shape != (1, 1, preprocess.height, preprocess.width):
        raise ValueError(f"outputs of shape {scores.shape} and {maps.shape}, expected (1,) and "
                         f"(1, 1, {preprocess.height}, {preprocess.width})")
    if not math.isfinite(float(scores[0])):
        raise ValueError(f"score {scores[0]}")


def described(preprocess: PreprocessConfig) -> str:
    return f"{preprocess.width}x{preprocess.height} {preprocess.channel_order} (centre crop {preprocess.center_crop:g})"


@dataclass
class ProductSwitch:
    """An event-log line: from `frame` on, parts are judged as `product` instead of `previous`."""

    product: str
    previous: str
    origin: str  # who asked, e.g. "console switch by anna", "mqtt roll back by plc-7"
    frame: int  # the first frame judged as the new product
    threshold: float
    threshold_id: str | None
    typical_good: float
    model_sha256: str
    event: str = "product_switch"  # frame lines carry a verdict instead
    run_id: str | None = None  # stamped by the EventLog, as on frame lines
    time: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="milliseconds"))

    def to_json(self) -> str:
        return json.dumps(asdict(self), allow_nan=False)


@dataclass(frozen=True)
class Judging:
    """What judges one frame, and the switch line to log before it (None when nothing changed)."""

    product: Product
    setting: Setting
    switch: ProductSwitch | ThresholdSwitch | None = None


class ProductLine:
    """The product on the line, the one before it, and a loaded one waiting for the next frame.

    Any thread may ask for a switch or a roll back (one at a time); only the loop's thread calls
    `at_frame`, which is where a hand-over takes effect. Products that leave the line are closed
    by the next change or at `close`, never in the loop's thread.
    """

    def __init__(self, first: Product, folder: Path | None = None, options: BackendOptions | None = None) -> None:
        self.folder, self.options = folder, options
        self._current, self._previous = first, None
        self._pending: tuple[Product, str] | None = None
        self._retired: list[Product] = []
        self._in_use = first.threshold.get()
        self._lock = threading.Lock()  # the hand-over between the asking thread and the loop
        self._changing = threading.Lock()  # one change at a time

    @classmethod
    def single(cls, backend: Backend, preprocess: PreprocessConfig,
               threshold: float | Calibration | LiveThreshold) -> "ProductLine":
        """A run of one bundle: the one product never changes; its threshold may (the console)."""
        live = threshold if isinstance(threshold, LiveThreshold) else LiveThreshold(threshold, "fixed")
        return cls(Product(None, preprocess, backend, live))

    @property
    def current(self) -> Product:
        with self._lock:
            return self._current

    def state(self) -> dict[str, object]:
        """The products, the one on the line, the one a roll back returns to, and one waiting for a frame."""
        with self._lock:
            current, previous, pending = self._current, self._previous, self._pending
        return {"current": current.name, "previous": previous and previous.name,
                "pending": pending and pending[0].name,
                "products": product_names(self.folder) if self.folder is not None else []}

    def switch(self, name: str, origin: str) -> Product:
        """Load `name` completely and hand it over for the next frame; ProductError keeps the line as it is."""
        if self.folder is None or self.options is None:
            raise ProductError("this run judges one --bundle: start it with --products DIR to change products")
        with self._changing:
            self._close_retired()
            product = open_product(self.folder, name, self.options, self.current.preprocess)
            self._hand_over(product, origin)
            return product

    def roll_back(self, origin: str) -> Product:
        """Hand the product before this one back to the line, as it ran (still open: nothing to load)."""
        with self._changing:
            self._close_retired()
            with self._lock:
                previous = self._previous
            if previous is None:
                raise ProductError(f"no product to roll back to: this run has judged only {self.current.name!r}")
            self._hand_over(previous, origin)
            return previous

    def _hand_over(self, product: Product, origin: str) -> None:
        with self._lock:
            replaced, self._pending = self._pending, (product, origin)
            unused = replaced is not None and replaced[0] is not self._previous
        if unused:
            replaced[0].close()  # loaded for a switch that a later one overtook: the loop never took it

    def at_frame(self, index: int) -> Judging:
        """The product and calibration that judge frame `index`; takes a waiting product first."""
        with self._lock:
            handed, self._pending = self._pending, None
            left = self._current
            if handed is not None:
                product = handed[0]
                if self._previous is not None and self._previous is not product:
                    self._retired.append(self._previous)
                self._current, self._previous = product, left
        product = self._current
        setting = product.threshold.get()
        switch = None
        if handed is not None:
            calibration = setting.calibration
            switch = ProductSwitch(product.name, left.name, handed[1], index, calibration.threshold,
                                   calibration.entry, calibration.scale.typical_good, product.bundle.sha256)
        elif setting.version != self._in_use.version:
            switch = setting.switch(self._in_use, index, product.name)
        self._in_use = setting
        return Judging(product, setting, switch)

    def recalibrate(self, name: str, calibration: Calibration, origin: str) -> None:
        """A new threshold of product `name` (a console save): every open copy takes it, as it would from its
        threshold.json when next loaded; the loop logs the switch when that product judges."""
        with self._lock:
            open_now = [self._current, self._previous, *([self._pending[0]] if self._pending else [])]
        for product in open_now:
            if product is not None and product.name == name:
                product.threshold.set(calibration, origin)

    def _close_retired(self) -> None:
        with self._lock:
            retired, self._retired = self._retired, []
        for product in retired:
            product.close()

    def close(self) -> None:
        """Close every product this line opened (at the end of the run, once the loop has stopped)."""
        with self._lock:
            pending = [self._pending[0]] if self._pending is not None else []
            products = [self._current, self._previous, *pending, *self._retired]
            self._retired, self._pending = [], None
        closed: list[Product] = []
        for product in products:
            if product is not None and not any(product is done for done in closed):
                closed.append(product)
                product.close()
