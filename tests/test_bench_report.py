"""Markdown rendering of a bench report: tables a reader can compare, skipped backends with why."""

from __future__ import annotations

import json

from runtime.bench.runner import PART_STAGES, BenchConfig, CaseResult, StageStats, run_bench
from runtime.backends.options import BackendOptions
from runtime.bench.cli import make_opener
from runtime.bench.report import STAGE_LABELS, render_markdown, write_json, write_markdown
from runtime.bundle import open_bundle
from runtime.bench.environment import Environment
from runtime.errors import MissingDependency


def _report(tiny_bundle) -> dict:
    bundle = open_bundle(tiny_bundle)
    base = make_opener(bundle, BackendOptions(), None)

    def opener(name: str, precision: str, batch: int):
        if name == "tensorrt":
            raise MissingDependency("tensorrt is not installed: install daad-edge[tensorrt]")
        return base(name, precision, batch)

    config = BenchConfig(backends=("onnxruntime", "tensorrt"), batches=(1, 4), warmup_s=0, duration_s=0,
                         min_iterations=3, repeat=2)
    jetson = {"model": "NVIDIA Jetson Orin NX", "l4t": "L4T R36.3.0", "jetpack": "6.0+b87",
              "nvpmodel": "MAXN (mode 0)", "jetson_clocks": "on"}
    environment = Environment(cpu_model="Test CPU", cpu_cores=2, jetson=jetson)
    return run_bench(bundle, config, opener, environment).to_dict()


def test_markdown_has_summary_stages_skips_and_environment(tiny_bundle) -> None:
    report = _report(tiny_bundle)
    text = render_markdown(report)
    summary = text.split("### Summary")[1].split("###")[0]
    summary_rows = [line for line in summary.splitlines() if line.startswith("| onnxruntime | fp32 |")]
    assert len(summary_rows) == 4  # 2 batches x 2 runs
    e2e = report["cases"][0]["stages"]["end_to_end"]
    assert f"| onnxruntime | fp32 | 1 | 1 | " in text and f"{e2e['median']:.3f}" in summary_rows[0]
    assert "- tensorrt fp32 (batch 1, 4): tensorrt is not installed: install daad-edge[tensorrt]" in text
    jetson = "Jetson: NVIDIA Jetson Orin NX, L4T R36.3.0, JetPack 6.0+b87, nvpmodel MAXN (mode 0), jetson_clocks on"
    assert jetson in text
    assert "device peak: fp32 1.88 TFLOP/s" in text
    assert "### Repeatability" in text and "| onnxruntime | fp32 | 4 |" in text
    for stage, label in STAGE_LABELS.items():  # a taught bundle's backbone and head only where reported
        assert (f"| {label} |" in text) is (stage not in PART_STAGES)
    assert text.count(": per stage") == 2  # the first run only


def test_markdown_and_json_files_round_trip(tiny_bundle, tmp_path) -> None:
    report = _report(tiny_bundle)
    write_json(report, tmp_path / "bench.json")
    write_markdown(json.loads((tmp_path / "bench.json").read_text()), tmp_path / "bench.md")
    assert (tmp_path / "bench.md").read_text() == render_markdown(report)


def test_speedup_table_rendering() -> None:
    stats = {"inference": StageStats("measured", median=1.0, p99=1.0, cv=0.0, throughput=1.0),
             "end_to_end": StageStats("measured", median=2.0, p99=2.0, cv=0.0, throughput=1.0)}
    report = {
        "environment": {}, "model": {}, "warnings": [], "repeatability": [],
        "config": {"source": None, "warmup_s": 1, "duration_s": 5, "min_iterations": 10},
        "cases": [CaseResult("onnxruntime", "fp32", 1, 1, "measured", stages=stats).__dict__ | {
            "stages": {name: s.__dict__ for name, s in stats.items()}}],
        "ratios": [{"backend": "onnxruntime", "baseline": "torch", "precision": "fp32", "batch": 1,
                    "inference_speedup": 2.345, "end_to_end_speedup": None}],
    }
    text = render_markdown(report)
    assert "| onnxruntime | torch | fp32 | 1 | 1 | 2.35x | – |" in text  # no "–x" for a missing ratio
