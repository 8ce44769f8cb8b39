"""runtime/threshold.py's one reader: every path that puts a threshold live refuses the same files.

Real bundles (tests/tiny_bundle.py), real `daad run` and `daad calibrate --check` through the CLI.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_sources import part_frames, write_video

from calibration.calibrate_cli import build_parser as calibrate_parser
from runtime.bundle import open_bundle, read_metadata, write_metadata
from runtime.cli import main as daad
from runtime.errors import ThresholdError
from runtime.threshold import ThresholdRecord, read_threshold, write_threshold


def write_raw(bundle_root: Path, text: str) -> Path:
    (bundle_root / "threshold.json").write_text(text)
    return bundle_root / "threshold.json"


def record_text(bundle_root: Path, threshold: str, **fields) -> str:
    """A threshold.json as calibration writes it, with `threshold` spelled as given and no score_stats."""
    bundle = open_bundle(bundle_root)
    record = ThresholdRecord(threshold=0.25, model_sha256=bundle.sha256, backend="onnxruntime", precision="fp32")
    return json.dumps(record.to_dict() | fields).replace('"threshold": 0.25', f'"threshold": {threshold}')


def refused_by_run_and_check(bundle_root: Path, tmp_path: Path, capsys) -> list[str]:
    video = write_video(tmp_path / "line.avi", part_frames(4))
    assert daad(["run", "--bundle", str(bundle_root), "--source", str(video), "--events", str(tmp_path / "e.jsonl")]) == 2
    assert daad(["calibrate", "--bundle", str(bundle_root), "--check", "--good", str(tmp_path)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and not (tmp_path / "e.jsonl").exists()
    return errors


def test_1e308_without_score_stats_is_refused(tiny_bundle, tmp_path, capsys) -> None:
    write_raw(tiny_bundle, record_text(tiny_bundle, "1e308"))
    errors = refused_by_run_and_check(tiny_bundle, tmp_path, capsys)
    assert all("threshold.json holds threshold 1e+308" in line and "float32" in line for line in errors)


def test_a_threshold_far_from_the_models_own_scores_is_refused_without_score_stats(tiny_bundle, tmp_path, capsys) -> None:
    write_raw(tiny_bundle, record_text(tiny_bundle, "1000000.0"))
    assert read_threshold(open_bundle(tiny_bundle)).threshold == 1e6  # nothing to compare it with: accepted
    metadata = read_metadata(tiny_bundle)
    metadata.score_stats = {"min": 0.01, "median": 0.05, "max": 0.5, "images": 40}  # what export records
    write_metadata(tiny_bundle, metadata)
    errors = refused_by_run_and_check(tiny_bundle, tmp_path, capsys)
    assert all("far outside the scores known for this model (0.01 to 0.5)" in line for line in errors)
    write_raw(tiny_bundle, record_text(tiny_bundle, "0.9"))  # raised by hand, still within reason
    assert read_threshold(open_bundle(tiny_bundle)).threshold == 0.9


@pytest.mark.parametrize("text", [
    '{"threshold": ' + "[" * 200_000 + "]" * 200_000 + "}",
    "[" * 200_000,
    '["a list"]',
    "\xff\xfe",
])
def test_a_damaged_file_is_one_line_naming_it(text, tiny_bundle, tmp_path, capsys) -> None:
    write_raw(tiny_bundle, text)
    errors = refused_by_run_and_check(tiny_bundle, tmp_path, capsys)
    assert all("threshold.json" in line and ("corrupt" in line or "not a JSON object" in line) for line in errors)
    assert all(len(line) < 400 for line in errors)


@pytest.mark.parametrize("field, value", [("score_stats", []), ("model_sha256", 5), ("counts", "x")])
def test_fields_of_the_wrong_type_are_refused(field, value, tiny_bundle, tmp_path, capsys) -> None:
    write_raw(tiny_bundle, record_text(tiny_bundle, "0.25", **{field: value}))
    errors = refused_by_run_and_check(tiny_bundle, tmp_path, capsys)
    assert all(f"has {field} of type" in line for line in errors)


def test_the_refusal_names_only_flags_that_exist(tiny_bundle, tmp_path, capsys) -> None:
    write_raw(tiny_bundle, record_text(tiny_bundle, "NaN"))
    error = refused_by_run_and_check(tiny_bundle, tmp_path, capsys)[1]
    flags = set(re.findall(r"(?<![\w-])--[a-z][\w-]*", error))
    known = {option for action in calibrate_parser()._actions for option in action.option_strings}
    assert flags and flags <= known, flags - known


def test_an_implausible_threshold_is_never_written(tiny_bundle) -> None:
    bundle = open_bundle(tiny_bundle)
    record = ThresholdRecord(threshold=float("inf"), model_sha256=bundle.sha256, backend="onnxruntime",
                             precision="fp32")
    with pytest.raises(ThresholdError, match="nothing was written"):
        write_threshold(bundle, record)
    assert not bundle.threshold_path.exists() and not (tiny_bundle / "thresholds").exists()
