"""The camera loop: capture -> preprocess -> infer -> judge -> emit, one frame at a time.

`run_line` is the whole of it; sources, sinks, statistics and the product line (what judges each
frame: runtime.line.products) are small pieces it composes; `run_loop` runs it for one model. The
verdict goes out first: the event line, then the sinks in the order given (reject pin, plant
message, metrics), and last the pictures, which a background writer (runtime.line.artefacts)
only enqueues. Nothing in a frame can stop the loop: an empty frame, a failed inference or a
non-finite score becomes a FAULT event, and a sink that raises is counted and logged once per
cause (`sink_errors`) and tried again on the next frame; the next frame is read either way.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import IO, Callable, Iterable, Protocol, Sequence

import numpy as np

from runtime.backends.base import Backend
from runtime.line.events import (BAD_FRAME, FAULT, INFERENCE_FAILED, NG, OK, SCORE_NOT_FINITE, THRESHOLD_NOT_FINITE,
                                 EventLog, FrameEvent, judge)
from runtime.line.judged_by import JudgedBy
from runtime.line.latency import StageTimes
from runtime.line.live_threshold import Calibration, LiveThreshold
from runtime.line.products import ProductLine
from runtime.preprocess import PreprocessConfig, prepare_frame
from runtime.line.sources import Frame, FrameReader, Source

log = logging.getLogger(__name__)


@dataclass
class Scored:
    """What preprocessing and inference made of one frame."""

    score: float
    anomaly_map: np.ndarray | None  # H x W at model resolution; None on a fault
    fault: str | None = None  # why it is a FAULT, in words
    cause: str | None = None  # the fault's cause, one of runtime.line.events.FAULT_CAUSES
    seconds: dict[str, float] = field(default_factory=dict)  # preprocess, infer, in the loop's thread
    backend_seconds: dict[str, float] = field(default_factory=dict)  # h2d, compute, d2h


@dataclass
class Outcome:
    """A judged frame, as the sinks see it."""

    frame: Frame
    scored: Scored
    verdict: str
    calibration: Calibration  # what judged it: pictures and the readable score follow it through a switch
    event: FrameEvent | None = None  # its event line, once written
    product: str | None = None  # the product that judged it (None: a run of one --bundle)

    @property
    def threshold(self) -> float:
        return self.calibration.threshold


class Sink(Protocol):
    """An output of the loop; `emit` runs in the loop's thread, so it must never block."""

    def emit(self, outcome: Outcome) -> None: ...

    def close(self) -> None: ...


def score_frame(frame: Frame, backend: Backend, config: PreprocessConfig) -> Scored:
    """Preprocess and infer one frame; any failure is a fault with its reason, never an exception."""
    started = time.perf_counter()
    try:
        batch = (frame.prepared if frame.prepared is not None else prepare_frame(frame.image, config))[None]
    except Exception as exc:  # empty or undecodable frame
        return Scored(math.nan, None, f"bad frame: {exc}", BAD_FRAME, {"preprocess": time.perf_counter() - started})
    prepared = time.perf_counter()
    try:
        result = backend.infer(batch)
    except Exception as exc:  # a backend failure faults this frame; the next one may succeed
        log.debug("inference failed on frame %d", frame.index, exc_info=True)  # the event says why; this, where
        return Scored(math.nan, None, f"inference failed: {exc}", INFERENCE_FAILED, {"preprocess": prepared - started})
    seconds = {"preprocess": prepared - started, "infer": time.perf_counter() - prepared}
    score = float(result.scores[0])
    fault, cause = (None, None) if math.isfinite(score) else (f"score is {score}", SCORE_NOT_FINITE)
    return Scored(score, result.anomaly_maps[0, 0], fault, cause, seconds, dict(result.timings))


class RunStats:
    """Counts and per-stage latencies of a run; prints a stats line every `every_s` seconds."""

    def __init__(self, every_s: float = 5.0, stream: IO[str] | None = None,
                 counters: Callable[[], dict[str, int]] = dict, clock: Callable[[], float] = time.perf_counter) -> None:
        self.every_s, self.stream, self.counters, self.clock = every_s, stream or sys.stderr, counters, clock
        self.verdicts = {OK: 0, NG: 0, FAULT: 0}
        self.faults: Counter[str] = Counter()  # FAULT verdicts by cause
        self.sink_errors = 0  # emits that raised (the frame's verdict and event line were already out)
        self._said: set[tuple[str, str]] = set()  # (sink, exception type) already logged
        self.latency = StageTimes()  # seconds per event stage
        self.backend = StageTimes()  # seconds per backend stage (h2d, compute, d2h)
        self.cycle = StageTimes()  # seconds from one finished frame to the next
        self.judged_by = JudgedBy()  # frames per product and threshold: the run may change either
        self.first_at: float | None = None
        self.last_at: float | None = None
        self._window: list[float] = []
        self._window_start = clock()

    @property
    def frames(self) -> int:
        return sum(self.verdicts.values())

    def add(self, event: FrameEvent, backend_seconds: dict[str, float], outputs_s: float | None = None) -> None:
        """Count a written event; `outputs_s`: the time from its verdict to the last sink (see run_loop)."""
        now = self.clock()
        if self.last_at is None:
            self.first_at = now - event.latency_ms.get("total", 0.0) / 1e3
        else:
            self.cycle.add({"cycle": now - self.last_at})
        self.last_at = now
        self.verdicts[event.verdict] += 1
        self.judged_by.add(event)
        if event.fault_cause is not None:
            self.faults[event.fault_cause] += 1
        self.latency.add({stage: ms / 1e3 for stage, ms in event.latency_ms.items()})
        if outputs_s is not None:
            self.latency.add({"outputs": outputs_s})
        self.backend.add(backend_seconds)
        if self.every_s <= 0:  # no stats line: keep no window either (a run may last months)
            return
        self._window.append(event.latency_ms.get("total", math.nan))
        if now - self._window_start >= self.every_s:
            print(self.line(now), file=self.stream, flush=True)
            self._window, self._window_start = [], now

    def sink_failed(self, sink: Sink, exc: Exception) -> None:
        """Count a sink's failed emit; the first of each cause (sink and exception type) is logged."""
        self.sink_errors += 1
        cause = (type(sink).__name__, type(exc).__name__)
        if cause not in self._said:
            self._said.add(cause)
            log.error("%s failed (%s: %s); the verdict and its event line are out, the loop goes on and tries it "
                      "again on every frame (counted as sink_errors)", *cause, exc, exc_info=exc)

    def line(self, now: float) -> str:
        window = np.asarray(self._window, dtype=np.float64)
        fps = len(window) / max(now - self._window_start, 1e-9)
        p50, p99 = np.nanpercentile(window, [50, 99]) if window.size else (math.nan, math.nan)
        counts = " ".join(f"{key} {value}" for key, value in self.counters().items())
        causes = f" ({', '.join(f'{cause} {n}' for cause, n in sorted(self.faults.items()))})" if self.faults else ""
        errors = f" | sink_errors {self.sink_errors}" if self.sink_errors else ""
        verdicts = f"OK {self.verdicts[OK]} NG {self.verdicts[NG]} FAULT {self.verdicts[FAULT]}{causes}{errors}"
        return f"daad run: {fps:.1f} fps | latency p50 {p50:.1f} ms p99 {p99:.1f} ms | {verdicts} | {counts}"

    def summary(self) -> dict:
        """Counts, throughput and per-stage latency (ms) of the whole run, JSON-ready.

        loop_overhead_pct compares the median frame-to-frame interval with the median inference
        time: everything a frame costs beyond inference. It is the loop's own cost only when the
        source is faster than the model (lossless over a file); with a slower camera it is idle time.
        """
        elapsed = (self.last_at - self.first_at) if self.first_at is not None else 0.0
        infer, cycle = self.latency.summary("infer").median, self.cycle.summary("cycle").median
        overhead = 100.0 * (cycle - infer) / infer if infer > 0 and not math.isnan(cycle) else None
        return {
            "frames": self.frames,
            "verdicts": dict(self.verdicts),
            "faults": dict(sorted(self.faults.items())),
            "sink_errors": self.sink_errors,
            "products_run": self.judged_by.products(),
            "judged_by": self.judged_by.summary(),
            **self.counters(),
            "elapsed_s": round(elapsed, 3),
            "fps": round(self.frames / elapsed, 2) if elapsed > 0 else None,
            "loop_overhead_pct": None if overhead is None else round(overhead, 2),
            "latency_ms": {**self.latency.to_ms(), **self.cycle.to_ms()},
            "backend_ms": self.backend.to_ms(),
        }


def open_reader(source: Source, mode: str, config: PreprocessConfig,
                stop: threading.Event | None = None) -> FrameReader:
    """The capture thread `daad run` uses: in lossless mode it also preprocesses, overlapping that with inference."""
    prepare = partial(prepare_frame, config=config) if mode == "lossless" else None
    return FrameReader(source, mode, stop, prepare=prepare)


def frame_event(outcome: Outcome, source_name: str, taken: float, done: float) -> FrameEvent:
    """The event line of a judged frame; `taken`/`done`: perf_counter when the loop took it and finished it."""
    frame, scored = outcome.frame, outcome.scored
    seconds = {"capture": frame.read_s, "queue": taken - frame.ready_at, **scored.seconds,
               "postprocess": done - taken - sum(scored.seconds.values()), "total": done - frame.started_at}
    seconds["preprocess"] = seconds.get("preprocess", 0.0) + frame.prepare_s  # part may be in the reader
    fault, cause = (scored.fault, scored.cause) if scored.cause else threshold_fault(outcome)
    calibration = outcome.calibration
    return FrameEvent(frame=frame.index, verdict=outcome.verdict, score=scored.score, threshold=outcome.threshold,
                      source=source_name, index=calibration.scale.readable(scored.score) if fault is None else None,
                      threshold_id=calibration.entry, product=outcome.product, file=frame.name, fault=fault, fault_cause=cause,
                      latency_ms={stage: value * 1e3 for stage, value in seconds.items()})


def threshold_fault(outcome: Outcome) -> tuple[str | None, str | None]:
    """Why a frame with a good score is a FAULT, and the cause: its threshold is not a finite number
    (judge never passes on one); (None, None) for a judged frame."""
    if outcome.verdict != FAULT:
        return None, None
    return f"threshold is {outcome.threshold}", THRESHOLD_NOT_FINITE


def run_loop(frames: Iterable[Frame], backend: Backend, config: PreprocessConfig,
             threshold: float | Calibration | LiveThreshold,
             source_name: str, events: EventLog, sinks: Sequence[Sink] = (), stats: RunStats | None = None,
             max_frames: int | None = None) -> RunStats:
    """Score every frame with one model; a LiveThreshold is read once per frame (see run_line)."""
    return run_line(frames, ProductLine.single(backend, config, threshold), source_name, events, sinks, stats,
                    max_frames)


def run_line(frames: Iterable[Frame], line: ProductLine, source_name: str, events: EventLog,
             sinks: Sequence[Sink] = (), stats: RunStats | None = None, max_frames: int | None = None) -> RunStats:
    """Score every frame `frames` yields, until it ends or `max_frames` events were written.

    The line says what judges each frame; a switch of product or threshold is logged before the
    first frame it judges.
    """
    stats = stats or RunStats()
    for frame in frames:
        judging = line.at_frame(frame.index)
        if judging.switch is not None:
            events.write(judging.switch)
        product, setting = judging.product, judging.setting
        taken = time.perf_counter()
        scored = score_frame(frame, product.backend, product.preprocess)
        outcome = Outcome(frame, scored, judge(scored.score, setting.value), setting.calibration,
                          product=product.name)
        judged = time.perf_counter()
        outcome.event = frame_event(outcome, source_name, taken, judged)
        events.write(outcome.event)
        for sink in sinks:
            try:
                sink.emit(outcome)
            except Exception as exc:  # an output's failure costs that output, never the inspection
                stats.sink_failed(sink, exc)
        stats.add(outcome.event, scored.backend_seconds, outputs_s=time.perf_counter() - judged)
        if max_frames is not None and stats.frames >= max_frames:
            break
    return stats
