"""The demo's own pieces: the line video it writes and the verdict report it prints."""

from __future__ import annotations

import json

import cv2
import pytest

from demo.pipeline import report_line, write_line_video
from runtime.cli import main as daad
from train import synth_cli


@pytest.fixture
def product(tmp_path):
    synth_cli.main(["--out", str(tmp_path / "data"), "--products", "cap", "--image-size", "64",
                    "--train", "2", "--test-good", "3", "--test-defect", "1"])
    return tmp_path / "data" / "cap"


def test_line_video_interleaves_good_and_defective_parts(product, tmp_path) -> None:
    video = tmp_path / "line.avi"
    truth = write_line_video(product, video)
    capture = cv2.VideoCapture(str(video))
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    assert frames == len(truth) == 3 + 5
    assert [label for _, label in truth[:4]] == [0, 1, 0, 1]


def test_report_line_counts_caught_and_rejected(tmp_path, capsys) -> None:
    events = tmp_path / "events.jsonl"
    verdicts = ["OK", "NG", "NG", "OK", "FAULT"]
    events.write_text("".join(json.dumps({"verdict": v}) + "\n" for v in verdicts))
    truth = [("good", 0), ("hole", 1), ("good", 0), ("crack", 1), ("good", 0)]
    report_line(events, truth)
    out = capsys.readouterr().out
    assert "caught 1/2 defective" in out and "1/3 good parts rejected" in out and "1 faults" in out


def test_a_bad_image_size_stops_the_demo_before_it_writes_anything(tmp_path, capsys) -> None:
    assert daad(["demo", "--out", str(tmp_path / "demo"), "--image-size", "50"]) == 2
    err = capsys.readouterr().err
    assert "image size 50x50 must be a multiple of 16" in err and "Traceback" not in err
    assert not (tmp_path / "demo").exists()
