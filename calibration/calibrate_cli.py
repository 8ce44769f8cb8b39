"""`daad calibrate`: set a product's threshold from good (and defective) parts, or check it for drift.

Nothing is written until every part has been scored and the threshold chosen; threshold.json is
then replaced atomically (the previous one stays in thresholds/), so a crash, a kill or a bad
folder leaves the threshold the line runs on untouched.
"""

from __future__ import annotations

import argparse
import getpass
import math
import sys
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from calibration.calibrate import CalibrationSettings, calibrate
from calibration.drift import check_drift
from calibration.methods import METHODS
from calibration.outliers import upper_outliers
from calibration.report import calibration_summary, drift_summary
from calibration.save import Saved, part_counts, save_calibration, threshold_record
from calibration.scoring import ScoredParts, check_enough_good, score_folder, score_source
from runtime.atomic import remove_orphan_temp_files
from runtime.backends import Backend
from runtime.backends.options import BackendOptions, add_backend_options
from runtime.bundle import Bundle, open_bundle
from runtime.errors import DaadError, DataError, ThresholdError
from runtime.lock import LockedError, LockHolder
from runtime.threshold import HISTORY_DIR, LOCK_FILE, check_binding, read_threshold, threshold_lock

SHOWN_NAMES = 5  # unreadable / NaN / outlier parts named on stderr before "and N more"

EPILOG = """\
examples:
  daad calibrate --bundle line3 --good parts/good
      threshold from good parts only; aims at 0.5% false rejects
  daad calibrate --bundle line3 --good parts/good --defect parts/bad --method recall --target-recall 0.95
      the highest threshold that still catches 95% of the known defects
  daad calibrate --bundle line3 --source 0 --frames 600 --note "after lens cleaning"
      600 frames of good parts straight from camera 0
  daad calibrate --check --bundle line3 --good parts/today
      is the calibrated threshold still right? exit 0 = yes, 1 = the line drifted

See docs/CALIBRATION.md for the procedure at the line.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daad calibrate",
        description="Set the threshold of a bundle from good (and optionally defective) parts, scored on\n"
        "the backend and precision that will run in production. Writes BUNDLE/threshold.json\n"
        "(the previous one is kept in BUNDLE/thresholds/) and BUNDLE/calibration.png.\n"
        "With --check, measures the current threshold on fresh parts instead.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bundle", required=True, type=Path, help="bundle folder written by `daad export`")
    parser.add_argument("--check", action="store_true",
                        help="do not calibrate: test the current threshold on fresh parts (exit 1 if drifted)")
    parts = parser.add_mutually_exclusive_group(required=True)
    parts.add_argument("--good", type=Path, metavar="DIR", help="folder of images of good parts")
    parts.add_argument("--source", metavar="SRC",
                       help="take good parts from a camera, stream, video or image folder (see `daad run --help`)")
    parser.add_argument("--frames", type=int, default=None, metavar="N", help="how many frames to take from --source")
    parser.add_argument("--defect", type=Path, default=None, metavar="DIR",
                        help="folder of images of known defective parts")
    parser.add_argument("--method", choices=METHODS, default="quantile",
                        help="quantile: from good parts, aims at --target-frr (default); f1: best F1 on "
                        "good vs. defect; recall: the highest threshold that catches --target-recall of the defects")
    parser.add_argument("--target-frr", type=float, default=0.005,
                        help="quantile: the share of good parts you accept to reject (default 0.005 = 5 in 1000)")
    parser.add_argument("--target-recall", type=float, default=None,
                        help="recall: the share of defects that must be caught, e.g. 0.95")
    parser.add_argument("--confidence", type=float, default=0.95,
                        help="confidence of the stated bounds and of the drift tests (default 0.95)")
    add_backend_options(parser, backend=None, precision=None, unset="; with --check, what threshold.json was calibrated on")
    parser.add_argument("--keep-outliers", action="store_true",
                        help="keep good images that score far above the others in the threshold (by default they "
                        "are left out and named: one damaged image must not move the line)")
    parser.add_argument("--wait", type=seconds, default=0.0, metavar="SECONDS",
                        help="when another calibration of the bundle is running, wait up to this long for it to "
                        "finish instead of stopping at once (default 0)")
    parser.add_argument("--note", default="", help="free text kept in threshold.json, e.g. who calibrated and why")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    return parser


def seconds(text: str) -> float:
    """argparse type of --wait: a finite number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds, 0 or more (e.g. 600), got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.source is not None and args.frames is None:
        raise DataError("--source needs --frames N: how many frames of good parts to take from it")
    bundle = open_bundle(args.bundle)
    return run_check(args, bundle) if args.check else run_calibration(args, bundle)


def run_calibration(args: argparse.Namespace, bundle: Bundle) -> int:
    try:
        settings = CalibrationSettings(
            args.method, args.target_frr, args.target_recall, args.confidence, args.keep_outliers
        )
    except ValueError as exc:
        raise DaadError(f"{exc}: see `daad calibrate --help`") from exc
    if args.method != "quantile" and args.defect is None:
        raise DaadError(f"--method {args.method} needs known defective parts: pass --defect DIR")
    try:
        with threshold_lock(bundle, args.wait, partial(_waiting, bundle, args.wait)) as died:
            if died is not None:
                _warn(f"took over {bundle.root / LOCK_FILE} from a calibration that is no longer running ({died})")
            for folder in (bundle.root, bundle.root / HISTORY_DIR):
                removed = remove_orphan_temp_files(folder)
                if removed:
                    _warn(f"removed {len(removed)} temp file(s) that killed writes left in {folder}: "
                          f"{name_list([path.name for path in removed])}")  # fmt: skip
            return _calibrate_locked(args, bundle, settings)
    except LockedError as exc:
        if args.wait:
            raise
        raise LockedError(f"{exc} (or pass --wait SECONDS to wait for it)") from exc


def _waiting(bundle: Bundle, wait_s: float, holder: LockHolder | None) -> None:
    _warn(f"another calibration of {bundle.root} is running ({holder or 'holder unknown'}): "
          f"waiting up to {wait_s:g} s for it to finish")


def _calibrate_locked(args: argparse.Namespace, bundle: Bundle, settings: CalibrationSettings) -> int:
    with BackendOptions.from_args(args).filled("auto", "fp32").open(bundle) as backend:
        good, defect = _score_parts(backend, bundle, args)
    calibrate_and_save(bundle, good, defect, settings, backend, args.note)
    return 0


def calibrate_and_save(bundle: Bundle, good: ScoredParts, defect: ScoredParts | None, settings: CalibrationSettings,
                       backend: Backend, note: str, warn: Callable[[str], None] | None = None) -> Saved:  # fmt: skip
    """Threshold scored parts, print what it promises, save threshold.json (+ history) and calibration.png.

    `daad calibrate` and `daad teach` end here; call under runtime.threshold.threshold_lock."""
    warn = warn or _warn
    check_enough_good(good)
    result = calibrate(good.scores, _scores(defect), settings, good.names)
    if result.good_outliers:
        verdict = "kept (--keep-outliers)" if settings.keep_outliers else "left out of the threshold"
        warn(f"{len(result.good_outliers)} image(s) in {good.source} score far above the other good parts, "
             f"{verdict}: {name_list([name for name, _ in result.good_outliers])}")  # fmt: skip
    counts = part_counts(result, good, defect)
    record = threshold_record(bundle, result, counts, backend.name, backend.precision, note, getpass.getuser())
    print("\n".join(calibration_summary(result, counts)), flush=True)  # before the writes: a failed one loses nothing
    saved = save_calibration(bundle, record, good.scores, _scores(defect))
    print(f"wrote {saved.threshold_path} and {saved.plot_path} (earlier thresholds are kept in {bundle.root / HISTORY_DIR})")
    return saved


def run_check(args: argparse.Namespace, bundle: Bundle) -> int:
    record = read_threshold(bundle)
    if record is None:
        raise ThresholdError(
            f"{bundle.threshold_path} is missing: there is nothing to check yet. "
            f"Calibrate first with `daad calibrate --bundle {bundle.root} --good DIR`."
        )
    options = BackendOptions.from_args(args).filled(record.backend, record.precision)
    check_binding(record, bundle, options.backend_name(bundle), options.precision)
    with options.open(bundle) as backend:
        good, defect = _score_parts(backend, bundle, args)
    outliers = [name for name, flagged in zip(good.names, upper_outliers(good.scores)) if flagged]
    if outliers:
        _warn(f"{len(outliers)} image(s) in {good.source} score far above the other good parts (damaged images, "
              f"another product?); they stay in the check: {name_list(outliers)}")  # fmt: skip
    result = check_drift(record, good.scores, _scores(defect))
    print("\n".join(drift_summary(result, record.threshold)))
    return 1 if result.drifted else 0


def _scores(parts: ScoredParts | None) -> np.ndarray | None:
    return None if parts is None else parts.scores


def _score_parts(backend: Backend, bundle: Bundle, args: argparse.Namespace) -> tuple[ScoredParts, ScoredParts | None]:
    progress = not args.no_progress
    if args.good is not None:
        good = score_folder(backend, args.good, bundle.preprocess, args.batch, progress)
    else:
        good = score_source(backend, args.source, args.frames, bundle.preprocess, args.batch, progress)
        delivered = good.scores.size + len(good.skipped) + len(good.nan)
        if delivered < args.frames:
            print(f"daad calibrate: {args.source} ended after {delivered} frames, not {args.frames}", file=sys.stderr)
    defect = None
    if args.defect is not None:
        defect = score_folder(backend, args.defect, bundle.preprocess, args.batch, progress)
    for parts in (good, defect):
        if parts is not None:
            _report_left_out(parts)
    return good, defect


def _report_left_out(parts: ScoredParts) -> None:
    """Name what was not scored; refuse when nothing was."""
    left_out = (
        ("skipped", parts.skipped),
        ("scored NaN, left out", parts.nan),
        ("are grey, given to a colour model: used with the grey in all three channels", parts.grey),
    )
    for what, names in left_out:
        if names:
            _warn(f"{len(names)} image(s) in {parts.source} {what}: {name_list(names)}")
    if parts.scores.size == 0:
        raise DataError(
            f"no usable score from {parts.source}: {len(parts.skipped)} unreadable or too small, "
            f"{len(parts.nan)} NaN. "
            "A NaN score means the model cannot score these images: check that they show the product the "
            "bundle was trained on, and re-export the bundle if every image gives NaN."
        )


def name_list(names: list[str]) -> str:
    """The first SHOWN_NAMES names and how many more: a warning names parts without flooding the screen."""
    more = len(names) - SHOWN_NAMES
    return ", ".join(names[:SHOWN_NAMES]) + (f" and {more} more" if more > 0 else "")


def _warn(text: str) -> None:
    print(f"daad calibrate: {text}", file=sys.stderr)
