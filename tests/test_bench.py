"""`daad bench`: every stage and statistic in the JSON, percentiles within the histogram error, skipped backends."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.backends.options import BackendOptions
from runtime.bench import cli as bench_cli
from runtime.cli import main as daad
from runtime.backends.base import InferenceResult
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.bench.runner import STAGES, BenchConfig, CaseResult, StageStats, measure_fixed, repeatability, run_bench, speedups
from runtime.bundle import open_bundle
from runtime.bench.environment import Environment
from runtime.errors import DaadError, MissingDependency
from runtime.line.latency import RELATIVE_ERROR
from runtime.line.sources import Pacer

STATISTICS = ("min", "mean", "median", "p90", "p95", "p99", "max", "cv", "count", "throughput")
QUICK = ["--warmup-s", "0", "--duration-s", "0"]


def bench_json(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "bench.json"
    assert bench_cli.main([*args, *QUICK, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_json_has_every_stage_and_statistic(tiny_bundle, tmp_path, capsys) -> None:
    report = bench_json(tmp_path, "--bundle", str(tiny_bundle), "--backend", "onnxruntime", "--batch", "1,2",
                        "--iterations", "5")
    assert {"environment", "model", "config", "cases", "ratios", "repeatability", "warnings"} <= report.keys()
    assert [(case["batch"], case["status"]) for case in report["cases"]] == [(1, "measured"), (2, "measured")]
    for case in report["cases"]:
        assert set(case["stages"]) == set(STAGES)
        for stage in ("preprocess", "compute", "inference", "postprocess", "end_to_end"):
            stats = case["stages"][stage]
            assert stats["status"] == "measured" and stats["count"] == 5
            assert all(stats[key] is not None for key in STATISTICS), stage
            ordered = [stats[key] for key in ("min", "median", "p90", "p95", "p99", "max")]
            assert ordered == sorted(ordered)
        assert case["stages"]["capture"]["status"] == "skipped" and "--source" in case["stages"]["capture"]["reason"]
        assert "not reported" in case["stages"]["h2d"]["reason"]
        e2e = case["stages"]["end_to_end"]
        assert e2e["throughput"] == pytest.approx(case["batch"] * 1000.0 / e2e["mean"], rel=1e-3)
        assert case["loop_overhead"] > 0  # preprocessing 1280x720 frames costs something beyond inference
    assert "| onnxruntime | fp32 | 2 | 1 |" in capsys.readouterr().out


class ScriptedBackend:
    """Reports device-stage timings from a known script, so the statistics can be checked exactly."""

    name, precision = "scripted", "fp32"

    def __init__(self, timings: list[dict[str, float]]) -> None:
        self.timings = iter(timings)

    def infer(self, frames: np.ndarray) -> InferenceResult:
        count = len(frames)
        maps = np.zeros((count, 1, *frames.shape[1:3]), dtype=np.float32)
        return InferenceResult(np.zeros(count, dtype=np.float32), maps, next(self.timings))

    def close(self) -> None: ...

    def __enter__(self) -> "ScriptedBackend":
        return self

    def __exit__(self, *exc: object) -> None: ...


def test_stage_statistics_match_numpy_within_the_histogram_error(tiny_bundle) -> None:
    rng = np.random.default_rng(3)
    script = {stage: rng.lognormal(-6, 0.5, size=41) for stage in ("h2d", "compute", "d2h")}
    timings = [{stage: float(values[i]) for stage, values in script.items()} for i in range(41)]
    config = BenchConfig(warmup_s=0, duration_s=0, min_iterations=40)
    case = measure_fixed(ScriptedBackend(timings), open_bundle(tiny_bundle).preprocess, config, batch=3, run=1)
    for stage, values in script.items():
        measured = values[1:] * 1000.0  # the first call is the warm-up, discarded
        stats = case.stages[stage]
        expected = [measured.min(), measured.mean(), *np.percentile(measured, [50, 90, 95, 99]), measured.max()]
        got = [stats.min, stats.mean, stats.median, stats.p90, stats.p95, stats.p99, stats.max]
        np.testing.assert_allclose(got, expected, rtol=RELATIVE_ERROR, atol=1e-4)  # + to_ms rounding
        assert stats.cv == pytest.approx(measured.std() / measured.mean(), abs=1e-4)
        assert stats.count == 40
        assert stats.throughput == pytest.approx(3 / (values[1:].mean()), rel=1e-3)


def test_missing_backends_are_skipped_with_the_reason(tiny_bundle, tmp_path) -> None:
    def opener(name: str, precision: str, batch: int):
        if name == "ghost":
            raise MissingDependency("ghost is not installed: install daad-edge[ghost]")
        return bench_cli.make_opener(open_bundle(tiny_bundle), BackendOptions(), None)(name, precision, batch)

    config = BenchConfig(backends=("ghost", "onnxruntime", "torch"), batches=(1, 2), warmup_s=0, duration_s=0,
                         min_iterations=2)
    report = run_bench(open_bundle(tiny_bundle), config, opener, Environment()).to_dict()
    status = {(c["backend"], c["batch"]): (c["status"], c["reason"]) for c in report["cases"]}
    ghost = ("skipped", "ghost is not installed: install daad-edge[ghost]")
    assert status[("ghost", 1)] == status[("ghost", 2)] == ghost
    assert status[("onnxruntime", 2)][0] == "measured"
    assert status[("torch", 1)][0] == "skipped" and "--checkpoint" in status[("torch", 1)][1]
    assert report["ratios"] == []  # nothing to compare onnxruntime with


@pytest.mark.skipif(bool(__import__("importlib").util.find_spec("tensorrt")), reason="TensorRT is installed here")
def test_tensorrt_absent_is_skipped_by_the_cli(tiny_bundle, tmp_path) -> None:
    report = bench_json(tmp_path, "--bundle", str(tiny_bundle), "--backend", "tensorrt,onnxruntime",
                        "--precision", "fp32,fp16", "--iterations", "1")
    cases = {(c["backend"], c["precision"]): c for c in report["cases"]}
    assert cases[("tensorrt", "fp32")]["status"] == "skipped" and "tensorrt" in cases[("tensorrt", "fp32")]["reason"]
    ort_fp16 = cases[("onnxruntime", "fp16")]
    assert ort_fp16["status"] == "skipped" and "fp32 only" in ort_fp16["reason"]
    assert cases[("onnxruntime", "fp32")]["status"] == "measured"


def test_unknown_backend_name_is_a_user_error(tiny_bundle, capsys) -> None:
    with pytest.raises(SystemExit) as ended:
        bench_cli.main(["--bundle", str(tiny_bundle), "--backend", "onnxrt"])
    assert ended.value.code == 2
    assert "'onnxrt': choose from onnxruntime, tensorrt, torch" in capsys.readouterr().err


def register_reference(monkeypatch, value: str) -> None:
    """Register `torch` as a package's pyproject would, but pointing at `value`."""
    entry = EntryPoint(name="torch", value=value, group=bench_cli.REFERENCE_GROUP)
    monkeypatch.setattr(bench_cli, "reference_backends", lambda: {"torch": entry})


def test_reference_backend_is_resolved_by_name_and_compared(tiny_bundle, tmp_path, monkeypatch) -> None:
    """A stand-in for the registered PyTorch reference: loaded by its entry point only when asked for."""
    (tmp_path / "standin_reference.py").write_text(textwrap.dedent("""
        from pathlib import Path

        from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
        from runtime.bundle import open_bundle

        class Reference(OnnxRuntimeBackend):
            name = "torch"

            @classmethod
            def from_checkpoint(cls, path):
                return cls(open_bundle(Path(path).read_text().strip()))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    register_reference(monkeypatch, "standin_reference:Reference.from_checkpoint [train]")
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_text(str(tiny_bundle))
    report = bench_json(tmp_path, "--bundle", str(tiny_bundle), "--backend", "onnxruntime,torch",
                        "--checkpoint", str(checkpoint), "--iterations", "3")
    assert [c["status"] for c in report["cases"]] == ["measured", "measured"]
    (ratio,) = report["ratios"]
    assert (ratio["backend"], ratio["baseline"], ratio["batch"]) == ("onnxruntime", "torch", 1)
    assert ratio["inference_speedup"] > 0 and ratio["end_to_end_speedup"] > 0


def test_torch_and_export_are_not_imported_unless_asked(tiny_bundle) -> None:
    code = (
        "import sys\n"
        "from runtime.bench import cli as bench_cli\n"
        f"bench_cli.main(['--bundle', {str(tiny_bundle)!r}, '--backend', 'onnxruntime,tensorrt', "
        "'--warmup-s', '0', '--duration-s', '0', '--iterations', '1'])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'export', 'train'))\n"
        "assert not bad, bad\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _case(backend: str, batch: int, run: int, inference: float, end_to_end: float) -> CaseResult:
    stages = {"inference": StageStats("measured", median=inference),
              "end_to_end": StageStats("measured", median=end_to_end)}
    return CaseResult(backend, "fp32", batch, run, "measured", stages=stages)


def test_speedups_and_repeatability_from_medians() -> None:
    cases = [_case("onnxruntime", 1, 1, 2.0, 4.0), _case("torch", 1, 1, 5.0, 7.0),
             _case("onnxruntime", 1, 2, 2.1, 4.6), _case("torch", 1, 2, 5.0, 7.0)]
    first, second = speedups(cases, ("onnxruntime", "tensorrt", "torch"))
    assert (first["run"], second["run"]) == (1, 2)
    assert first["inference_speedup"] == pytest.approx(2.5) and first["end_to_end_speedup"] == pytest.approx(1.75)
    assert second["end_to_end_speedup"] == pytest.approx(7.0 / 4.6)
    rows = {r["backend"]: r for r in repeatability(cases)}
    assert rows["onnxruntime"]["spread"] == pytest.approx(0.15) and not rows["onnxruntime"]["repeatable"]
    assert rows["torch"]["spread"] == 0 and rows["torch"]["repeatable"]


def test_source_runs_the_whole_camera_loop_on_a_lossless_video(tiny_bundle, tmp_path) -> None:
    video = tmp_path / "part.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"FFV1"), 30, (64, 48))
    assert writer.isOpened()
    for index in range(12):
        writer.write(np.full((48, 64, 3), 10 * index, dtype=np.uint8))
    writer.release()
    report = bench_json(tmp_path, "--bundle", str(tiny_bundle), "--backend", "onnxruntime", "--batch", "1,2",
                        "--source", str(video), "--iterations", "1000")
    measured, skipped = report["cases"]
    assert "one frame at a time" in skipped["reason"]
    assert measured["stages"]["capture"]["status"] == "measured"
    assert measured["stages"]["end_to_end"]["count"] == 12  # lossless: every frame of the file, no more
    assert measured["loop_overhead"] is not None and report["config"]["source"] == str(video)


def test_source_with_pictures_measures_them_behind_the_verdict(tiny_bundle, tmp_path, capsys) -> None:
    from test_run_cli import calibrate
    from test_sources import part_frames, write_video

    calibrate(tiny_bundle)
    video = write_video(tmp_path / "line.avi", part_frames(12))
    ng, overlay = tmp_path / "ng", tmp_path / "overlay.avi"
    report = bench_json(tmp_path, "--bundle", str(tiny_bundle), "--backend", "onnxruntime", "--source", str(video),
                        "--save-ng", str(ng), "--output", str(overlay), "--iterations", "1000")
    (case,) = report["cases"]
    assert case["stages"]["outputs"]["status"] == "measured" and case["stages"]["end_to_end"]["count"] == 12
    counts = case["counts"]
    assert counts["ng_saved"] == len(list(ng.glob("*.png"))) and counts["ng_saved"] + counts["artefacts_dropped"] >= 3
    assert overlay.is_file() and "Frames and pictures: read 12, dropped 0, artefacts_dropped" in capsys.readouterr().out


def test_a_bundle_without_a_threshold_is_benched_without_verdicts_and_says_so_once(tiny_bundle, tmp_path,
                                                                                    capsys) -> None:
    """It judged every frame against an infinite threshold, a FAULT each, and never said so."""
    from test_sources import part_frames, write_video

    video = write_video(tmp_path / "line.avi", part_frames(12))
    report = bench_json(tmp_path, "--bundle", str(tiny_bundle), "--backend", "onnxruntime", "--source", str(video),
                        "--iterations", "1000")
    (case,) = report["cases"]
    assert case["status"] == "measured" and case["stages"]["end_to_end"]["count"] == 12
    said = f"{tiny_bundle / 'threshold.json'} is missing, so no part was judged OK or NG"
    captured = capsys.readouterr()
    assert [warning for warning in report["warnings"] if "threshold" in warning] == [report["warnings"][0]]
    assert report["warnings"][0].startswith(said) and captured.err.count(said) == 1
    assert captured.out.count(said) == 1  # in the report's warnings, once for the whole run
    with pytest.raises(DaadError, match=r"--save-ng and --output draw the verdicts, .*threshold.json is missing: "
                                        r"calibrate the bundle first"):
        bench_cli.main(["--bundle", str(tiny_bundle), "--source", str(video), "--output", str(tmp_path / "o.avi"),
                        *QUICK])


def test_frames_that_fault_in_the_loop_and_a_source_that_ends_early_are_said(tiny_bundle, tmp_path, capsys) -> None:
    """A damaged image in the source was a FAULT the loop timed (preprocess only), and a truncated video ended
    early; the report mentioned neither."""
    from test_run_cli import calibrate
    from test_sources import damaged_copies
    from tiny_bundle import grey_frame

    calibrate(tiny_bundle)
    parts = tmp_path / "parts"
    parts.mkdir()
    for index in range(6):
        cv2.imwrite(str(parts / f"{index}.png"), grey_frame(40, 48))
    (parts / "6.png").write_bytes(b"not a picture")
    report = bench_json(tmp_path, "--bundle", str(tiny_bundle), "--backend", "onnxruntime", "--source", str(parts),
                        "--iterations", "1000")
    (case,) = report["cases"]
    assert case["stages"]["end_to_end"]["count"] == 7 and case["counts"]["faults"] == 1
    said = f"onnxruntime fp32 batch 1: 1 of 7 frames of {parts} were FAULTs (bad_frame 1)"
    assert [warning for warning in report["warnings"] if warning.startswith(said)] == case["warnings"][:1]
    assert capsys.readouterr().err.count(said) == 1
    _, half, _ = damaged_copies(tmp_path)
    (case,) = bench_json(tmp_path, "--bundle", str(tiny_bundle), "--backend", "onnxruntime", "--source", str(half),
                         "--iterations", "1000")["cases"]
    ended = f"onnxruntime fp32 batch 1: source {half} ended after "
    assert any(warning.startswith(ended) for warning in case["warnings"])


def test_fps_paces_a_file_like_a_camera_in_realtime_mode(tiny_bundle, tmp_path, capsys) -> None:
    """A 12-frame recording, looped and delivered at 30 frames/s for a second: about 30 reads, never the
    hundreds an unpaced file gives; realtime mode, so a frame the loop missed is dropped and counted."""
    from test_sources import part_frames, write_video

    video = write_video(tmp_path / "line.avi", part_frames(12))
    out = tmp_path / "bench.json"
    assert bench_cli.main(["--bundle", str(tiny_bundle), "--backend", "onnxruntime", "--source", str(video), "--fps",
                           "30", "--warmup-s", "0", "--duration-s", "1", "--iterations", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    (case,) = report["cases"]
    counts, judged = case["counts"], case["stages"]["end_to_end"]["count"]
    assert report["config"]["fps"] == 30 and 12 < counts["read"] <= 30 * 1.5 + 2  # looped, and paced
    assert judged + counts["dropped"] <= counts["read"] <= judged + counts["dropped"] + 1  # one may be in hand
    assert "paced at 30 fps (realtime mode)" in capsys.readouterr().out


def test_fps_needs_a_recording(tiny_bundle, tmp_path) -> None:
    with pytest.raises(DaadError, match="--fps paces a recording: add --source"):
        bench_cli.main(["--bundle", str(tiny_bundle), "--fps", "30", *QUICK])


def test_a_pacer_holds_each_read_to_its_due_time_and_never_bursts_to_catch_up() -> None:
    now, waits = [0.0], []

    def sleep(seconds: float) -> None:
        waits.append(round(seconds, 6))
        now[0] += seconds

    pace = Pacer(10.0, clock=lambda: now[0], sleep=sleep)
    pace()  # the first frame: at once
    now[0] += 0.03  # it took 30 ms to decode
    pace()  # the second is due at 100 ms
    now[0] += 0.35  # the reader fell behind by a quarter second
    pace()  # no wait: behind
    pace()  # the next is due one interval later, not at once
    assert waits == [0.07, 0.1]
    with pytest.raises(DaadError, match="--fps must be a positive finite number"):
        Pacer(0.0)


def test_pictures_without_a_source_are_refused(tiny_bundle, tmp_path) -> None:
    with pytest.raises(DaadError, match="add --source"):
        bench_cli.main(["--bundle", str(tiny_bundle), "--save-ng", str(tmp_path / "ng"), *QUICK])


def test_reference_backend_without_its_package_names_the_extra(tiny_bundle, monkeypatch) -> None:
    register_reference(monkeypatch, "no_such_module_here:Backend.from_checkpoint [train]")
    opener = bench_cli.make_opener(open_bundle(tiny_bundle), BackendOptions(), None)
    with pytest.raises(MissingDependency, match=r"daad-edge\[train\]"):
        opener("torch", "fp32", 1)


def test_batches_a_fixed_batch_bundle_cannot_take_are_skipped(tiny_bundle) -> None:
    metadata = json.loads((tiny_bundle / "model.json").read_text())
    metadata["input_shape"] = [1, 32, 32, 3]
    (tiny_bundle / "model.json").write_text(json.dumps(metadata))
    config = BenchConfig(batches=(1, 4), warmup_s=0, duration_s=0, min_iterations=1)
    bundle = open_bundle(tiny_bundle)
    report = run_bench(bundle, config, bench_cli.make_opener(bundle, BackendOptions(), None), Environment())
    assert [case.status for case in report.cases] == ["measured", "skipped"]
    assert "fixed batch of 1" in report.cases[1].reason


class CappedBackend(OnnxRuntimeBackend):
    """ONNX Runtime that, like a TensorRT engine, takes at most `max_batch` frames per call."""

    name = "capped"

    def __init__(self, bundle, max_batch: int) -> None:
        super().__init__(bundle)
        self.max_batch = max_batch

    def infer(self, frames: np.ndarray) -> InferenceResult:
        if len(frames) > self.max_batch:
            raise ValueError(f"this engine takes 1..{self.max_batch} frames, got {len(frames)}")
        return super().infer(frames)


class StuckBackend(CappedBackend):
    name = "stuck"


def test_each_batch_opens_a_backend_that_fits_it_and_a_failing_case_is_a_skipped_row(tiny_bundle) -> None:
    bundle = open_bundle(tiny_bundle)
    engines = {1: 1, 8: 8}  # batch -> the max batch of the engine built for it (as `daad build --batch`)
    opened = []

    def opener(name: str, precision: str, batch: int):
        opened.append((name, batch))
        if name == "capped":
            if batch not in engines:
                raise DaadError(f"no engine for batch {batch}: run `daad build --batch {batch}`")
            return CappedBackend(bundle, engines[batch])
        return StuckBackend(bundle, max_batch=1)  # always the batch-1 engine, as bench opened before

    config = BenchConfig(backends=("capped", "stuck"), batches=(1, 8, 4), warmup_s=0, duration_s=0, min_iterations=2)
    cases = {(c.backend, c.batch): c for c in run_bench(bundle, config, opener, Environment()).cases}
    assert opened == [("capped", 1), ("capped", 8), ("capped", 4), ("stuck", 1), ("stuck", 8), ("stuck", 4)]
    assert [cases[("capped", b)].status for b in (1, 8)] == ["measured", "measured"]
    assert cases[("capped", 4)].reason == "no engine for batch 4: run `daad build --batch 4`"
    assert cases[("stuck", 1)].status == "measured"
    failed = cases[("stuck", 8)]
    assert failed.status == "skipped" and failed.reason == "failed: ValueError: this engine takes 1..1 frames, got 8"
    assert cases[("stuck", 4)].status == "skipped"  # and the run went on to the end


def test_an_unwritable_json_is_refused_before_measuring(tiny_bundle, tmp_path, capsys) -> None:
    (tmp_path / "a-file").write_text("")
    bad = tmp_path / "a-file" / "bench.json"
    assert daad(["bench", "--bundle", str(tiny_bundle), "--backend", "onnxruntime", *QUICK, "--json", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and f"cannot write {bad.parent}" in captured.err and "not a folder" in captured.err
    assert daad(["bench", "--bundle", str(tiny_bundle), "--backend", "onnxruntime", *QUICK,
                 "--json", str(tiny_bundle / "bench.json")]) == 2
    assert "lies inside --bundle" in capsys.readouterr().err


def test_a_full_disk_at_the_end_still_prints_the_measurement(tiny_bundle, small_disk, capsys) -> None:
    small_disk.fill()
    target = small_disk / "bench.json"
    assert daad(["bench", "--bundle", str(tiny_bundle), "--backend", "onnxruntime", "--iterations", "3", *QUICK,
                 "--json", str(target)]) == 2
    captured = capsys.readouterr()
    assert "| onnxruntime | fp32 | 1 |" in captured.out  # measured and printed before the write failed
    printed = json.loads(captured.out[captured.out.index("\n{") + 1:])  # every number the file would have held
    assert printed["cases"][0]["stages"]["compute"]["count"] == 3
    assert f"cannot write {target}" in captured.err and "the disk is full" in captured.err
    errors = [line for line in captured.err.splitlines() if not line.startswith("daad bench: warning:")]
    assert len(errors) == 1 and "Traceback" not in captured.err and not target.exists()


@pytest.mark.parametrize("flag, value", [("--duration-s", "inf"), ("--duration-s", "nan"), ("--warmup-s", "-1")])
def test_durations_that_would_never_end_or_mean_nothing_are_one_line(flag, value, tiny_bundle, capsys) -> None:
    """--duration-s inf measured forever; nan silently meant 0."""
    with pytest.raises(SystemExit) as ended:
        bench_cli.main(["--bundle", str(tiny_bundle), flag, value])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert ended.value.code == 2 and f"argument {flag}: must be a finite number of seconds, 0 or more" in error
