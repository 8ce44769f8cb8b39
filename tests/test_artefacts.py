"""Verdict first: pictures go through a background writer that drops, counted, and never holds a verdict."""

from __future__ import annotations

import json
import threading

import pytest
from test_sources import defect_pattern, part_frames, write_video

from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.bundle import open_bundle
from runtime.line.artefacts import ArtefactSettings, ArtefactWriter, open_artefacts
from runtime.line.events import EventLog
from runtime.line.loop import Outcome, RunStats, open_reader, run_loop
from runtime.line.sources import open_source

THRESHOLD = 0.3


class GatedSink:
    """A picture sink that cannot write until the test opens its gate: a disk or encoder that hangs."""

    def __init__(self) -> None:
        self.gate, self.entered = threading.Event(), threading.Event()
        self.seen: list[int] = []
        self.closed = False

    def emit(self, outcome: Outcome) -> None:
        self.entered.set()
        self.gate.wait()
        self.seen.append(outcome.frame.index)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def bundle(tiny_bundle):
    return open_bundle(tiny_bundle)


def run(video, bundle, events_path, sinks) -> RunStats:
    with OnnxRuntimeBackend(bundle, threads=1) as backend, EventLog(events_path) as events, \
            open_reader(open_source(str(video)), "lossless", bundle.preprocess) as reader:
        return run_loop(reader, backend, bundle.preprocess, THRESHOLD, "line", events, sinks, RunStats(every_s=0))


def test_every_verdict_is_written_while_the_picture_writer_hangs(tmp_path, bundle) -> None:
    video = write_video(tmp_path / "line.avi", part_frames(30))
    hung = GatedSink()
    writer = ArtefactWriter([hung], depth=4)
    stats = run(video, bundle, tmp_path / "events.jsonl", [writer])
    # The loop finished every frame with the picture writer stuck on its first one.
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert stats.frames == len(lines) == 30 and hung.entered.wait(timeout=30) and hung.seen == []
    assert [line["verdict"] == "NG" for line in lines] == defect_pattern(30)
    assert writer.dropped >= 30 - 4 - 1  # the queue holds 4, the writer 1: the rest were dropped, counted
    hung.gate.set()
    writer.close()
    # Every frame was either drawn or counted as dropped; what was queued was written, in order.
    assert len(hung.seen) + writer.counts["artefacts_dropped"] == 30 and hung.seen == sorted(hung.seen)
    assert hung.closed and writer.counts["artefacts_failed"] == 0


def test_a_picture_sink_that_fails_is_counted_and_inspection_goes_on(tmp_path, bundle) -> None:
    settings = ArtefactSettings(save_ng=tmp_path / "ng", output=tmp_path / "overlay.nosuchformat", queue_depth=64)
    writer = open_artefacts(settings, bundle.preprocess, 10.0, threading.Event())
    stats = run(write_video(tmp_path / "line.avi", part_frames(12)), bundle, None, [writer])
    writer.close()
    assert stats.frames == 12 and stats.verdicts["NG"] == 3
    assert writer.counts == {"artefacts_dropped": 0, "artefacts_failed": 1,  # the video could not be opened
                             "ng_saved": 3, "ng_removed": 0, "ng_save_failed": 0}
    assert len(list((tmp_path / "ng").glob("*.png"))) == 3


def test_no_pictures_asked_for_means_no_writer(bundle) -> None:
    assert open_artefacts(ArtefactSettings(), bundle.preprocess, 10.0, threading.Event()) is None


def test_with_pictures_opencv_works_in_the_calling_thread(tmp_path, bundle) -> None:
    """OpenCV's worker pool would run picture work at the loop's priority, outside the writer's nice."""
    import cv2

    cv2.setNumThreads(2)
    writer = open_artefacts(ArtefactSettings(save_ng=tmp_path / "ng"), bundle.preprocess, 10.0,
                            threading.Event())
    try:
        assert cv2.getNumThreads() == 1
    finally:
        writer.close()
