"""The measurement harness behind `daad bench`: per-stage latency of each backend on the same inputs.

Fixed frames (the default): every iteration is the camera loop's path on the same raw
camera-sized frames — runtime.preprocess, Backend.infer, verdict + map range — timed stage by
stage with perf_counter, after a timed warm-up, for at least `duration_s` and `min_iterations`
(trtexec's --duration / --iterations); capture is skipped. With a source, the camera loop
itself (runtime.line.loop.run_loop, the code of `daad run`) runs on it and its own per-stage
statistics are reported, capture and queueing included.

Backends report their device stages (h2d, compute, d2h) in InferenceResult.timings; a stage a
backend does not have is reported as skipped, with the reason, never as zero.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from runtime.backends.base import Backend, InferenceResult
from runtime.bundle import Bundle
from runtime.bench.environment import Environment, peak_flops
from runtime.errors import DaadError
from runtime.line.artefacts import ArtefactSettings, open_artefacts
from runtime.line.events import THRESHOLD_NOT_FINITE, EventLog, judge
from runtime.line.latency import LatencySummary, StageTimes
from runtime.line.loop import RunStats, run_loop
from runtime.preprocess import PreprocessConfig, prepare_batch
from runtime.line.sources import Frame, FrameReader, Pacer, Source

# In loop order; "inference" is the whole Backend.infer call (h2d + compute + d2h + its Python).
# "end_to_end" ends at the verdict; "outputs" follows it (event line, verdict sinks, picture queue).
STAGES = ("capture", "queue", "preprocess", "h2d", "compute", "d2h", "inference", "postprocess", "end_to_end",
          "outputs")
SOURCE_STAGES = ("capture", "queue", "outputs")  # only the camera loop has them (queue: frame waits for the loop)
# runtime.line.loop's stage names -> ours
LOOP_STAGES = {"capture": "capture", "queue": "queue", "preprocess": "preprocess", "infer": "inference",
               "postprocess": "postprocess", "total": "end_to_end", "outputs": "outputs"}
DEVICE_STAGES = ("h2d", "compute", "d2h")
# A taught bundle's backbone and memory head, each within compute (ONNX Runtime sessions or TensorRT
# engines): a case has them only where its backend reports them, so the split's cost is in the table.
PART_STAGES = ("backbone", "head")
STEADY_STAGES = ("compute", "inference", "end_to_end")  # the ones whose spread earns a warning
HIGH_CV = 0.10  # std/mean above this: clocks not locked, thermal throttling or a busy machine
REPEATABLE = 0.10  # medians of repeated runs within this fraction of each other
CAMERA_FRAME = (720, 1280)  # H, W of the raw frames a fixed-tensor run preprocesses

# Backend name, precision, batch -> a backend opened for that batch (a TensorRT engine that takes
# it); raises DaadError/ImportError when unavailable.
BackendOpener = Callable[[str, str, int], Backend]
# One call -> the raw frames of one batch.
FrameSupply = Callable[[], "list[np.ndarray]"]


@dataclass
class BenchConfig:
    """What to measure and for how long; defaults follow trtexec (warm-up, then a timed run)."""

    backends: tuple[str, ...] = ("onnxruntime",)
    precisions: tuple[str, ...] = ("fp32",)
    batches: tuple[int, ...] = (1,)
    warmup_s: float = 1.0
    duration_s: float = 5.0
    min_iterations: int = 10
    repeat: int = 1
    threshold: float | None = None  # the verdict's threshold; None: no verdict is calibrated yet
    source: str | None = None  # None: fixed camera-sized frames; else the URI of a real source
    save_ng: str | None = None  # with a source: NG pictures into this folder, as `daad run --save-ng`
    output: str | None = None  # with a source: the overlay video, as `daad run --output`
    fps: float | None = None  # with a file source: deliver it at this camera rate, in realtime mode

    def __post_init__(self) -> None:
        if not self.backends or not self.precisions or not self.batches:
            raise DaadError("daad bench needs at least one backend, precision and batch size")
        if min(self.batches) < 1 or self.min_iterations < 1 or self.repeat < 1:
            raise DaadError("--batch, --iterations and --repeat must be at least 1")
        if self.warmup_s < 0 or self.duration_s < 0:
            raise DaadError("--warmup-s and --duration-s must not be negative")


@dataclass
class StageStats:
    """One stage's latency (ms), its spread and throughput, or why it was not measured."""

    status: str  # "measured" | "skipped"
    reason: str = ""
    min: float | None = None
    mean: float | None = None
    median: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None
    cv: float | None = None
    count: int = 0
    throughput: float | None = None  # images/s if this stage alone ran back to back


@dataclass
class CaseResult:
    """One backend at one precision and batch size, in one run."""

    backend: str
    precision: str
    batch: int
    run: int
    status: str  # "measured" | "skipped"
    reason: str = ""
    stages: dict[str, StageStats] = field(default_factory=dict)
    compute_floor_ms: float | None = None  # FLOPs / device peak, when the peak is known
    loop_overhead: float | None = None  # (end to end - inference) / inference, from the means
    counts: dict[str, int] = field(default_factory=dict)  # with a source: pictures saved and dropped
    warnings: list[str] = field(default_factory=list)

    def median_ms(self, stage: str) -> float | None:
        stats = self.stages.get(stage)
        return stats.median if stats and stats.status == "measured" else None


@dataclass
class BenchReport:
    """Everything `daad bench` measured, with what it ran on; `to_dict` is the JSON output."""

    environment: dict[str, Any]
    model: dict[str, Any]
    config: dict[str, Any]
    cases: list[CaseResult]
    ratios: list[dict[str, Any]] = field(default_factory=list)
    repeatability: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def postprocess(result: InferenceResult, threshold: float | None) -> tuple[list[str], np.ndarray]:
    """What the loop does with a result: a verdict per frame (none without a threshold) and each map's range."""
    verdicts = [] if threshold is None else [judge(float(score), threshold) for score in result.scores]
    maps = result.anomaly_maps.reshape(len(result.anomaly_maps), -1)
    return verdicts, np.stack([maps.min(axis=1), maps.max(axis=1)], axis=1)


def fixed_frames(batch: int, size: tuple[int, int] = CAMERA_FRAME, seed: int = 0) -> FrameSupply:
    """A supply that hands out the same `batch` raw BGR camera frames every time."""
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, size=(*size, 3), dtype=np.uint8) for _ in range(batch)]
    return lambda: frames


def time_iteration(
    backend: Backend, supply: FrameSupply, preprocess: PreprocessConfig, threshold: float | None
) -> dict[str, float]:
    """One pass of the loop on fixed frames, seconds per stage."""
    start = time.perf_counter()
    batch = prepare_batch(supply(), preprocess)
    prepared = time.perf_counter()
    result = backend.infer(batch)
    inferred = time.perf_counter()
    postprocess(result, threshold)
    done = time.perf_counter()
    sample = {
        "preprocess": prepared - start,
        "inference": inferred - prepared,
        "postprocess": done - inferred,
        "end_to_end": done - start,
    }
    sample.update({stage: float(result.timings[stage]) for stage in (*DEVICE_STAGES, *PART_STAGES)
                   if stage in result.timings})  # fmt: skip
    return sample


def run_for(seconds: float, at_least: int, step: Callable[[], dict[str, float]]) -> StageTimes:
    """Call `step` for at least `seconds` and `at_least` times; its stage samples, collected."""
    times = StageTimes()
    start, count = time.perf_counter(), 0
    while count < at_least or time.perf_counter() - start < seconds:
        times.add(step())
        count += 1
    return times


def stage_stats(
    summaries: dict[str, LatencySummary], batch: int, backend: str, skipped: dict[str, str]
) -> dict[str, StageStats]:
    """Per-stage statistics; a stage without samples says why."""
    stats: dict[str, StageStats] = {}
    for stage in STAGES:
        summary = summaries.get(stage)
        if stage in skipped or summary is None or summary.count == 0:
            default = f"n/a: not reported by the {backend} backend" if stage in DEVICE_STAGES else "n/a: no samples"
            stats[stage] = StageStats("skipped", skipped.get(stage, default))
        else:
            throughput = batch / summary.mean if summary.mean > 0 else None
            stats[stage] = StageStats("measured", throughput=throughput, **summary.to_ms())
    for stage in PART_STAGES:  # only where reported: other bundles have no parts
        summary = summaries.get(stage)
        if summary is not None and summary.count > 0:
            stats[stage] = StageStats("measured", throughput=batch / summary.mean if summary.mean > 0 else None,
                                      **summary.to_ms())  # fmt: skip
    return stats


def finish_case(case: CaseResult, flops_per_image: float | None, device: str) -> None:
    """Add the compute floor and the high-variation warning to a measured case."""
    peak = peak_flops(device, case.precision)
    if flops_per_image and peak:
        case.compute_floor_ms = flops_per_image * case.batch / peak * 1000.0
    spreads = {stage: case.stages[stage].cv or 0.0 for stage in STEADY_STAGES}
    noisy = [f"{stage} {cv:.0%}" for stage, cv in spreads.items() if cv > HIGH_CV]
    if noisy:
        case.warnings.append(
            f"{case.backend} {case.precision} batch {case.batch}: high variation (CV {', '.join(noisy)} > "
            f"{HIGH_CV:.0%}): clocks not locked, thermal throttling or a busy machine; see docs/BENCHMARKING.md"
        )


def measure_fixed(
    backend: Backend, preprocess: PreprocessConfig, config: BenchConfig, batch: int, run: int
) -> CaseResult:
    """Warm up, then time the loop's path on fixed camera-sized frames (the same for every backend)."""
    supply = fixed_frames(batch)
    step = lambda: time_iteration(backend, supply, preprocess, config.threshold)  # noqa: E731
    run_for(config.warmup_s, 1, step)
    times = run_for(config.duration_s, config.min_iterations, step)
    skipped = {stage: f"n/a: fixed frames, no {stage} (use --source)" for stage in SOURCE_STAGES}
    case = CaseResult(backend.name, backend.precision, batch, run, "measured")
    case.stages = stage_stats({stage: times.summary(stage) for stage in (*STAGES, *PART_STAGES)}, batch, backend.name,
                              skipped)  # fmt: skip
    inference, end_to_end = times.summary("inference").mean, times.summary("end_to_end").mean
    case.loop_overhead = (end_to_end - inference) / inference if inference > 0 else None
    return case


def measure_loop(
    backend: Backend, source: Source, preprocess: PreprocessConfig, config: BenchConfig, run: int
) -> CaseResult:
    """The whole camera loop (runtime.line.loop.run_loop, lossless for files) on a real source; a file
    paced at `config.fps` runs in realtime mode, as a camera at that rate would (drops counted)."""
    supply = fixed_frames(1)
    run_for(config.warmup_s, 1, lambda: time_iteration(backend, supply, preprocess, config.threshold))
    stats = RunStats(every_s=0)
    # Without a threshold the loop's verdict is a FAULT that goes nowhere: no event file, no verdict
    # outputs, and `daad bench` refuses the pictures that would draw it.
    threshold = math.inf if config.threshold is None else config.threshold
    mode = "realtime" if source.live or config.fps else "lossless"
    pace = Pacer(config.fps) if config.fps else None
    pictures = ArtefactSettings(save_ng=Path(config.save_ng) if config.save_ng else None,
                                output=Path(config.output) if config.output else None)
    artefacts = open_artefacts(pictures, preprocess, getattr(source, "fps", 0.0) or 15.0, threading.Event())
    try:
        with FrameReader(source, mode, pace=pace) as reader, EventLog(None) as events:
            frames = _for_duration(reader, config.duration_s, config.min_iterations)
            run_loop(frames, backend, preprocess, threshold, source.name, events, [artefacts] if artefacts else [],
                     stats)
    finally:
        if artefacts is not None:
            artefacts.close()
    counts = {"read": reader.produced, "dropped": reader.dropped, **(artefacts.counts if artefacts else {})}
    case = CaseResult(backend.name, backend.precision, 1, run, "measured", counts=counts)
    if stats.frames == 0:
        case.status, case.reason = "skipped", f"source {source.name} delivered no frames"
        return case
    summaries = {stage: stats.latency.summary(loop_stage) for loop_stage, stage in LOOP_STAGES.items()}
    summaries.update({stage: stats.backend.summary(stage) for stage in (*DEVICE_STAGES, *PART_STAGES)})
    case.stages = stage_stats(summaries, 1, backend.name, {})
    case.warnings += unjudged(case, source, stats)
    summary = stats.summary()
    if summary["fps"]:
        case.stages["end_to_end"].throughput = summary["fps"]  # frames/s of the loop, with capture overlapped
    if summary["loop_overhead_pct"] is not None:
        case.loop_overhead = summary["loop_overhead_pct"] / 100.0
    return case


def unjudged(case: CaseResult, source: Source, stats: RunStats) -> list[str]:
    """What the source did not deliver whole, said: frames that were FAULTs (their stages stop where the
    fault did) and a source that ended early. Without a threshold every frame is one, said once elsewhere."""
    said = []
    faults = {cause: count for cause, count in sorted(stats.faults.items()) if cause != THRESHOLD_NOT_FINITE}
    if faults:
        case.counts["faults"] = sum(faults.values())
        causes = ", ".join(f"{cause} {count}" for cause, count in faults.items())
        said.append(f"{case.backend} {case.precision} batch 1: {case.counts['faults']} of {stats.frames} frames of "
                    f"{source.name} were FAULTs ({causes}): their latency stops where the fault did, and is in "
                    f"these numbers")
    if getattr(source, "warning", None):
        said.append(f"{case.backend} {case.precision} batch 1: {source.warning}")
    return said


def _for_duration(frames: Iterable[Frame], seconds: float, at_least: int) -> Iterator[Frame]:
    start = time.perf_counter()
    for count, frame in enumerate(frames, 1):
        yield frame
        if count >= at_least and time.perf_counter() - start >= seconds:
            return


def run_bench(
    bundle: Bundle,
    config: BenchConfig,
    open_backend: BackendOpener,
    environment: Environment,
    open_frames: Callable[[], Source] | None = None,
) -> BenchReport:
    """Every run x precision x backend x batch; a case that cannot open or fails is skipped, with why.

    Each batch size opens its own backend (a TensorRT engine is built for a largest batch).
    With `open_frames` (a fresh source per case, so every backend sees the same frames), the
    camera loop runs on it at batch 1; otherwise fixed camera-sized frames are used.
    """
    flops = (bundle.metadata.model_stats or {}).get("flops_per_image")
    cases: list[CaseResult] = []
    for run in range(1, config.repeat + 1):
        for precision in config.precisions:
            for name in config.backends:
                for batch in config.batches:
                    case = bench_case(bundle, config, open_backend, (name, precision, batch, run), open_frames)
                    if case.status == "measured":
                        finish_case(case, flops, environment.device)
                    cases.append(case)
    report = BenchReport(
        environment=environment.to_dict(),
        model=model_summary(bundle, environment.device, config.precisions),
        config=asdict(config),
        cases=cases,
        ratios=speedups(cases, config.backends),
        repeatability=repeatability(cases),
    )
    report.warnings = [no_threshold(bundle)] if config.threshold is None else []
    report.warnings += [warning for case in cases for warning in case.warnings]
    report.warnings += [
        f"{row['backend']} {row['precision']} batch {row['batch']}: medians of {len(row['medians_ms'])} runs "
        f"differ by {row['spread']:.0%} (> {REPEATABLE:.0%})"
        for row in report.repeatability
        if not row["repeatable"]
    ]
    return report


def no_threshold(bundle: Bundle) -> str:
    """What a bench of an uncalibrated bundle measured, said once."""
    return (f"{bundle.threshold_path} is missing, so no part was judged OK or NG: latency is measured up to the score, "
            f"without verdicts; calibrate it (`daad calibrate --bundle {bundle.root}`) to bench the verdict too")


def bench_case(
    bundle: Bundle,
    config: BenchConfig,
    open_backend: BackendOpener,
    case: tuple[str, str, int, int],
    open_frames: Callable[[], Source] | None,
) -> CaseResult:
    """One (backend, precision, batch, run) case, measured, or skipped with the reason."""
    name, precision, batch, run = case
    fixed_batch = bundle.metadata.input_shape[0] if bundle.metadata.input_shape else None
    if isinstance(fixed_batch, int) and batch != fixed_batch:
        reason = f"{bundle.onnx_path} was exported with a fixed batch of {fixed_batch}"
    elif open_frames is not None and batch != 1:
        reason = "the camera loop scores one frame at a time: batch 1 only with --source"
    else:
        try:
            with open_backend(name, precision, batch) as backend:
                if open_frames is None:
                    return measure_fixed(backend, bundle.preprocess, config, batch, run)
                return measure_loop(backend, open_frames(), bundle.preprocess, config, run)
        except (DaadError, ImportError) as exc:  # not installed, no engine for this batch, a refusal
            reason = str(exc) or type(exc).__name__
        except Exception as exc:  # a case that breaks is a row saying why; the other cases still run
            reason = f"failed: {type(exc).__name__}: {exc}"
    return CaseResult(name, precision, batch, run, "skipped", reason)


def model_summary(bundle: Bundle, device: str, precisions: tuple[str, ...]) -> dict[str, Any]:
    """Model size and cost, and the device peak the compute floor divides by."""
    meta = bundle.metadata
    stats = meta.model_stats or {}
    return {
        "bundle": str(bundle.root),
        "kind": meta.model_kind,
        "onnx_sha256": meta.onnx_sha256,
        "input_shape": meta.input_shape,
        "parameters": stats.get("parameters"),
        "flops_per_image": stats.get("flops_per_image"),
        "device": device,
        "peak_flops": {precision: peak_flops(device, precision) for precision in precisions},
    }


def speedups(cases: list[CaseResult], order: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per run, precision and batch: how many times faster each backend is than each later one."""
    rows = []
    measured = {(c.run, c.backend, c.precision, c.batch): c for c in cases if c.status == "measured"}
    for run, precision, batch in sorted({(c.run, c.precision, c.batch) for c in measured.values()}):
        for first, second in combinations(order, 2):
            a, b = measured.get((run, first, precision, batch)), measured.get((run, second, precision, batch))
            if a is None or b is None:
                continue
            row = {"backend": first, "baseline": second, "precision": precision, "batch": batch, "run": run}
            for stage in ("inference", "end_to_end"):
                fast, slow = a.median_ms(stage), b.median_ms(stage)
                row[f"{stage}_speedup"] = slow / fast if fast and slow else None
            rows.append(row)
    return rows


def repeatability(cases: list[CaseResult]) -> list[dict[str, Any]]:
    """End-to-end medians of the same case across runs, and whether they agree within 10%."""
    medians: dict[tuple[str, str, int], list[float]] = {}
    for case in cases:
        median = case.median_ms("end_to_end")
        if median is not None:
            medians.setdefault((case.backend, case.precision, case.batch), []).append(median)
    rows = []
    for (backend, precision, batch), values in medians.items():
        if len(values) > 1:
            spread = (max(values) - min(values)) / min(values)
            rows.append(
                {"backend": backend, "precision": precision, "batch": batch, "medians_ms": values,
                 "spread": spread, "repeatable": spread <= REPEATABLE}
            )
    return rows
