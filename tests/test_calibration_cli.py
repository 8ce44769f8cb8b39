"""`daad calibrate` end to end: real PNG parts, the tiny ONNX bundle in ONNX Runtime, real files.

tiny_bundle scores a frame by its largest deviation from mid-grey, so noisy grey frames are good
parts with spread-out scores and a bright blob is a defect.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tiny_bundle import grey_frame, write_tiny_bundle

import calibration.calibrate_cli as calibrate_cli
from runtime.backends import open_backend
from runtime.backends import options as backend_options
from runtime.bundle import open_bundle
from runtime.cli import main as daad
from runtime.errors import OutputError, ThresholdError
from runtime.optional import cv2
from runtime.threshold import (
    HISTORY_DIR,
    LOCK_FILE,
    ThresholdRecord,
    check_binding,
    history_entries,
    read_threshold,
    write_threshold,
)

ROOT = Path(__file__).resolve().parents[1]


def noisy_grey(rng: np.random.Generator, noise: tuple[int, int], blob: int | None = None) -> np.ndarray:
    amplitude = int(rng.integers(*noise))
    frame = grey_frame(32, 32, blob=blob).astype(np.int16) + rng.integers(-amplitude, amplitude + 1, (32, 32, 3))
    return np.clip(frame, 0, 255).astype(np.uint8)


def write_parts(folder: Path, count: int, seed: int, noise=(2, 30), blob: tuple[int, int] | None = None) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for index in range(count):
        frame = noisy_grey(rng, noise, None if blob is None else int(rng.integers(*blob)))
        cv2().imwrite(str(folder / f"part{index:03d}.png"), frame)
    return folder


def tiny_scores(folder: Path) -> np.ndarray:
    """The tiny model's score, computed here with numpy from the PNGs, independently of any backend."""
    frames = [cv2().imread(str(path)) for path in sorted(folder.glob("*.png"))]
    return np.array([np.abs(f.astype(np.float64) / 255 - 0.5).mean(axis=2).max() for f in frames if f is not None])


@pytest.fixture
def good(tmp_path) -> Path:
    return write_parts(tmp_path / "good", 60, seed=1)


@pytest.fixture
def defect(tmp_path) -> Path:
    return write_parts(tmp_path / "defect", 15, seed=2, blob=(190, 256))


def calibrate(capsys, *args: object) -> tuple[int, str, str]:
    code = daad(["calibrate", *map(str, args), "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_quantile_on_good_parts_writes_record_plot_and_summary(tiny_bundle, good, capsys) -> None:
    (good / "half-written.png").write_bytes(b"\x89PNG\r\n")
    code, out, err = calibrate(capsys, "--bundle", tiny_bundle, "--good", good, "--note", "line 3, shift A")
    assert code == 0, err
    bundle = open_bundle(tiny_bundle)
    record = read_threshold(bundle)
    # 60 parts allow floor(60 * 0.005) = 0 rejects: the threshold is the highest good score.
    assert record.threshold == pytest.approx(tiny_scores(good).max(), abs=1e-6)
    assert (record.method, record.backend, record.precision, record.note) == ("quantile", "onnxruntime", "fp32",
                                                                               "line 3, shift A")
    assert record.model_sha256 == bundle.sha256
    assert record.counts["good"] == 60 and record.counts["good_skipped"] == 1 and record.counts["good_nan"] == 0
    assert record.rates["false_reject"]["count"] == 0 and record.rates["false_reject"]["upper"] > 0.04
    assert record.targets["target_frr"] == 0.005 and record.score_stats["good"]["n"] == 60
    assert out.startswith(f"threshold {record.threshold:.4g} - expect about 0 false rejects per 1000 good parts")
    assert "60 good parts cannot show" in out and "half-written.png" in err
    image = cv2().imread(str(tiny_bundle / "calibration.png"))
    assert image is not None and image.ndim == 3 and min(image.shape[:2]) > 100
    assert len(list((tiny_bundle / HISTORY_DIR).glob("threshold-*.json"))) == 1


def test_f1_and_recall_with_defects_keep_history_and_plot_roc(tiny_bundle, good, defect, capsys) -> None:
    code, out, _ = calibrate(capsys, "--bundle", tiny_bundle, "--good", good, "--defect", defect, "--method", "f1")
    assert code == 0
    first = read_threshold(open_bundle(tiny_bundle))
    assert tiny_scores(good).max() < first.threshold < tiny_scores(defect).min()
    assert first.rates["recall"]["count"] == 15 and first.rates["auroc"] == 1.0
    assert "catches 15 of 15 known defects" in out
    histogram_only_width = 700
    assert cv2().imread(str(tiny_bundle / "calibration.png")).shape[1] > histogram_only_width  # ROC panel added

    code, _, _ = calibrate(capsys, "--bundle", tiny_bundle, "--good", good, "--defect", defect,
                           "--method", "recall", "--target-recall", "0.8")
    assert code == 0
    second = read_threshold(open_bundle(tiny_bundle))
    assert second.method == "recall" and second.rates["recall"]["count"] >= 12
    history = sorted((tiny_bundle / HISTORY_DIR).glob("threshold-*.json"))
    assert [json.loads(path.read_text())["method"] for path in history] == ["f1", "recall"]


def test_check_passes_the_same_line_and_flags_a_drifted_one(tiny_bundle, good, defect, tmp_path, capsys) -> None:
    assert calibrate(capsys, "--bundle", tiny_bundle, "--good", good, "--defect", defect)[0] == 0
    same = write_parts(tmp_path / "today", 60, seed=3)
    same_defects = write_parts(tmp_path / "today-bad", 15, seed=8, blob=(190, 256))
    code, out, _ = calibrate(capsys, "--check", "--bundle", tiny_bundle, "--good", same, "--defect", same_defects)
    assert code == 0 and "ok - no drift found" in out and "catches 15 of 15" in out
    faint = write_parts(tmp_path / "faint-bad", 15, seed=9, blob=(128, 140))
    code, out, _ = calibrate(capsys, "--check", "--bundle", tiny_bundle, "--good", same, "--defect", faint)
    assert code == 1 and "fewer defects are caught" in out
    noisier = write_parts(tmp_path / "dirty-lens", 60, seed=4, noise=(25, 60))
    code, out, _ = calibrate(capsys, "--check", "--bundle", tiny_bundle, "--good", noisier)
    assert code == 1 and "DRIFTED" in out and "good parts score higher" in out


def test_source_video_file_gives_the_good_parts(tiny_bundle, tmp_path, capsys) -> None:
    video = tmp_path / "line.avi"
    rng = np.random.default_rng(5)
    writer = cv2().VideoWriter(str(video), cv2().VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    for _ in range(25):
        writer.write(noisy_grey(rng, (2, 30)))
    writer.release()
    code, out, err = calibrate(capsys, "--bundle", tiny_bundle, "--source", video, "--frames", 40)
    assert code == 0, err
    assert read_threshold(open_bundle(tiny_bundle)).counts["good"] == 25
    assert "ended after 25 frames, not 40" in err


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty folder", "no images in"),
        ("nothing readable", "none of the 3 images"),
        ("no model.json", "model.json is missing"),
        ("f1 without defects", "needs known defective parts"),
        ("source without frames", "--source needs --frames"),
        ("check before calibrating", "nothing to check"),
        ("data set root", "MVTec AD layout"),
        ("bad target", "target false-reject rate must be in"),
    ],
)
def test_bad_input_gets_a_clear_message_and_writes_nothing(case, message, tiny_bundle, good, tmp_path, capsys) -> None:
    bundle, args = tiny_bundle, ["--good", good]
    if case == "empty folder":
        args = ["--good", tmp_path / "empty"]
        (tmp_path / "empty").mkdir()
    elif case == "nothing readable":
        (tmp_path / "broken").mkdir()
        for index in range(3):
            (tmp_path / "broken" / f"{index}.png").write_bytes(b"not an image")
        args = ["--good", tmp_path / "broken"]
    elif case == "no model.json":
        (tiny_bundle / "model.json").unlink()
    elif case == "f1 without defects":
        args += ["--method", "f1"]
    elif case == "source without frames":
        args = ["--source", good]
    elif case == "check before calibrating":
        args += ["--check"]
    elif case == "data set root":
        write_parts(tmp_path / "dataset" / "test" / "good", 2, seed=6)
        args = ["--good", tmp_path / "dataset"]
    elif case == "bad target":
        args += ["--target-frr", "5"]
    code, out, err = calibrate(capsys, "--bundle", bundle, *args)
    assert code == 2 and message in err and "Traceback" not in err
    assert not (bundle / "threshold.json").exists() and not (bundle / "calibration.png").exists()


class NanOnBlackCorner:
    """A real ONNX Runtime backend whose score is NaN for frames with a black top-left pixel."""

    def __init__(self, *args, **kwargs) -> None:
        self._backend = open_backend(*args, **kwargs)
        self.name, self.precision = self._backend.name, self._backend.precision

    def infer(self, frames: np.ndarray):
        result = self._backend.infer(frames)
        result.scores[(frames[:, 0, 0] == 0).all(axis=1)] = np.nan
        return result

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self._backend.close()


def test_nan_scores_are_reported_and_never_thresholded(tiny_bundle, good, monkeypatch, capsys) -> None:
    monkeypatch.setattr(backend_options, "open_backend", NanOnBlackCorner)
    for index in range(3):
        frame = grey_frame(32, 32)
        frame[0, 0] = 0  # would score 0.5, above every good part, were it thresholded
        cv2().imwrite(str(good / f"nan{index}.png"), frame)
    code, _, err = calibrate(capsys, "--bundle", tiny_bundle, "--good", good)
    assert code == 0
    record = read_threshold(open_bundle(tiny_bundle))
    assert record.counts["good_nan"] == 3 and record.counts["good"] == 60
    assert record.threshold < 0.2 and "3 image(s)" in err and "scored NaN" in err and "nan0.png" in err

    only_nan = good.parent / "only-nan"
    only_nan.mkdir()
    for path in good.glob("nan*.png"):
        path.rename(only_nan / path.name)
    code, _, err = calibrate(capsys, "--bundle", tiny_bundle, "--good", only_nan)
    assert code == 2 and "no usable score" in err and "3 NaN" in err


def test_a_defect_folder_of_good_parts_warns_under_every_method(tiny_bundle, good, tmp_path, capsys) -> None:
    not_defects = write_parts(tmp_path / "not-defects", 15, seed=7)
    for method in ("quantile", "f1"):
        code, out, _ = calibrate(capsys, "--bundle", tiny_bundle, "--good", good, "--defect", not_defects,
                                 "--method", method)
        assert code == 0 and "warning: the defect scores are hardly higher than the good scores" in out, method
    code, out, _ = calibrate(capsys, "--bundle", tiny_bundle, "--good", good, "--defect", good)  # --defect = --good
    assert code == 0 and "warning: the defect scores are hardly higher than the good scores" in out
    assert read_threshold(open_bundle(tiny_bundle)).rates["recall"]["count"] == 0


class FailsOnSecondBatch(NanOnBlackCorner):
    calls = 0

    def infer(self, frames: np.ndarray):
        FailsOnSecondBatch.calls += 1
        if FailsOnSecondBatch.calls == 2:
            raise RuntimeError("power cut")
        return self._backend.infer(frames)


def test_a_crash_mid_calibration_leaves_the_previous_files(tiny_bundle, good, monkeypatch, capsys) -> None:
    assert calibrate(capsys, "--bundle", tiny_bundle, "--good", good)[0] == 0
    before = {name: (tiny_bundle / name).read_bytes() for name in ("threshold.json", "calibration.png")}
    monkeypatch.setattr(backend_options, "open_backend", FailsOnSecondBatch)
    with pytest.raises(RuntimeError, match="power cut"):
        calibrate_cli.main(["--bundle", str(tiny_bundle), "--good", str(good), "--no-progress"])
    assert {name: (tiny_bundle / name).read_bytes() for name in before} == before


def _record(bundle, threshold: float, note: str = "") -> ThresholdRecord:
    return ThresholdRecord(threshold=threshold, model_sha256=bundle.sha256, backend="onnxruntime", precision="fp32",
                           note=note)


def test_a_failed_write_leaves_the_old_threshold_and_no_history_entry(tiny_bundle, monkeypatch) -> None:
    bundle = open_bundle(tiny_bundle)
    write_threshold(bundle, _record(bundle, 0.25))
    before = bundle.threshold_path.read_bytes()

    def disk_full(fd: int) -> None:  # the first fsync is threshold.json's data
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OutputError, match="threshold.json.*the disk is full"):
        write_threshold(bundle, _record(bundle, 0.75))
    monkeypatch.undo()
    assert bundle.threshold_path.read_bytes() == before
    assert not list(tiny_bundle.glob(".threshold.json.*"))
    assert [_history(path) for path in history_entries(bundle)] == [0.25]


def _history(path: Path) -> float:
    return json.loads(path.read_text())["threshold"]


DIES_BETWEEN_THE_WRITES = """
import os, signal, sys
import runtime.threshold as threshold
from runtime.bundle import open_bundle
bundle = open_bundle(sys.argv[1])
threshold._add_history = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
threshold.write_threshold(bundle, threshold.ThresholdRecord(threshold=0.75, model_sha256=bundle.sha256,
                                                            backend="onnxruntime", precision="fp32"))
"""


def test_the_active_threshold_is_always_the_newest_history_entry(tiny_bundle, good, capsys) -> None:
    bundle = open_bundle(tiny_bundle)
    write_threshold(bundle, _record(bundle, 0.25))
    killed = subprocess.run([sys.executable, "-c", DIES_BETWEEN_THE_WRITES, str(tiny_bundle)], cwd=ROOT)
    assert killed.returncode == -signal.SIGKILL
    assert read_threshold(bundle).threshold == 0.75  # active, but killed before its history entry
    assert [_history(path) for path in history_entries(bundle)] == [0.25]

    assert calibrate(capsys, "--bundle", tiny_bundle, "--good", good)[0] == 0
    active = json.loads(bundle.threshold_path.read_text())
    assert [_history(path) for path in history_entries(bundle)] == [0.25, 0.75, active["threshold"]]
    assert json.loads(history_entries(bundle)[-1].read_text()) == active

    older = history_entries(bundle)[0]  # going back by hand, as docs/CALIBRATION.md says
    bundle.threshold_path.write_bytes(older.read_bytes())
    write_threshold(bundle, _record(bundle, 0.5))
    assert [_history(path) for path in history_entries(bundle)] == [0.25, 0.75, active["threshold"], 0.25, 0.5]

    bundle.threshold_path.write_text(bundle.threshold_path.read_text().replace('"threshold": 0.5', '"threshold": NaN'))
    assert calibrate(capsys, "--bundle", tiny_bundle, "--good", good)[0] == 0  # never in use: not filed
    assert [_history(path) for path in history_entries(bundle)][-2:] == [0.5, active["threshold"]]
    assert history_entries(bundle)[-1].name.endswith("Z.json")


WRITER = """
import sys
from runtime.bundle import open_bundle
from runtime.threshold import ThresholdRecord, write_threshold
bundle = open_bundle(sys.argv[1])
index = 1
while True:
    write_threshold(bundle, ThresholdRecord(threshold=float(index), model_sha256=bundle.sha256,
                                            backend="onnxruntime", precision="fp32", note="x" * 500_000,
                                            created="2026-01-01T00:00:00+00:00"))
    if index == 1:
        print("written", flush=True)
    index += 1
"""


def test_a_writer_killed_mid_write_leaves_a_valid_threshold(tiny_bundle) -> None:
    bundle = open_bundle(tiny_bundle)
    write_threshold(bundle, _record(bundle, 0.0, note="x" * 500_000))
    for pause in (0.0, 0.05, 0.13):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tiny_bundle)], cwd=ROOT, stdout=subprocess.PIPE)
        assert writer.stdout.readline().strip() == b"written"
        time.sleep(pause)  # kill at some point of a later write; any point must leave a whole file
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        record = read_threshold(bundle)
        assert record.threshold >= 1 and record.threshold.is_integer() and len(record.note) == 500_000


def test_the_written_record_binds_to_this_model_backend_and_precision(tiny_bundle, good, tmp_path, capsys) -> None:
    assert calibrate(capsys, "--bundle", tiny_bundle, "--good", good)[0] == 0
    bundle = open_bundle(tiny_bundle)
    record = read_threshold(bundle)
    check_binding(record, bundle, "onnxruntime", "fp32")
    with pytest.raises(ThresholdError, match="precision fp32"):
        check_binding(record, bundle, "onnxruntime", "fp16")
    with pytest.raises(ThresholdError, match=r"calibrated on onnxruntime, but this run uses tensorrt.*"
                       r"`daad calibrate --bundle .* --backend tensorrt --precision fp32`"):
        check_binding(record, bundle, "tensorrt", "fp32")
    other = open_bundle(write_tiny_bundle(tmp_path / "other", height=40, width=40))
    assert other.sha256 != bundle.sha256
    with pytest.raises(ThresholdError, match="calibrated for model sha256"):
        check_binding(record, other, "onnxruntime", "fp32")


def _start_calibration(bundle: Path, good: Path, *more: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "calibration", "calibrate", "--bundle", str(bundle), "--good",
                             str(good), "--no-progress", *more], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_until_it_holds_the_lock(bundle: Path, process: subprocess.Popen) -> None:
    lock = bundle / LOCK_FILE
    while process.poll() is None:
        try:
            if json.loads(lock.read_text())["pid"] == process.pid:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.001)
    pytest.fail(f"the calibration ended before it was seen holding {lock}: {process.communicate()}")


def test_a_second_calibration_is_refused_while_the_first_runs(tiny_bundle, tmp_path) -> None:
    parts = write_parts(tmp_path / "many", 600, seed=11)
    first = _start_calibration(tiny_bundle, parts)
    _wait_until_it_holds_the_lock(tiny_bundle, first)
    first.send_signal(signal.SIGSTOP)  # frozen mid-calibration, lock held
    try:
        second = _start_calibration(tiny_bundle, parts)
        _, err = second.communicate(timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
    out, _ = first.communicate(timeout=120)
    assert second.returncode == 2 and err.decode().count("\n") == 1 and "Traceback" not in err.decode()
    assert f"another calibration of {tiny_bundle} is running (pid {first.pid} on " in err.decode()
    assert "--wait SECONDS" in err.decode()
    assert first.returncode == 0 and b"wrote" in out
    assert len(history_entries(open_bundle(tiny_bundle))) == 1 and not (tiny_bundle / LOCK_FILE).exists()


def test_wait_takes_the_lock_once_the_first_calibration_ends(tiny_bundle, tmp_path) -> None:
    parts = write_parts(tmp_path / "many", 600, seed=13)
    first = _start_calibration(tiny_bundle, parts)
    _wait_until_it_holds_the_lock(tiny_bundle, first)
    first.send_signal(signal.SIGSTOP)  # holds the lock until it is let go on
    try:
        impatient = _start_calibration(tiny_bundle, parts, "--wait", "0.5")
        _, refused = impatient.communicate(timeout=120)
        patient = _start_calibration(tiny_bundle, parts, "--wait", "120")
        told = patient.stderr.readline().decode()  # it says it waits, and for whom, before waiting
    finally:
        first.send_signal(signal.SIGCONT)
    assert impatient.returncode == 2 and "still running after 0.5 s of waiting" in refused.decode()
    assert f"pid {first.pid}" in told and "waiting up to 120 s" in told
    assert first.wait(timeout=120) == 0 and patient.wait(timeout=120) == 0
    assert len(history_entries(open_bundle(tiny_bundle))) == 2 and not (tiny_bundle / LOCK_FILE).exists()


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_wait_takes_seconds(value, tiny_bundle, good, capsys) -> None:
    with pytest.raises(SystemExit):
        calibrate_cli.main(["--bundle", str(tiny_bundle), "--good", str(good), "--wait", value])
    assert "expected seconds, 0 or more" in capsys.readouterr().err


def test_a_calibration_killed_holding_the_lock_is_taken_over(tiny_bundle, tmp_path, good, capsys) -> None:
    parts = write_parts(tmp_path / "many", 600, seed=12)
    killed = _start_calibration(tiny_bundle, parts)
    _wait_until_it_holds_the_lock(tiny_bundle, killed)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert json.loads((tiny_bundle / LOCK_FILE).read_text())["pid"] == killed.pid  # left behind
    orphan = tiny_bundle / ".threshold.json.k1ll3d_x.daad.tmp"  # as a kill mid-write leaves one
    orphan.write_text("{")
    old = time.time() - 3600
    os.utime(orphan, (old, old))
    code, _, err = calibrate(capsys, "--bundle", tiny_bundle, "--good", good)
    assert code == 0 and f"took over {tiny_bundle / LOCK_FILE}" in err and f"pid {killed.pid} on" in err
    assert "removed 1 temp file(s)" in err and not orphan.exists()
    assert read_threshold(open_bundle(tiny_bundle)) is not None and not (tiny_bundle / LOCK_FILE).exists()


def corrupt_but_decodable(jpeg: bytes) -> bytes:
    """`jpeg` with one byte of its entropy-coded data flipped, chosen so OpenCV still decodes it into garbage."""
    scan = jpeg.find(b"\xff\xda") + 14
    for position in range(scan, len(jpeg) - 2):
        damaged = bytearray(jpeg)
        damaged[position] ^= 0xFF
        image = cv2().imdecode(np.frombuffer(bytes(damaged), np.uint8), cv2().IMREAD_UNCHANGED)
        if image is not None and np.abs(image / 255 - 0.5).mean(axis=2).max() > 0.3:
            return bytes(damaged)
    raise AssertionError("no single flipped byte gives a decodable garbage image")


def test_a_corrupt_jpeg_that_still_decodes_is_named_and_left_out(tiny_bundle, tmp_path, capsys) -> None:
    good = tmp_path / "good"
    good.mkdir()
    rng = np.random.default_rng(13)
    for index in range(80):
        cv2().imwrite(str(good / f"part{index:03d}.jpg"), noisy_grey(rng, (2, 12)))
    clean = tiny_scores_of(good)
    assert calibrate(capsys, "--bundle", tiny_bundle, "--good", good)[0] == 0
    assert read_threshold(open_bundle(tiny_bundle)).counts["good_outliers"] == 0  # natural spread: nothing flagged
    (good / "part999.jpg").write_bytes(corrupt_but_decodable((good / "part000.jpg").read_bytes()))

    code, out, err = calibrate(capsys, "--bundle", tiny_bundle, "--good", good)
    assert code == 0
    record = read_threshold(open_bundle(tiny_bundle))
    assert record.threshold == pytest.approx(clean.max(), abs=1e-6)  # as if the damaged image were not there
    assert record.counts["good_outliers"] == 1 and record.counts["good"] == 81
    assert record.rates["false_reject"]["total"] == 80 and record.targets["good_outliers"] == "left out"
    assert [entry["image"] for entry in record.score_stats["good_outliers"]] == ["part999.jpg"]
    assert "score far above the other good parts, left out of the threshold: part999.jpg" in err
    assert "warning: 1 good image(s) score far above the other good parts" in out and "part999.jpg (0." in out
    assert "(1 outlier(s) left out)" in out

    code, out, _ = calibrate(capsys, "--bundle", tiny_bundle, "--good", good, "--keep-outliers")
    kept = read_threshold(open_bundle(tiny_bundle))
    assert code == 0 and kept.threshold > 0.3 and kept.targets["good_outliers"] == "kept" and "KEPT" in out

    code, out, err = calibrate(capsys, "--check", "--bundle", tiny_bundle, "--good", good)
    assert "part999.jpg" in err and "they stay in the check" in err


def tiny_scores_of(folder: Path) -> np.ndarray:
    frames = [cv2().imread(str(path)) for path in sorted(folder.iterdir())]
    return np.array([np.abs(frame / 255 - 0.5).mean(axis=2).max() for frame in frames])


def test_a_full_disk_prints_the_result_keeps_the_old_threshold_and_says_so(small_disk, good, capsys) -> None:
    bundle = write_tiny_bundle(small_disk / "bundle")
    assert calibrate(capsys, "--bundle", bundle, "--good", good)[0] == 0
    before = (bundle / "threshold.json").read_bytes()
    small_disk.fill(leave=8192)  # room for the lock file, not for calibration.png
    code, out, err = calibrate(capsys, "--bundle", bundle, "--good", good, "--target-frr", "0.02")
    assert code == 2 and out.startswith("threshold ")  # the measurement is printed before the write fails
    assert f"cannot write {bundle / 'calibration.png'}" in err and "the disk is full" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (bundle / "threshold.json").read_bytes() == before and not list(bundle.glob(".*.tmp"))
    assert not (bundle / LOCK_FILE).exists()


def test_tiny_images_are_skipped_and_grey_ones_named_and_counted(tmp_path, good, capsys) -> None:
    bundle = write_tiny_bundle(tmp_path / "bundle64", height=64, width=64)
    cv2().imwrite(str(good / "one-pixel.png"), np.full((1, 1, 3), 128, np.uint8))
    cv2().imwrite(str(good / "thumbnail.png"), np.full((8, 8, 3), 128, np.uint8))
    cv2().imwrite(str(good / "mono.png"), np.full((32, 32), 128, np.uint8))
    code, out, err = calibrate(capsys, "--bundle", bundle, "--good", good)
    assert code == 0
    record = read_threshold(open_bundle(bundle))
    assert record.counts["good"] == 61 and record.counts["good_skipped"] == 2 and record.counts["good_grey"] == 1
    assert "2 image(s) in" in err and "one-pixel.png (1x1 px is too small for the model's 64x64 input" in err
    assert "thumbnail.png (8x8 px is too small" in err
    assert "1 image(s) in" in err and "are grey, given to a colour model" in err and "mono.png" in err
    assert "scored 61 good parts (2 unreadable or too small images skipped, 1 grey images in a colour model)" in out


def test_a_bundle_or_too_few_parts_as_good_is_refused_and_writes_nothing(tiny_bundle, good, tmp_path, capsys) -> None:
    assert calibrate(capsys, "--bundle", tiny_bundle, "--good", good)[0] == 0
    before = {name: (tiny_bundle / name).read_bytes() for name in ("threshold.json", "calibration.png")}
    code, _, err = calibrate(capsys, "--bundle", tiny_bundle, "--good", tiny_bundle)  # its only image: calibration.png
    assert code == 2 and "is a bundle folder, not a folder of parts" in err and err.count("\n") == 1
    few = write_parts(tmp_path / "few", 9, seed=3)
    code, _, err = calibrate(capsys, "--bundle", tiny_bundle, "--good", few)
    assert code == 2 and "only 9 good part(s) could be scored" in err and "at least 10" in err
    assert {name: (tiny_bundle / name).read_bytes() for name in before} == before
    assert len(history_entries(open_bundle(tiny_bundle))) == 1


def test_a_failed_calibration_leaves_calibration_png_as_it_was(tiny_bundle, good, capsys) -> None:
    assert calibrate(capsys, "--bundle", tiny_bundle, "--good", good)[0] == 0
    picture = (tiny_bundle / "calibration.png").read_bytes()
    (tiny_bundle / "threshold.json").unlink()
    (tiny_bundle / "threshold.json").mkdir()  # threshold.json cannot be replaced: the calibration fails
    code, out, err = calibrate(capsys, "--bundle", tiny_bundle, "--good", good, "--target-frr", "0.2")
    assert code == 2 and out.startswith("threshold ") and "cannot write" in err and "threshold.json" in err
    assert (tiny_bundle / "calibration.png").read_bytes() == picture
    assert not list(tiny_bundle.glob(".*.tmp")) and len(history_entries(open_bundle(tiny_bundle))) == 1
