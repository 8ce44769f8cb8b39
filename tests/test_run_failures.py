"""`daad run` under signals at start-up and outputs that cannot be written: one line, the numbers kept."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_run_cli import calibrate, read_events
from test_sources import damaged_copies, part_frames, write_video

from runtime.cli import main as daad
from runtime.errors import MissingDependency
from runtime.optional import require

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def video(tmp_path) -> Path:
    return write_video(tmp_path / "line.avi", part_frames(12))


def open_when_read(fifo: Path, process: subprocess.Popen, timeout_s: float = 60.0) -> int:
    """Open `fifo` for writing once `process` opens it for reading: a point it reaches inside `daad run`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO or process.poll() is not None:
                raise
            time.sleep(0.01)
    raise TimeoutError(f"{fifo} was never opened")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_still_ends_with_a_summary(signum, tiny_bundle, video, tmp_path) -> None:
    """The signal lands while run reads threshold.json (a FIFO here), before the model is loaded."""
    threshold = calibrate(tiny_bundle).read_text()
    fifo = tiny_bundle / "threshold.json"
    fifo.unlink()
    os.mkfifo(fifo)
    summary = tmp_path / "summary.json"
    command = [sys.executable, "-m", "runtime", "run", "--bundle", str(tiny_bundle), "--source", str(video),
               "--loop", "--events", str(tmp_path / "events.jsonl"), "--summary", str(summary), "--threads", "1"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        handle = open_when_read(fifo, process)
        process.send_signal(signum)
        time.sleep(0.2)  # the handler runs before the read returns
        os.write(handle, threshold.encode())
        os.close(handle)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "onnxruntime is not installed" not in err and "Traceback" not in err
    written = json.loads(summary.read_text())
    assert written == json.loads(out) and written["stopped_by"] == signal.Signals(signum).name
    assert written["frames"] == len(read_events(tmp_path / "events.jsonl")) == 0


def test_an_import_interrupted_by_ctrl_c_is_an_interrupt_not_a_missing_package(tmp_path, monkeypatch) -> None:
    # What a pybind11 extension such as onnxruntime's raises when SIGINT lands while it initialises.
    (tmp_path / "interrupted_extension.py").write_text(
        "try:\n    raise KeyboardInterrupt\nexcept KeyboardInterrupt:\n    raise ImportError('initialization failed')\n")
    (tmp_path / "broken_extension.py").write_text("raise ImportError('libfoo.so: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        require("interrupted_extension")
    with pytest.raises(MissingDependency, match="broken_extension is not installed"):
        require("broken_extension")


def test_an_events_file_on_a_full_disk_ends_with_one_line_and_keeps_the_summary(
        tiny_bundle, video, tmp_path, capsys) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full (Linux)")
    summary = tmp_path / "summary.json"
    argv = ["run", "--bundle", str(tiny_bundle), "--source", str(video), "--threshold", "0.3",
            "--events", "/dev/full", "--summary", str(summary), "--threads", "1"]
    assert daad(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines()[-1] == (
        "daad run: error: cannot write /dev/full: No space left on device; the disk is full: free space on it or "
        "write somewhere else")
    written = json.loads(summary.read_text())
    assert written == json.loads(captured.out) and written["stopped_by"].startswith("error: cannot write /dev/full")


@pytest.mark.parametrize("option", ["--events", "--summary", "--save-ng", "--output"])
def test_an_output_under_a_file_is_one_line_before_anything_runs(option, tiny_bundle, video, tmp_path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    target = blocker / ("out.avi" if option == "--output" else "out")
    argv = ["run", "--bundle", str(tiny_bundle), "--source", str(video), "--threshold", "0.3", option, str(target)]
    assert daad(argv + (["--summary", str(tmp_path / "s.json")] if option != "--summary" else [])) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith(f"daad run: error: cannot write {blocker}")
    assert "Traceback" not in "\n".join(error) and blocker.read_text() == "not a folder"


def test_a_summary_that_cannot_be_written_is_printed_and_the_run_says_so(tiny_bundle, video, tmp_path, capsys) -> None:
    summary = tmp_path / "summary.json"
    summary.mkdir()  # a folder where the file should go
    argv = ["run", "--bundle", str(tiny_bundle), "--source", str(video), "--threshold", "0.3", "--summary", str(summary)]
    assert daad(argv) == 2
    assert "--summary" in capsys.readouterr().err


def test_a_truncated_video_run_says_so_on_stderr_and_in_the_summary(tiny_bundle, tmp_path, capsys) -> None:
    _, half, _ = damaged_copies(tmp_path)
    summary = tmp_path / "summary.json"
    argv = ["run", "--bundle", str(tiny_bundle), "--source", str(half), "--threshold", "0.3", "--summary", str(summary)]
    assert daad(argv) == 0
    captured = capsys.readouterr()
    written = json.loads(summary.read_text())
    assert written["frames_expected"] == 100 and 0 < written["read"] == written["frames"] < 100
    assert written["stopped_by"] == "end of source" and written["warnings"] == [
        f"source {half} ended after {written['read']} of the 100 frames its header declares: "
        "the file is truncated or damaged"]
    assert written["warnings"][0] in captured.err


EDITS = {  # model.json edits a technician might make, and what the refusal names
    "height 0": (lambda meta: meta["preprocess"].update(height=0), "image size must be at least 8x8"),
    "2 channels": (lambda meta: meta["preprocess"].update(channels=2), "channels must be 1 or 3"),
    "crop 0": (lambda meta: meta["preprocess"].update(center_crop=0), "center_crop must be in (0, 1]"),
    "std 0": (lambda meta: meta["preprocess"].update(std=[0, 0, 0]), "std must be positive"),
    "size vs model": (lambda meta: (meta["preprocess"].update(height=64, width=64),
                                    meta.update(input_shape=["batch", 64, 64, 3])), "takes [32, 32, 3]"),
    "input_shape": (lambda meta: meta.update(input_shape=["batch", 64, 64, 3]), "input_shape"),
    "grey order": (lambda meta: meta.update(channel_order="GRAY"), "channel_order"),
    "input_name": (lambda meta: meta.update(input_name="x"), "input 'x' where"),
    "output_names": (lambda meta: meta.update(output_names=["score", "anomaly_map", "extra"]), "outputs"),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_an_edited_model_json_is_refused_at_start_in_one_line(edit, tiny_bundle, video, tmp_path, capsys) -> None:
    change, named = EDITS[edit]
    metadata = json.loads((tiny_bundle / "model.json").read_text())
    change(metadata)
    (tiny_bundle / "model.json").write_text(json.dumps(metadata))
    events = tmp_path / "events.jsonl"
    argv = ["run", "--bundle", str(tiny_bundle), "--source", str(video), "--threshold", "0.3", "--events", str(events)]
    assert daad(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith(f"daad run: error: {tiny_bundle / 'model.json'}") and named in error[-1]
    assert error[-1].endswith("re-export the bundle with `daad export`.") and not events.exists()


def test_grey_and_tiny_images_are_counted_and_said_never_silent(tiny_bundle, tmp_path, capsys, caplog) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "a_1x1.png"), np.full((1, 1, 3), 128, np.uint8))
    cv2.imwrite(str(folder / "b_4x4.png"), np.full((4, 4), 128, np.uint8))  # grey, but a FAULT: never scored
    cv2.imwrite(str(folder / "c_grey.png"), np.full((64, 64), 128, np.uint8))
    cv2.imwrite(str(folder / "d_grey.png"), np.full((64, 64), 128, np.uint8))
    cv2.imwrite(str(folder / "e_colour.png"), np.full((64, 64, 3), 128, np.uint8))
    events = tmp_path / "events.jsonl"
    argv = ["run", "--bundle", str(tiny_bundle), "--source", str(folder), "--threshold", "0.3", "--events", str(events)]
    with caplog.at_level("WARNING"):
        assert daad(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 5 and summary["verdicts"]["FAULT"] == 2 and summary["grey_frames"] == 2
    assert summary["faults"] == {"bad_frame": 2} and summary["fault_action"] is None  # no reject pin to act on
    faults = [line for line in read_events(events) if line["verdict"] == "FAULT"]
    assert [line["file"] for line in faults] == ["a_1x1.png", "b_4x4.png"] and "too small" in faults[0]["fault"]
    assert {line["fault_cause"] for line in faults} == {"bad_frame"} and {line["index"] for line in faults} == {None}
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 1 and said[0].startswith("c_grey.png is grey but the model takes colour")


@pytest.mark.parametrize("flag, value, said", [
    ("--threads", "100000", "must be at most"), ("--threads", "0", "must be a positive finite number"),
    ("--save-ng-max-mb", "nan", "must be a positive finite number"),
    ("--save-ng-max-mb", "inf", "must be a positive finite number"),
    ("--metrics-port", "99999", "must be a port from 0"), ("--metrics-port", "-1", "must be a port from 0"),
    ("--stats-every", "nan", "must be a finite number of seconds"), ("--stats-every", "-5", "must be a finite")])
def test_numeric_flags_out_of_bounds_are_one_line(flag, value, said, tiny_bundle, video, tmp_path, capsys) -> None:
    argv = ["run", "--bundle", str(tiny_bundle), "--source", str(video), "--threshold", "0.3",
            "--save-ng", str(tmp_path / "ng"), flag, value]
    with pytest.raises(SystemExit) as ended:
        daad(argv)
    error = capsys.readouterr().err.strip().splitlines()
    assert ended.value.code == 2 and error[-1].startswith(f"daad run: error: argument {flag}: {said}")
    assert value in error[-1] and not (tmp_path / "ng").exists()


def test_an_events_file_deleted_mid_run_is_recreated_and_the_summary_says_what_was_lost(
        tiny_bundle, video, tmp_path) -> None:
    events, summary_file = tmp_path / "events.jsonl", tmp_path / "summary.json"
    command = [sys.executable, "-m", "runtime", "run", "--bundle", str(tiny_bundle), "--source", str(video),
               "--loop", "--threshold", "0.3", "--events", str(events), "--summary", str(summary_file),
               "--threads", "1", "--stats-every", "0"]
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, deleted = time.monotonic() + 60, False
        while time.monotonic() < deadline and process.poll() is None:
            lines = events.read_text().count("\n") if events.exists() else 0
            if not deleted and lines >= 20:
                events.unlink()
                deleted = True
            elif deleted and lines >= 20:  # recreated and written to again
                break
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    summary = json.loads(summary_file.read_text())
    assert process.returncode == 0 and deleted and summary == json.loads(out)
    assert summary["events_lost"] >= 20 and summary["frames"] == summary["events_lost"] + len(read_events(events))
    assert any("was deleted or replaced during the run" in warning for warning in summary["warnings"])
    assert "was deleted or replaced during the run" in err


PAUSED_IMPORT = """
import sys
from importlib.metadata import EntryPoint
import runtime.cli

load, paused = EntryPoint.load, []
def paused_load(self):  # the verb's import waits for the test, which signals meanwhile
    if not paused:
        paused.append(self.name)
        with open(sys.argv[1]) as fifo:
            fifo.read()
    return load(self)
EntryPoint.load = paused_load
sys.exit(runtime.cli.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("verb", ["run", "bench"])
def test_a_sigterm_while_the_verb_is_still_importing_waits_for_it(verb, tiny_bundle, video, tmp_path) -> None:
    """The first 0.2-0.5 s of `daad run` are imports: a SIGTERM there still ends with a summary; other verbs
    get the signal as before, once imported."""
    fifo, summary = tmp_path / "import.fifo", tmp_path / "summary.json"
    os.mkfifo(fifo)
    argv = {"run": ["run", "--bundle", str(tiny_bundle), "--source", str(video), "--loop", "--threshold", "0.3",
                    "--events", str(tmp_path / "events.jsonl"), "--summary", str(summary), "--threads", "1"],
            "bench": ["bench", "--bundle", str(tiny_bundle)]}[verb]
    process = subprocess.Popen([sys.executable, "-c", PAUSED_IMPORT, str(fifo), *argv], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        handle = open_when_read(fifo, process)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.2)  # the handler runs while the import waits
        os.close(handle)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    if verb == "bench":
        assert process.returncode == -signal.SIGTERM and not out
        return
    assert process.returncode == 0, err
    written = json.loads(summary.read_text())
    assert written == json.loads(out) and written["stopped_by"] == "SIGTERM" and written["frames"] == 0
