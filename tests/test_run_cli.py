"""`daad run` end to end: threshold refusals, outputs on disk, SIGTERM in a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from test_sources import defect_pattern, part_frames, write_video

from runtime.bundle import open_bundle
from runtime.cli import main as daad
from runtime.threshold import ThresholdRecord, write_threshold

ROOT = Path(__file__).resolve().parents[1]


def calibrate(bundle_root: Path, threshold: float = 0.3, precision: str = "fp32", sha: str | None = None,
              backend: str = "onnxruntime") -> Path:
    bundle = open_bundle(bundle_root)
    record = ThresholdRecord(threshold=threshold, model_sha256=sha or bundle.sha256, backend=backend,
                             precision=precision)
    return write_threshold(bundle, record)


@pytest.fixture
def video(tmp_path) -> Path:
    return write_video(tmp_path / "line.avi", part_frames(12))


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_no_threshold_refuses_and_says_how_to_get_one(tiny_bundle, video, capsys) -> None:
    assert daad(["run", "--bundle", str(tiny_bundle), "--source", str(video)]) == 2
    error = capsys.readouterr().err
    assert "threshold.json is missing" in error and "daad calibrate" in error and "--threshold" in error


def test_threshold_of_another_model_refuses_naming_both(tiny_bundle, video, capsys) -> None:
    calibrate(tiny_bundle, sha="ab" * 32)
    assert daad(["run", "--bundle", str(tiny_bundle), "--source", str(video)]) == 2
    error = capsys.readouterr().err
    assert "abababababab" in error and open_bundle(tiny_bundle).sha256[:12] in error


def test_threshold_of_another_precision_refuses_naming_both(tiny_bundle, video, capsys) -> None:
    calibrate(tiny_bundle, precision="fp16")
    assert daad(["run", "--bundle", str(tiny_bundle), "--source", str(video), "--backend", "onnxruntime"]) == 2
    error = capsys.readouterr().err
    assert "precision fp16" in error and "uses fp32" in error


def test_threshold_of_another_backend_refuses_naming_the_calibration_to_run(tiny_bundle, video, capsys) -> None:
    calibrate(tiny_bundle, backend="tensorrt")
    assert daad(["run", "--bundle", str(tiny_bundle), "--source", str(video)]) == 2  # auto: onnxruntime here
    error = capsys.readouterr().err
    assert "calibrated on tensorrt, but this run uses onnxruntime" in error
    assert f"daad calibrate --bundle {tiny_bundle} --backend onnxruntime --precision fp32" in error


def test_source_that_cannot_open_exits_non_zero_naming_it(tiny_bundle, tmp_path, capsys) -> None:
    calibrate(tiny_bundle)
    assert daad(["run", "--bundle", str(tiny_bundle), "--source", str(tmp_path / "nowhere.avi")]) == 2
    assert "nowhere.avi" in capsys.readouterr().err


def test_run_writes_events_ng_images_video_and_summary(tiny_bundle, video, tmp_path, capsys) -> None:
    threshold_file = calibrate(tiny_bundle)
    events, ng, output = tmp_path / "out" / "events.jsonl", tmp_path / "ng", tmp_path / "overlay.avi"
    argv = ["run", "--bundle", str(tiny_bundle), "--source", str(video), "--events", str(events),
            "--save-ng", str(ng), "--output", str(output), "--threads", "1", "--artefact-queue", "12"]
    assert daad(argv) == 0
    captured = capsys.readouterr()
    lines = read_events(events)
    assert [line["verdict"] == "NG" for line in lines] == defect_pattern(12)
    assert len(list(ng.glob("*.png"))) == 3
    capture = cv2.VideoCapture(str(output))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 12 and capture.get(cv2.CAP_PROP_FPS) == 10
    summary = json.loads((tmp_path / "out" / "events.summary.json").read_text())
    assert summary == json.loads(captured.out)
    assert summary["frames"] == 12 and summary["verdicts"] == {"OK": 9, "NG": 3, "FAULT": 0}
    assert summary["threshold_from"] == str(threshold_file) and summary["mode"] == "lossless"
    assert summary["stopped_by"] == "end of source" and summary["read"] == 12 and summary["dropped"] == 0
    assert summary["backend"] == "onnxruntime" and "onnxruntime" in captured.err and summary["ng_saved"] == 3
    assert summary["artefacts_dropped"] == 0 and summary["latency_ms"]["outputs"]["count"] == 12
    # A second run appends to the same log.
    assert daad(argv + ["--max-frames", "5", "--threshold", "0.9"]) == 0
    assert len(read_events(events)) == 17 and read_events(events)[-1]["threshold"] == 0.9
    # Every line names its run: (run_id, frame) identifies an event across runs appending to one file.
    run_ids = [line["run_id"] for line in read_events(events)]
    assert set(run_ids[:12]) == {summary["run_id"]} and len(set(run_ids[12:])) == 1 and run_ids[12] != run_ids[0]


def test_sigterm_mid_run_leaves_complete_event_log_and_summary(tiny_bundle, video, tmp_path) -> None:
    events, summary_file = tmp_path / "events.jsonl", tmp_path / "summary.json"
    command = [sys.executable, "-m", "runtime", "run", "--bundle", str(tiny_bundle), "--source", str(video),
               "--loop", "--threshold", "0.3", "--events", str(events), "--summary", str(summary_file),
               "--threads", "1", "--stats-every", "0.1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started, first_event = time.monotonic(), None
        while time.monotonic() < started + 60 and process.poll() is None:
            # Long enough for a few stats lines (0.1 s apart, counted from the loop's start, not
            # from exec), and well into the looping video.
            lines = events.read_text().count("\n") if events.exists() else 0
            first_event = first_event or (time.monotonic() if lines else None)
            if first_event and time.monotonic() > first_event + 0.5 and lines >= 100:
                break
            time.sleep(0.05)
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    lines = read_events(events)  # every line parses: none torn
    summary = json.loads(summary_file.read_text())
    assert summary["stopped_by"] == "SIGTERM" and summary["frames"] == len(lines) >= 100
    assert [line["frame"] for line in lines] == list(range(len(lines)))
    assert summary["read"] == summary["frames"] + summary["unprocessed"]
    assert "fps" in err and json.loads(out) == summary


@pytest.mark.parametrize("collision", ["output-is-source", "events-is-summary", "events-in-bundle",
                                       "save-ng-is-bundle", "output-in-image-folder", "summary-is-mqtt-key"])
def test_outputs_that_collide_with_inputs_or_each_other_are_refused_before_writing(
        collision, tiny_bundle, video, tmp_path, capsys) -> None:
    calibrate(tiny_bundle)
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), part_frames(1)[0])
    model_json = (tiny_bundle / "model.json").read_bytes()
    video_bytes = video.read_bytes()
    key = tmp_path / "client.key"
    key.write_text("-----BEGIN PRIVATE KEY-----")
    base = ["run", "--bundle", str(tiny_bundle), "--threshold", "0.3"]
    argv = {
        "output-is-source": ["--source", str(video), "--output", str(video)],
        "events-is-summary": ["--source", str(video), "--events", str(tmp_path / "x"), "--summary", str(tmp_path / "x")],
        "events-in-bundle": ["--source", str(video), "--events", str(tiny_bundle / "model.json")],
        "save-ng-is-bundle": ["--source", str(video), "--save-ng", str(tiny_bundle)],
        "output-in-image-folder": ["--source", str(images / "*.png"), "--output", str(images / "o.avi")],
        "summary-is-mqtt-key": ["--source", str(video), "--summary", str(key), "--mqtt-key", str(key)],
    }[collision]
    assert daad(base + argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "choose" in error or "give them different paths" in error
    assert (tiny_bundle / "model.json").read_bytes() == model_json and video.read_bytes() == video_bytes
    assert not (tmp_path / "x").exists() and not (images / "o.avi").exists()
    assert key.read_text() == "-----BEGIN PRIVATE KEY-----"
    assert sorted(p.name for p in tiny_bundle.iterdir()) == ["model.json", "model.onnx", "threshold.json", "thresholds"]


def test_two_runs_into_one_ng_folder_with_the_users_images_keep_everything_apart(tiny_bundle, tmp_path) -> None:
    images = tmp_path / "test"
    for label in ("crack", "good"):
        (images / label).mkdir(parents=True)
        for index, frame in enumerate(part_frames(8)):
            cv2.imwrite(str(images / label / f"{index:03d}.png"), frame)
    ng, events = tmp_path / "ng", tmp_path / "events.jsonl"
    ng.mkdir()
    for index in range(40):
        cv2.imwrite(str(ng / f"user_{index:02d}.png"), part_frames(1)[0])
    argv = ["run", "--bundle", str(tiny_bundle), "--source", str(images / "*" / "*.png"), "--threshold", "0.3",
            "--events", str(events), "--save-ng", str(ng), "--threads", "1", "--artefact-queue", "64"]
    assert daad(argv) == 0
    assert len(list(ng.glob("*.png"))) == 40 + 4
    assert daad(argv + ["--save-ng-max-mb", "0.000001"]) == 0  # a cap no image fits
    lines = read_events(events)
    assert len({line["run_id"] for line in lines}) == 2 and len({(line["run_id"], line["frame"]) for line in lines}) == 32
    assert [line["file"] for line in lines[:9]] == [f"crack/{index:03d}.png" for index in range(8)] + ["good/000.png"]
    assert len(list(ng.glob("user_*.png"))) == 40  # the user's images: none counted, none removed
    summaries = json.loads((tmp_path / "events.summary.json").read_text())
    assert summaries["ng_saved"] == 4 and summaries["ng_removed"] == 4 + 4  # the earlier run's and its own
    assert sorted(path.name for path in ng.iterdir()) == [".daad-ng.jsonl"] + [f"user_{i:02d}.png" for i in range(40)]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e308", "true", '"0.3"'])
def test_a_threshold_that_is_not_a_plausible_finite_number_is_refused_by_every_reader(
        value, tiny_bundle, video, tmp_path, capsys) -> None:
    threshold_file = calibrate(tiny_bundle)
    record = json.loads(threshold_file.read_text())
    record["score_stats"] = {"good": {"min": 0.01, "max": 0.2, "median": 0.05, "quantiles": [0.01, 0.05, 0.2]}}
    threshold_file.write_text(json.dumps(record).replace('"threshold": 0.3', f'"threshold": {value}'))
    events = tmp_path / "events.jsonl"
    assert daad(["run", "--bundle", str(tiny_bundle), "--source", str(video), "--events", str(events)]) == 2
    assert daad(["calibrate", "--bundle", str(tiny_bundle), "--check", "--good", str(tmp_path)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all("threshold.json holds threshold" in line and "daad calibrate" in line
                                    for line in errors)
    assert not events.exists()


def test_a_hand_raised_threshold_within_reason_is_still_used(tiny_bundle, video, tmp_path, capsys) -> None:
    threshold_file = calibrate(tiny_bundle, threshold=0.3)
    record = json.loads(threshold_file.read_text())
    record["score_stats"] = {"good": {"min": 0.01, "max": 0.2}}
    record["threshold"] = 0.45
    threshold_file.write_text(json.dumps(record))
    assert daad(["run", "--bundle", str(tiny_bundle), "--source", str(video)]) == 0
    assert json.loads(capsys.readouterr().out)["threshold"] == 0.45
