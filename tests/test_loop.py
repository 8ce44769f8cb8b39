"""The camera loop on real frames through the real tiny ONNX model, with faults injected at the source."""

from __future__ import annotations

import io
import json
import math
import shutil
import time
from collections import Counter

import cv2
import numpy as np
import pytest
from test_sources import defect_pattern, part_frames, write_video
from tiny_bundle import grey_frame

from runtime.backends.base import InferenceResult
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.bundle import open_bundle
from runtime.line.events import FAULT, NG, OK, EventLog, FrameEvent, judge
from runtime.line.latency import RELATIVE_ERROR, LatencyHistogram, StageTimes, summarize
from runtime.line.live_threshold import Calibration, LiveThreshold
from runtime.line.loop import RunStats, open_reader, run_loop
from runtime.line.ng_store import NgStore, SaveNg
from runtime.line.overlay import heatmap_overlay, render
from runtime.score_scale import ScoreScale
from runtime.preprocess import prepare_batch
from runtime.line.sources import Backoff, Frame, Reconnecting, SourceReadError, open_source

THRESHOLD = 0.3  # tiny_bundle: grey frames score ~0, a blob of 250 scores ~0.48


@pytest.fixture
def bundle(tiny_bundle):
    return open_bundle(tiny_bundle)


@pytest.fixture
def backend(bundle):
    with OnnxRuntimeBackend(bundle, threads=1) as backend:
        yield backend


def read_events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run(source, backend, bundle, events_path, mode="lossless", sinks=(), max_frames=None):
    with open_reader(source, mode, bundle.preprocess) as reader, EventLog(events_path) as events:
        stats = RunStats(every_s=0, counters=lambda: {"dropped": reader.dropped})
        run_loop(reader, backend, bundle.preprocess, THRESHOLD, source.name, events, sinks, stats, max_frames)
    return reader, stats


def direct_verdicts(images, backend, bundle) -> list[str]:
    scores = backend.infer(prepare_batch(images, bundle.preprocess)).scores
    return [judge(float(score), THRESHOLD) for score in scores]


def test_judge_never_passes_a_non_finite_score() -> None:
    assert judge(0.1, 0.3) == OK and judge(0.31, 0.3) == NG and judge(0.3, 0.3) == OK
    assert judge(math.nan, 0.3) == judge(math.inf, 0.3) == judge(-math.inf, 0.3) == FAULT


def test_judge_never_passes_on_a_non_finite_threshold(tmp_path, bundle, backend) -> None:
    assert judge(0.1, math.nan) == judge(0.1, math.inf) == judge(0.9, -math.inf) == FAULT
    source = open_source(str(write_video(tmp_path / "v.avi", part_frames(4))))
    with open_reader(source, "lossless", bundle.preprocess) as reader, EventLog(tmp_path / "e.jsonl") as events:
        run_loop(reader, backend, bundle.preprocess, math.inf, source.name, events)
    lines = read_events(tmp_path / "e.jsonl")
    assert [line["verdict"] for line in lines] == [FAULT] * 4 and lines[0]["fault"] == "threshold is inf"


def test_video_verdicts_match_direct_scoring_one_line_per_frame(tmp_path, bundle, backend) -> None:
    path = write_video(tmp_path / "line.avi", part_frames(12))
    decoded = [frame.image for frame in iter(open_source(str(path)).read, None)]
    reader, stats = run(open_source(str(path)), backend, bundle, tmp_path / "events.jsonl")
    events = read_events(tmp_path / "events.jsonl")
    assert [event["frame"] for event in events] == list(range(12))
    assert [event["verdict"] for event in events] == direct_verdicts(decoded, backend, bundle)
    assert [event["verdict"] == NG for event in events] == defect_pattern(12)
    assert stats.verdicts == {OK: 9, NG: 3, FAULT: 0}
    assert set(events[0]["latency_ms"]) == {"capture", "queue", "preprocess", "infer", "postprocess", "total"}


def test_image_folder_with_defects_bad_files_and_odd_sizes(tmp_path, bundle, backend) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    images = part_frames(8, height=60, width=90)
    images[3] = cv2.cvtColor(images[3], cv2.COLOR_BGR2GRAY)  # grey frame, other size: preprocessed, not rejected
    images[5] = cv2.cvtColor(grey_frame(20, 20, blob=250), cv2.COLOR_BGR2BGRA)
    for index, image in enumerate(images):
        cv2.imwrite(str(folder / f"{index:02d}.png"), image)
    (folder / "04b.png").write_bytes(b"truncated")
    run(open_source(str(folder)), backend, bundle, tmp_path / "events.jsonl")
    events = read_events(tmp_path / "events.jsonl")
    by_file = {event["file"]: event for event in events}
    expected = direct_verdicts(images, backend, bundle)
    assert [by_file[f"{index:02d}.png"]["verdict"] for index in range(8)] == expected
    assert expected.count(NG) == 2 and expected[5] == NG
    assert by_file["04b.png"]["verdict"] == FAULT and "empty frame" in by_file["04b.png"]["fault"]
    assert by_file["04b.png"]["score"] is None and len(events) == 9


class FaultySource:
    """A camera having a bad day: raises, stalls, delivers empty frames and changes resolution."""

    name, live = "faulty camera", True

    def __init__(self, total: int, seed: int = 0) -> None:
        self.total, self.rng = total, np.random.default_rng(seed)
        self.produced, self.raised, self.empty, self.bad = 0, 0, 0, 0

    def read(self) -> Frame | None:
        if self.produced >= self.total:
            return None
        roll = self.rng.random()
        if roll < 0.05:
            self.raised += 1
            raise SourceReadError("cable pulled")
        if roll < 0.07:
            time.sleep(0.001)  # a stall: the frame comes late
        self.produced += 1
        if roll < 0.12:
            self.empty += 1
            return Frame(np.empty((0, 0, 3), dtype=np.uint8))
        height, width = (int(v) for v in self.rng.integers(8, 40, size=2))
        bad = roll > 0.9
        self.bad += bad
        image = grey_frame(height, width, blob=250 if bad else None)
        return Frame(image if roll < 0.8 else image[:, :, 0])

    def close(self) -> None:
        pass


@pytest.mark.parametrize("mode", ["lossless", "realtime"])
def test_faulty_source_thousands_of_frames_every_frame_accounted_for(tmp_path, bundle, backend, mode) -> None:
    camera = FaultySource(total=3000, seed=7)
    source = Reconnecting(lambda: camera, Backoff(initial_s=0.0, attempts=50), sleep=lambda seconds: None)
    events_path = tmp_path / "events.jsonl"
    reader, stats = run(source, backend, bundle, events_path, mode)
    events = read_events(events_path)
    frames = [event["frame"] for event in events]
    assert len(frames) == len(set(frames)) == stats.frames and frames == sorted(frames)
    assert stats.frames + reader.dropped == reader.produced == camera.produced == 3000
    assert source.read_errors == camera.raised > 100 and source.reconnects == camera.raised
    faults = [event for event in events if event["verdict"] == FAULT]
    assert all("empty frame" in event["fault"] for event in faults)
    if mode == "lossless":
        assert reader.dropped == 0 and len(faults) == camera.empty
        assert Counter(event["verdict"] for event in events)[NG] == camera.bad


class NanBackend:
    """The real backend, with every other score replaced by NaN (a model gone numerically bad)."""

    def __init__(self, backend: OnnxRuntimeBackend) -> None:
        self.backend, self.calls = backend, 0

    def infer(self, frames: np.ndarray) -> InferenceResult:
        result = self.backend.infer(frames)
        self.calls += 1
        if self.calls % 2 == 0:
            result.scores[:] = np.nan
        if self.calls % 3 == 0:
            raise RuntimeError("CUDA error: an illegal memory access")
        return result


def test_nan_scores_and_backend_errors_are_faults_and_the_loop_goes_on(tmp_path, bundle, backend) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    for index in range(12):
        cv2.imwrite(str(folder / f"{index:02d}.png"), grey_frame(32, 32))
    run(open_source(str(folder)), NanBackend(backend), bundle, tmp_path / "events.jsonl")
    events = read_events(tmp_path / "events.jsonl")
    assert len(events) == 12
    for call, event in enumerate(events, start=1):
        if call % 3 == 0:
            assert event["verdict"] == FAULT and "illegal memory access" in event["fault"]
        elif call % 2 == 0:
            assert event["verdict"] == FAULT and event["score"] is None and "nan" in event["fault"]
        else:
            assert event["verdict"] == OK


class SlowBackend:
    """The real backend plus a fixed delay: a model slower than the camera."""

    def __init__(self, backend: OnnxRuntimeBackend, delay_s: float) -> None:
        self.backend, self.delay_s = backend, delay_s

    def infer(self, frames: np.ndarray) -> InferenceResult:
        time.sleep(self.delay_s)
        return self.backend.infer(frames)


class FastCamera:
    name, live = "fast camera", True

    def __init__(self, total: int, period_s: float) -> None:
        self.total, self.period_s, self.produced = total, period_s, 0

    def read(self) -> Frame | None:
        if self.produced >= self.total:
            return None
        time.sleep(self.period_s)
        self.produced += 1
        return Frame(grey_frame(32, 32))

    def close(self) -> None:
        pass


def test_realtime_with_a_camera_faster_than_the_model_drops_and_stays_current(tmp_path, bundle, backend) -> None:
    camera = FastCamera(total=200, period_s=0.001)
    reader, stats = run(camera, SlowBackend(backend, 0.004), bundle, tmp_path / "events.jsonl", "realtime")
    events = read_events(tmp_path / "events.jsonl")
    assert reader.dropped > 0 and len(events) + reader.dropped == 200
    # Never more than one frame waits, so no frame waits longer than about one inference.
    queue = np.array([event["latency_ms"]["queue"] for event in events])
    cycle = np.array([event["latency_ms"]["preprocess"] + event["latency_ms"]["infer"] for event in events])
    assert np.median(queue) <= 2 * np.median(cycle)


def test_max_frames_stops_after_that_many_events(tmp_path, bundle, backend) -> None:
    reader, stats = run(FastCamera(total=10**6, period_s=0.0), backend, bundle, tmp_path / "e.jsonl", max_frames=25)
    assert stats.frames == 25 and len(read_events(tmp_path / "e.jsonl")) == 25


def test_stats_summary_and_stats_line(tmp_path, bundle, backend) -> None:
    path = write_video(tmp_path / "line.avi", part_frames(8))
    _, stats = run(open_source(str(path)), backend, bundle, None)
    summary = stats.summary()
    assert summary["frames"] == 8 and summary["verdicts"] == {OK: 6, NG: 2, FAULT: 0}
    assert summary["latency_ms"]["infer"]["count"] == 8 and summary["backend_ms"]["compute"]["count"] == 8
    assert summary["loop_overhead_pct"] is not None
    json.dumps(summary, allow_nan=False)
    line = stats.line(time.perf_counter())
    assert line.startswith("daad run:") and "p99" in line and "NG 2" in line and "dropped 0" in line


def test_summarize_matches_numpy_within_the_documented_error_and_handles_no_samples() -> None:
    samples = [0.001, 0.002, 0.003, 0.004, 0.010]
    summary = summarize(samples)
    assert summary.count == 5 and summary.min == 0.001 and summary.max == 0.010
    assert summary.median == pytest.approx(0.003, rel=RELATIVE_ERROR)
    assert summary.p90 == pytest.approx(np.percentile(samples, 90), rel=RELATIVE_ERROR)
    assert summary.cv == pytest.approx(np.std(samples) / np.mean(samples))
    assert summarize([0.001, math.nan]).count == 1
    empty = summarize([])
    assert empty.count == 0 and math.isnan(empty.mean) and empty.to_ms()["mean"] is None
    assert summarize(np.array([0.002])).to_ms()["p99"] == 2.0


def test_histogram_percentiles_over_a_wide_spread_stay_within_half_a_percent() -> None:
    samples = np.random.default_rng(0).lognormal(mean=-5.0, sigma=2.0, size=20_000)
    samples[:5] = [0.0, 1e-9, 5e-8, 2e3, 5e4]  # below and above the bucket range: clamped, still counted
    histogram = LatencyHistogram()
    for value in samples:
        histogram.add(float(value))
    fractions = [0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999]
    exact = np.percentile(samples, [100 * f for f in fractions])
    assert np.allclose(histogram.quantiles(fractions), exact, rtol=RELATIVE_ERROR, atol=0)
    summary = histogram.summary()
    assert summary.mean == pytest.approx(samples.mean()) and summary.cv == pytest.approx(samples.std() / samples.mean())
    assert (summary.min, summary.max, summary.count) == (0.0, 5e4, 20_000)
    assert RELATIVE_ERROR < 0.005


def test_stage_times_use_the_same_memory_for_any_number_of_samples() -> None:
    times = StageTimes()
    for seconds in (1.0, 2.0, 3.0, 4.0):
        times.add({"infer": seconds})
    buckets = len(times._histograms["infer"].counts)
    for _ in range(10_000):
        times.add({"infer": 0.01})
    assert len(times._histograms["infer"].counts) == buckets
    assert times.summary("infer").min == 0.01 and times.summary("infer").count == 10_004
    assert times.stages() == ["infer"] and times.summary("other").count == 0


def test_ng_store_saves_overlays_and_removes_its_oldest_over_the_cap(tmp_path, bundle, backend) -> None:
    store = NgStore(tmp_path / "ng", max_bytes=10**9)
    images = part_frames(8, height=64, width=64)
    run(open_source(str(write_video(tmp_path / "v.avi", images))), backend, bundle, None,
        sinks=[SaveNg(store, bundle.preprocess, "run1")])
    saved = sorted((tmp_path / "ng").glob("*.png"))
    assert [path.name for path in saved] == ["run1_00000001_frame.png", "run1_00000005_frame.png"]
    overlay = cv2.imread(str(saved[0]))
    assert overlay.shape == (64, 64, 3) and overlay[32, 32, 2] > overlay[32, 32, 0]  # hot = red in JET
    capped = NgStore(tmp_path / "ng", max_bytes=saved[1].stat().st_size + 1)  # an earlier run's files count too
    assert capped.removed == 1 and [path.name for path in (tmp_path / "ng").glob("*.png")] == [saved[1].name]
    capped.save(grey_frame(8, 8), "newest")
    assert [path.name for path in (tmp_path / "ng").glob("*.png")] == ["newest.png"]


def test_overlay_leaves_the_frame_untouched_and_covers_the_crop(bundle) -> None:
    frame = grey_frame(40, 40, blob=250)
    before = frame.copy()
    image = heatmap_overlay(frame, np.ones((32, 32), np.float32), bundle.preprocess, ScoreScale(0.5), label="NG")
    assert np.array_equal(frame, before) and image.shape == (40, 40, 3) and not np.array_equal(image, frame)


def test_ng_images_that_cannot_be_written_do_not_stop_the_loop(tmp_path, bundle, backend) -> None:
    store = NgStore(tmp_path / "ng", max_bytes=10**9)
    shutil.rmtree(tmp_path / "ng")
    (tmp_path / "ng").write_text("a file where the folder was")  # the disk 'fails' under the store
    sink = SaveNg(store, bundle.preprocess, "run1")
    _, stats = run(open_source(str(write_video(tmp_path / "v.avi", part_frames(8)))), backend, bundle, None,
                   sinks=[sink])
    assert stats.frames == 8 and sink.counts == {"ng_saved": 0, "ng_removed": 0, "ng_save_failed": 2}


def test_stats_line_every_few_seconds_on_an_injected_clock() -> None:
    now, stream = [100.0], io.StringIO()
    stats = RunStats(every_s=5.0, stream=stream, counters=lambda: {"dropped": 3}, clock=lambda: now[0])
    for index in range(20):
        now[0] += 0.5  # 2 frames per second
        verdict = FAULT if index == 7 else OK
        stats.add(FrameEvent(frame=index, verdict=verdict, score=0.1, threshold=0.3, source="cam",
                             latency_ms={"infer": 10.0, "total": 20.0 + index}), {})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # at 5 s and at 10 s
    assert lines[0].startswith("daad run: 2.0 fps | latency p50 24.5 ms") and "FAULT 1" in lines[0]
    assert lines[0].endswith("dropped 3")


class Recorder:
    """A sink that keeps every outcome it is given."""

    def __init__(self) -> None:
        self.outcomes = []

    def emit(self, outcome) -> None:
        self.outcomes.append(outcome)

    def close(self) -> None:
        pass


class BrokenSink:
    """A plant output whose emit raises: always, and from frame `other_from` on with another cause."""

    def __init__(self, other_from: int) -> None:
        self.other_from = other_from

    def emit(self, outcome) -> None:
        if outcome.frame.index >= self.other_from:
            raise ValueError(f"bad value on frame {outcome.frame.index}")
        raise ConnectionError(f"gone on frame {outcome.frame.index}")

    def close(self) -> None:
        pass


def test_a_sink_that_raises_is_counted_and_logged_once_per_cause_and_the_loop_goes_on(
        tmp_path, bundle, backend, caplog) -> None:
    path = write_video(tmp_path / "line.avi", part_frames(12))
    decoded = [frame.image for frame in iter(open_source(str(path)).read, None)]
    after = Recorder()
    with caplog.at_level("ERROR"):
        _, stats = run(open_source(str(path)), backend, bundle, tmp_path / "events.jsonl",
                       sinks=[BrokenSink(other_from=8), after])
    events = read_events(tmp_path / "events.jsonl")
    assert [event["verdict"] for event in events] == direct_verdicts(decoded, backend, bundle)  # unaffected
    assert [outcome.frame.index for outcome in after.outcomes] == list(range(12))  # the sinks after it too
    assert stats.frames == 12 and stats.sink_errors == 12 and stats.summary()["sink_errors"] == 12
    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 2 and said[0].startswith("BrokenSink failed (ConnectionError: gone on frame 0)")
    assert said[1].startswith("BrokenSink failed (ValueError: bad value on frame 8)")


def test_a_threshold_switch_carries_its_whole_calibration_to_scores_and_pictures(tmp_path, bundle, backend) -> None:
    """A console save with the same threshold but a new typical good score: the readable score and the
    heat-map colours of every later frame follow the new calibration, not the start-up one."""
    start, saved = Calibration(ScoreScale(0.3, 0.0), "threshold-a"), Calibration(ScoreScale(0.3, 0.2), "threshold-b")
    live = LiveThreshold(start, "threshold.json")

    def switching_at_frame_4(frames):
        for frame in frames:
            if frame.index == 4:
                live.set(saved, "console save by anna")
            yield frame

    source, seen = open_source(str(write_video(tmp_path / "v.avi", part_frames(8)))), Recorder()
    with open_reader(source, "lossless", bundle.preprocess) as reader, EventLog(tmp_path / "e.jsonl") as events:
        run_loop(switching_at_frame_4(reader), backend, bundle.preprocess, live, source.name, events, [seen])
    lines = read_events(tmp_path / "e.jsonl")
    switch, frames = lines[4], lines[:4] + lines[5:]
    assert switch["event"] == "threshold_switch" and switch["threshold_id"] == "threshold-b"
    assert switch["typical_good"] == 0.2
    for line in frames:
        calibration = start if line["frame"] < 4 else saved
        assert line["threshold_id"] == calibration.entry
        assert line["index"] == calibration.scale.readable(line["score"])
    late = seen.outcomes[5]
    assert late.calibration == saved
    painted = {name: heatmap_overlay(late.frame.image, late.scored.anomaly_map, bundle.preprocess, calibration.scale)
               for name, calibration in (("start", start), ("saved", saved))}
    bottom = render(late, bundle.preprocess)[-1]  # the last row: below the label
    assert np.array_equal(bottom, painted["saved"][-1]) and not np.array_equal(bottom, painted["start"][-1])
