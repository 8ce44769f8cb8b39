"""What the console can change, as plain methods over the same functions `daad calibrate` calls.

The routes are thin: they parse a request, call one method here and turn the result or the
DaadError into a response. Every change (collect, propose, save, roll back, mark) first checks
the token and that model.onnx is still the one the line loaded. The pages are about the product
on the line (console/on_the_line.py): with --products, the one judging when the request came.
"""

from __future__ import annotations

import itertools
import math
import re
import secrets
import sys
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from calibration.calibrate import Calibration, CalibrationSettings, calibrate
from calibration.drift import check_drift
from calibration.report import calibration_plot, calibration_summary, drift_summary
from calibration.save import part_counts, save_calibration, threshold_record
from calibration.scoring import ScoredParts, check_enough_good, score_folder
from console.errors import Busy, NotFound, ProductChanged, Refused, StaleModel, Unauthorised
from console.line_view import LineView
from console.on_the_line import OnTheLine
from console.review import PENDING_DIR, REVIEW_DIR, PendingReview, ReviewFolders
from console.teach_desk import TeachDesk
from console.validate import checked, field
from patchmemory.backbone_part import BACKBONE_METADATA
from runtime.atomic import atomic_write_bytes
from runtime.backends.options import BackendOptions
from runtime.bundle import Bundle, file_sha256
from runtime.errors import ThresholdError
from runtime.images import list_images
from runtime.line.changeover import apply_command, parse_command
from runtime.line.live_threshold import LiveThreshold, in_force
from runtime.line.products import ProductLine
from runtime.threshold import (
    HISTORY_DIR,
    ThresholdRecord,
    check_binding,
    history_entries,
    load_record,
    read_threshold,
    read_threshold_file,
    threshold_lock,
    write_threshold,
)

LABELS = ("good", "defect")
MIN_DRIFT_PARTS = 20
KEEP_PROPOSALS = 5


@dataclass
class Proposal:
    """A computed, not yet saved, calibration: saving it writes exactly what the technician saw, into the
    product it was calculated for, while that product is still on the line."""

    id: int
    made_for: OnTheLine
    result: Calibration
    counts: dict[str, Any]
    good: np.ndarray
    defect: np.ndarray | None
    plot_png: bytes

    def to_dict(self) -> dict[str, Any]:
        result = self.result
        return {
            "id": self.id,
            "product": self.made_for.name,
            "threshold": result.threshold,
            "method": result.settings.method,
            "rates": result.rates(),
            "warnings": result.warnings,
            "lines": calibration_summary(result, self.counts),
            "counts": self.counts,
            "good": self.good.tolist(),
            "defect": None if self.defect is None else self.defect.tolist(),
        }


@dataclass
class ProposalRequest:
    """What the calibrate page sends: where the parts are and what the threshold should aim at."""

    good: str = "live"  # "live" (the collected parts) or a folder on the device
    defect: str = ""  # a folder of known defects, or "" for none
    add_review_good: bool = False  # also use the false rejects marked in Review as good parts
    method: str = "quantile"
    target_frr: float = 0.005
    target_recall: float | None = None
    keep_outliers: bool = False  # good parts far above the others count too (as --keep-outliers)
    product: str | None = None  # the product the page was loaded for; None: whichever is on the line

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProposalRequest":
        """The request of the calibrate page, each field of its JSON type (a string is not a number or a yes)."""
        recall = data.get("target_recall")
        return cls(
            good=field(data, "good", str, "live"),
            defect=field(data, "defect", str, ""),
            add_review_good=field(data, "add_review_good", bool, False),
            method=field(data, "method", str, "quantile"),
            target_frr=field(data, "target_frr", float, 0.005),
            target_recall=None if recall is None else checked("target_recall", recall, float),
            keep_outliers=field(data, "keep_outliers", bool, False),
            product=field(data, "product", str, None),
        )


class Console:
    """A line's console; `line` and `threshold` are the running loop's, or None without a camera."""

    def __init__(self, bundle: Bundle, backend: BackendOptions, token: str, line: LineView | None = None,
                 threshold: LiveThreshold | None = None, reviews: ReviewFolders | None = None,
                 products: ProductLine | None = None, backbone: Path | None = None) -> None:
        """`bundle`: the one the run started with (with --products, the first product's). `backend`: what the
        line scores with (a resolved name, not "auto"); folders are scored the same way. `reviews`: where the
        line keeps NG frames for review; without it, the console only reads those folders (it adds nothing,
        so it removes nothing). `products`: the line's products with --products (the pages follow the one on
        the line; a save reaches every open copy of its product). `backbone`: the part the New product page
        teaches on (default: the bundle's own, when it was taught); new products are saved beside the bundle
        (console/teach_desk.py says why)."""
        self.bundle, self.backend, self.token, self.products = bundle, backend, token, products
        self.line, self.threshold = line, threshold
        folder = products.folder if products is not None else None
        self.reviews = reviews or ReviewFolders(bundle.root, folder, sys.maxsize)
        self._proposals: dict[int, Proposal] = {}
        self._proposal_ids = itertools.count(1)
        self._lock = threading.Lock()  # one change at a time: history and review copies stay consistent
        if backbone is None and (bundle.root / BACKBONE_METADATA).is_file():
            backbone = bundle.root
        self.teach = TeachDesk(bundle.root.parent, backbone, line, backend.threads, (backend.backend, backend.precision))

    # -- guards ---------------------------------------------------------------------------------------

    def authorise(self, given: str | None) -> None:
        if not given or not secrets.compare_digest(given.encode(), self.token.encode()):
            raise Unauthorised("this change needs the console token (shown when the console started) "
                               "in the X-Console-Token header: enter it in the page's token field")

    def check_model(self, here: OnTheLine) -> None:
        """Refuse changes when model.onnx was replaced since the line loaded the product."""
        bundle = here.bundle
        current = file_sha256(bundle.onnx_path)
        if current != bundle.sha256:
            since, fix = (("the line loaded it", f"switch to {here.name!r} again to load the new model")
                          if here.name is not None else
                          ("the console started", "restart the line and the console with the new model"))
            raise StaleModel(f"{bundle.onnx_path} changed since {since} (sha256 {current[:12]}…, "
                             f"was {bundle.sha256[:12]}…): {fix}")

    # -- reading --------------------------------------------------------------------------------------

    def on_the_line(self) -> OnTheLine:
        """The product the pages are about now: the one judging the line with --products, else the bundle."""
        if self.products is None:
            return OnTheLine(None, self.bundle)
        product = self.products.current
        return OnTheLine(product.name, product.bundle)

    def review(self, here: OnTheLine) -> PendingReview:
        """The NG frames of `here` waiting for review."""
        return self.reviews.of(here.name)

    def shown(self, here: OnTheLine) -> tuple[ThresholdRecord | None, str | None]:
        """(the active threshold of `here`, None), or (None, why threshold.json cannot be used): the pages
        show a damaged or implausible file and offer the roll back instead of failing to load."""
        try:
            return read_threshold(here.bundle), None
        except ThresholdError as exc:
            return None, str(exc)

    def live_threshold(self) -> float | None:
        if self.products is not None:  # the product on the line, as it judges (also before a save is read back)
            return self.products.current.threshold.value
        if self.threshold is not None:
            return self.threshold.value
        record, _ = self.shown(self.on_the_line())
        return None if record is None else record.threshold

    def history(self, here: OnTheLine) -> list[dict[str, Any]]:
        """Every threshold the product has had, newest first; the newest entry is the active one.

        Each entry is read as a roll back would read it: one that could not go live says why
        (`problem`) and is not offered. A damaged threshold.json makes no entry active.
        """
        active, _ = self.shown(here)
        rows = []
        for path in reversed(history_entries(here.bundle)):
            try:
                record, problem = read_threshold_file(here.bundle, path), None
            except ThresholdError as exc:
                record, problem = _shown_anyway(path), str(exc)
            row = {"file": path.name, "problem": problem, "active": False, "same_model": False}
            if record is not None:
                row |= {
                    "created": record.created, "threshold": record.threshold if problem is None else repr(record.threshold),
                    "method": record.method,
                    "note": record.note, "saved_by": record.saved_by, "backend": record.backend,
                    "precision": record.precision, "rates": finite(record.rates),
                    "counts": {k: v for k, v in record.counts.items() if isinstance(v, int)},
                    "same_model": problem is None and (record.model_sha256, record.backend, record.precision)
                    == (here.bundle.sha256, self.backend.backend, self.backend.precision),
                    "active": not rows and active is not None and active.to_dict() == record.to_dict(),
                }
            rows.append(row)
        return rows

    def review_folders(self, here: OnTheLine) -> dict[str, dict[str, Any]]:
        """The product's review folders and how many images each holds, for the calibrate page to offer
        (and where its frames wait for review)."""
        folders = {}
        for label in LABELS:
            folder = here.bundle.root / REVIEW_DIR / label
            folders[label] = {"path": str(folder), "images": len(list_images(folder)) if folder.is_dir() else 0}
        folders["pending"] = {"path": str(self.reviews.root(here.name) / PENDING_DIR)}
        return folders

    def drift(self, parts: int) -> dict[str, Any]:
        """The drift check of calibration/drift.py on the last `parts` scores of the product on the line,
        against its calibration; only parts it judged since it came on the line count."""
        here = self.on_the_line()
        if self.line is None:
            raise Refused("no live line here: run the drift check with "
                          f"`daad calibrate --check --bundle {here.bundle.root} --good DIR`")
        record = read_threshold(here.bundle)
        if record is None:
            raise ThresholdError(f"{here.bundle.threshold_path} is missing: calibrate before checking for drift")
        scores = self.line.recent_scores(parts, here.name)
        if scores.size < MIN_DRIFT_PARTS:
            since = f" of {here} since it came on the line" if here.name is not None else " so far"
            raise Refused(f"only {scores.size} scored parts{since}; the drift check needs at least {MIN_DRIFT_PARTS}")
        check = check_drift(record, scores)
        return {"drifted": check.drifted, "parts": int(scores.size), "findings": check.findings,
                "lines": drift_summary(check, record.threshold)}

    def product_state(self) -> dict[str, Any]:
        """The line's products, the one running, the one a roll back returns to, one loaded for the next frame."""
        return self._product_line().state()

    def _product_line(self) -> ProductLine:
        if self.products is None:
            raise Refused("this run judges one --bundle: start `daad run` with --products DIR to change products")
        return self.products

    # -- changes --------------------------------------------------------------------------------------

    def change_product(self, body: dict[str, Any]) -> str:
        """A changeover command (runtime/line/changeover.py): the product loaded and checked, or refused."""
        line = self._product_line()
        return apply_command(parse_command(body), line, "console")

    def collect(self, parts: int) -> None:
        """Take the next `parts` parts of the product on the line as good ones (another product's are not taken)."""
        if self.line is None:
            raise Refused("no live line here: choose a folder of good parts instead")
        waiting = self.products.state()["pending"] if self.products is not None else None
        if waiting is not None:
            raise Busy(f"product {waiting!r} is loaded and takes over at the next part: collect once it is on the line")
        self.line.collect(parts, self.on_the_line().name)

    def propose(self, request: ProposalRequest) -> Proposal:
        """Score the chosen parts and calibrate them for the product on the line; nothing is written until `save`."""
        here = self.on_the_line()
        here.check_page(request.product)
        try:
            settings = CalibrationSettings(request.method, request.target_frr, request.target_recall,
                                           keep_outliers=request.keep_outliers)
        except ValueError as exc:
            raise Refused(str(exc)) from exc
        if request.method != "quantile" and not request.defect:
            raise Refused(f"the {request.method} method needs known defective parts: choose a defect folder")
        good, defect = self._parts(request, here)
        check_enough_good(good)
        try:
            result = calibrate(good.scores, None if defect is None else defect.scores, settings, good.names)
        except ValueError as exc:
            raise Refused(str(exc)) from exc
        counts = part_counts(result, good, defect)
        defect_scores = None if defect is None else defect.scores
        proposal = Proposal(next(self._proposal_ids), here, result, counts, good.scores, defect_scores,
                            calibration_plot(good.scores, defect_scores, result.threshold,
                                             outliers_kept=settings.keep_outliers))
        with self._lock:
            self._proposals[proposal.id] = proposal
            for old in sorted(self._proposals)[:-KEEP_PROPOSALS]:
                del self._proposals[old]
        return proposal

    def proposal(self, proposal_id: int) -> Proposal:
        with self._lock:
            proposal = self._proposals.get(proposal_id)
        if proposal is None:
            raise NotFound(f"no calibration {proposal_id} to save: calibrate again")
        return proposal

    def save(self, proposal_id: int, note: str, saved_by: str) -> ThresholdRecord:
        """Write the proposal as threshold.json of the product it was calculated for (same code as `daad
        calibrate`), only while that product is on the line; the line switches at its next frame."""
        proposal = self.proposal(proposal_id)
        here, made_for = self.on_the_line(), proposal.made_for
        if not made_for.same(here):
            raise ProductChanged(f"calibration {proposal_id} was calculated for {made_for} ({made_for.bundle.root}), "
                                 f"but the line now runs {here}: calculate again for the product on the line")
        bundle = made_for.bundle
        with self._lock, threshold_lock(bundle):
            self.check_model(made_for)
            record = threshold_record(bundle, proposal.result, proposal.counts, self.backend.backend,
                                      self.backend.precision, note, saved_by)
            save_calibration(bundle, record, proposal.good, proposal.defect)
            return self._go_live(made_for, f"console save by {saved_by or 'unnamed'}")

    def roll_back(self, file: str, saved_by: str, shown: str | None = None) -> ThresholdRecord:
        """Make an earlier threshold of the product on the line the active one again, as a new history entry
        that says so; `shown`: the product the page was loaded for."""
        here = self.on_the_line()
        here.check_page(shown)
        bundle = here.bundle
        path = bundle.root / HISTORY_DIR / file
        if not re.fullmatch(r"threshold-[\w.+-]+\.json", file) or not path.is_file():
            raise NotFound(f"{file} is not a threshold in {path.parent}")
        with self._lock, threshold_lock(bundle):
            self.check_model(here)
            earlier = read_threshold_file(bundle, path)
            check_binding(earlier, bundle, self.backend.backend, self.backend.precision, path)
            now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
            record = replace(earlier, created=now, saved_by=saved_by,
                             note=f"roll back to the threshold of {earlier.created}" + (f": {earlier.note}" if earlier.note else ""))
            write_threshold(bundle, record)
            return self._go_live(here, f"console roll back by {saved_by or 'unnamed'} to {earlier.created}")

    def mark(self, frame_id: str, label: str, shown: str | None = None) -> Path:
        """Copy a frame of the product on the line waiting for review, as the camera took it, into its
        BUNDLE/review/good (a false reject) or review/defect; marked again with the other label, the copy
        moves. `shown`: the product the page was loaded for."""
        if label not in LABELS:
            raise Refused(f"label must be one of {', '.join(LABELS)}, got {label!r}")
        here = self.on_the_line()
        here.check_page(shown)
        review, marked = self.review(here), here.bundle.root / REVIEW_DIR
        with self._lock:
            entry = review.find(frame_id)
            if entry is None:
                raise NotFound(f"frame {frame_id!r} is no longer kept for review in {review.folder}: reload the "
                               f"review page")
            self.check_model(here)
            copy = marked / label / f"{entry.id}.png"
            if entry.label != label or not copy.is_file():
                atomic_write_bytes(copy, review.frame_file(entry.id).read_bytes())
            if entry.label not in (None, label):  # re-marked: the copy under the other label was the console's own
                (marked / entry.label / f"{entry.id}.png").unlink(missing_ok=True)
            review.mark(entry.id, label)
        return copy

    def _parts(self, request: ProposalRequest, here: OnTheLine) -> tuple[ScoredParts, ScoredParts | None]:
        folders = [Path(request.good)] if request.good != "live" else []
        if request.add_review_good:
            folders.append(here.bundle.root / REVIEW_DIR / "good")
        scored = self._score_folders(folders + ([Path(request.defect)] if request.defect else []), here.bundle)
        defect = scored.pop() if request.defect else None
        if request.good == "live":
            scored.insert(0, self._collected(here))
        return merge(scored), defect

    def _collected(self, here: OnTheLine) -> ScoredParts:
        collection = None if self.line is None else self.line.collection()
        if collection is None or not collection.scores:
            raise Refused("no parts collected from the line yet: collect good parts first, or choose a folder")
        if collection.product != here.name:
            raise ProductChanged(f"the parts collected are of product {collection.product!r}, but the line now runs "
                                 f"{here}: collect its parts again")
        if not collection.done:
            raise Refused(f"still collecting: {len(collection.scores)} of {collection.wanted} parts so far")
        return ScoredParts(f"the line ({collection.wanted} parts)", np.asarray(collection.scores), collection.names)

    def _score_folders(self, folders: list[Path], bundle: Bundle) -> list[ScoredParts]:
        if not folders:
            return []
        with self.backend.open(bundle) as backend:
            return [score_folder(backend, folder, bundle.preprocess) for folder in folders]

    def _go_live(self, here: OnTheLine, origin: str) -> ThresholdRecord:
        """Switch the line to threshold.json as just written, read back by the reader `daad run` starts with."""
        record = read_threshold(here.bundle)
        calibration = in_force(here.bundle, record)  # the whole calibration: scale and entry too
        if self.products is not None:  # every open copy of the product, as when it is loaded again
            self.products.recalibrate(here.name, calibration, origin)
        elif self.threshold is not None:
            self.threshold.set(calibration, origin)
        return record


def merge(parts: list[ScoredParts]) -> ScoredParts:
    """Several sets of good parts as one."""
    if len(parts) == 1:
        return parts[0]
    return ScoredParts(" + ".join(part.source for part in parts), np.concatenate([part.scores for part in parts]),
                       [name for part in parts for name in part.names], [s for part in parts for s in part.skipped],
                       [n for part in parts for n in part.nan])


def _shown_anyway(path: Path) -> ThresholdRecord | None:
    """A refused history entry's record, to show beside its problem (None when it is not a record at all)."""
    try:
        return load_record(path, path.parent)
    except ThresholdError:
        return None


def finite(value: Any) -> Any:
    """`value` with NaN and infinities as None: a hand-edited history entry must not stop the page (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite(item) for item in value]
    return value
