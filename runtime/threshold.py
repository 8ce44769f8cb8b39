"""threshold.json: the per-product threshold, bound to one model, backend and precision.

calibration/ measures and writes it; the camera loop reads it and refuses one that was measured
on another model, backend or precision: the same model scores differently on ONNX Runtime and on a
TensorRT engine (fused layers, TF32 or fp16 arithmetic), and a threshold in the tail of the good
parts' scores moves with such shifts, so a threshold is only trusted where it was measured.

Every threshold that became active is kept in thresholds/, and the newest entry there is always
the active one: threshold.json is written first and its history entry second, under the bundle's
threshold lock, and a threshold.json that is not the newest entry (a crash between the two
writes, or an older entry copied back by hand) is filed into history before the next one is written.
"""

from __future__ import annotations

import json
import math
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from runtime.atomic import atomic_write_bytes, atomic_write_json
from runtime.bundle import Bundle
from runtime.errors import ThresholdError
from runtime.lock import LockHolder, exclusive

HISTORY_DIR = "thresholds"
LOCK_FILE = "threshold.lock"
_HISTORY_NAME = re.compile(r"^threshold-(?P<stamp>.+?)(?:-(?P<serial>\d+))?\.json$")


@dataclass
class ThresholdRecord:
    """A calibrated threshold and the evidence behind it."""

    threshold: float
    model_sha256: str
    backend: str
    precision: str
    method: str = "quantile"
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    note: str = ""
    saved_by: str = ""  # the user (command line) or the name typed in the web console
    targets: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    rates: dict[str, Any] = field(default_factory=dict)
    score_stats: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ThresholdRecord":
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})


def read_threshold(bundle: Bundle) -> ThresholdRecord | None:
    """The bundle's active threshold, or None when it has not been calibrated yet."""
    if not bundle.threshold_path.exists():
        return None
    return read_threshold_file(bundle, bundle.threshold_path)


def read_threshold_file(bundle: Bundle, path: Path) -> ThresholdRecord:
    """The one reader of a threshold that is about to be judged on: threshold.json at start-up and after
    a save, a history entry rolled back to, the threshold `--check` measures.

    Refuses (ThresholdError, one line naming `path`) a file that is not a threshold record and a
    threshold that `implausible` rejects, so no path puts a value live that another would refuse.
    """
    record = load_record(path, bundle.root)
    problem = implausible(record, bundle.metadata.score_stats)
    if problem:
        raise ThresholdError(f"{path} holds threshold {_short(record.threshold)}, {problem}: "
                             f"{REDO.format(root=bundle.root)}.")
    record.threshold = float(record.threshold)
    return record


def load_record(path: Path, root: Path) -> ThresholdRecord:
    """A threshold file as a record, its fields of the types the code expects; not yet judged plausible."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        record = ThresholdRecord.from_dict(data) if isinstance(data, dict) else None
    except RecursionError:  # json's own limit: a hand-made file nested thousands deep
        raise ThresholdError(f"{path} is corrupt (JSON nested too deeply): {REDO.format(root=root)}.") from None
    except (OSError, ValueError, TypeError) as exc:
        raise ThresholdError(f"{path} is corrupt ({_one_line(exc)}): {REDO.format(root=root)}.") from exc
    problem = "is not a JSON object of a threshold" if record is None else malformed(record)
    if problem:
        raise ThresholdError(f"{path} {problem}: {REDO.format(root=root)}.")
    return record


# The fix every refusal names: only commands and pages that exist for every reader's caller.
REDO = ("re-run `daad calibrate --bundle {root} --good DIR`, or roll back to an earlier threshold "
        "on the console's History page")
# How far outside the known scores a (hand-edited) threshold may sit, in widths of their range.
PLAUSIBLE_SPAN = 100.0
# The graph's score is float32: a threshold beyond its largest finite value judges every part alike.
FLOAT32_MAX = 3.4028234663852886e38


def malformed(record: ThresholdRecord) -> str:
    """What in a record read from JSON has the wrong type for the code that uses it ("" when nothing)."""
    for name, kind in (("model_sha256", str), ("backend", str), ("precision", str), ("method", str),
                       ("created", str), ("note", str), ("saved_by", str), ("targets", dict), ("counts", dict),
                       ("rates", dict), ("score_stats", dict)):
        if not isinstance(getattr(record, name), kind):
            return f"has {name} of type {type(getattr(record, name)).__name__}, not {kind.__name__}"
    return ""


def implausible(record: ThresholdRecord, model_stats: dict[str, Any] | None = None) -> str:
    """Why `record.threshold` cannot be judged on ("" when it can): the one plausibility rule.

    It must be a JSON number (not true/false or a string) and finite: NaN would pass nothing and
    crash nothing visibly, Infinity would pass every part. It must lie within the float32 range the
    graph scores in, and within PLAUSIBLE_SPAN times the range of the scores known to it: those
    the threshold was calibrated on (its `score_stats`) and the model's own (model.json's
    `score_stats`, from export), so a threshold of 1e308 is refused even where a hand-edited file
    lost its statistics, while a hand-raised one is not.
    """
    value = record.threshold
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"which is not a number ({type(value).__name__})"
    if not math.isfinite(value):
        return "which is not a finite number"
    if abs(value) >= FLOAT32_MAX:
        return "beyond the float32 range the model scores in, so it would judge every part alike"
    bounds = score_bounds([*record.score_stats.values(), model_stats or {}])
    if not bounds:
        return ""
    low, high = bounds
    margin = PLAUSIBLE_SPAN * max(high - low, abs(high), abs(low), 1e-12)
    if not low - margin <= value <= high + margin:
        return (f"far outside the scores known for this model ({low:.6g} to {high:.6g}): "
                "the file was edited or damaged")
    return ""


def score_bounds(stats: list[Any]) -> tuple[float, float] | None:
    """The lowest and highest finite `min`/`max` among score statistics dicts (None when none has one)."""
    found = [entry.get(key) for entry in stats if isinstance(entry, dict) for key in ("min", "max")]
    finite = [float(bound) for bound in found
              if isinstance(bound, (int, float)) and not isinstance(bound, bool) and math.isfinite(bound)]
    return (min(finite), max(finite)) if finite else None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def check_binding(
    record: ThresholdRecord, bundle: Bundle, backend: str, precision: str, path: Path | None = None
) -> None:
    """Refuse a threshold measured on another model, backend or precision; the message names both."""
    where = path or bundle.threshold_path
    if record.model_sha256 != bundle.sha256:
        raise ThresholdError(
            f"{where} was calibrated for model sha256 {record.model_sha256[:12]}…, but this bundle's model.onnx "
            f"is {bundle.sha256[:12]}…: re-run `daad calibrate --bundle {bundle.root}` for this model."
        )
    if record.backend != backend:
        raise ThresholdError(
            f"{where} was calibrated on {record.backend}, but this run uses {backend} (backends score slightly "
            f"differently): re-run `daad calibrate --bundle {bundle.root} --backend {backend} --precision {precision}` "
            f"on good parts, or run with --backend {record.backend}."
        )
    if record.precision != precision:
        raise ThresholdError(
            f"{where} was calibrated at precision {record.precision}, but this run uses {precision}: "
            f"re-run `daad calibrate --bundle {bundle.root}` with the backend and precision that will run."
        )


@contextmanager
def threshold_lock(bundle: Bundle, wait_s: float = 0.0,
                   waiting: Callable[[LockHolder | None], None] | None = None) -> Iterator[LockHolder | None]:
    """Hold the bundle's threshold lock (BUNDLE/threshold.lock) for a whole calibration.

    A second calibration of the same bundle is refused while the first runs (or waits for it up
    to `wait_s` seconds, see runtime.lock.exclusive); one that finds the lock of a calibration
    that died takes it over and gets that holder back, to say so.
    """
    with exclusive(bundle.root / LOCK_FILE, f"calibration of {bundle.root}", wait_s, waiting) as previous:
        yield previous


def write_threshold(bundle: Bundle, record: ThresholdRecord) -> Path:
    """Make `record` the active threshold, then its newest history entry. Call under threshold_lock.

    threshold.json goes first, so history never gains a threshold that did not become active;
    a crash between the two writes is mended by the next call (`_file_active_threshold`).
    """
    problem = implausible(record, bundle.metadata.score_stats)
    if problem:
        raise ThresholdError(f"refused to write threshold {_short(record.threshold)} to {bundle.threshold_path}, "
                             f"{problem}; nothing was written")
    _file_active_threshold(bundle)
    written = atomic_write_json(bundle.threshold_path, record.to_dict())
    _add_history(bundle, written.read_bytes())
    return written


def history_entries(bundle: Bundle) -> list[Path]:
    """thresholds/threshold-*.json, oldest first (by the time in the name, then the serial)."""
    folder = bundle.root / HISTORY_DIR
    if not folder.is_dir():
        return []
    entries = [(key, path) for path in folder.iterdir() if (key := _history_key(path.name)) is not None]
    return [path for _, path in sorted(entries)]


def _history_key(name: str) -> tuple[datetime, int] | None:
    match = _HISTORY_NAME.match(name)
    if match is None:
        return None
    stamp = re.sub(r"T(\d\d)(\d\d)(\d\d)", r"T\1:\2:\3", match["stamp"])
    stamp = stamp.replace("Z", "+00:00").replace("+0000", "+00:00")
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when, int(match["serial"] or 1)


def _file_active_threshold(bundle: Bundle) -> None:
    """Add the current threshold.json, as it is, to history when it is not the newest entry there.

    Only a threshold the line could use counts (read_threshold accepts it): a missing, corrupt or
    non-finite one was never in use, so there is nothing to keep.
    """
    try:
        if read_threshold(bundle) is None:
            return
    except ThresholdError:
        return
    active = bundle.threshold_path.read_bytes()
    entries = history_entries(bundle)
    if entries and entries[-1].read_bytes() == active:
        return
    _add_history(bundle, active)


def _add_history(bundle: Bundle, data: bytes) -> Path:
    """File `data` as the newest entry, named by the time it is filed: the time it became active."""
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    stamp = now.replace("+00:00", "Z").replace(":", "")
    history = bundle.root / HISTORY_DIR
    copy = history / f"threshold-{stamp}.json"
    serial = 1
    while copy.exists():  # two calibrations within one timestamp keep both copies
        serial += 1
        copy = history / f"threshold-{stamp}-{serial}.json"
    return atomic_write_bytes(copy, data)
