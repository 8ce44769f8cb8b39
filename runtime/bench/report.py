"""`daad bench` results as Markdown tables and JSON.

Rendering works on the JSON dictionary (BenchReport.to_dict), so a saved JSON can be rendered
again later (experiments/results.py puts it into docs/RESULTS.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime.atomic import atomic_write_json, atomic_write_text
from runtime.bench.runner import CAMERA_FRAME, PART_STAGES, STAGES

STAGE_LABELS = {
    "capture": "capture/decode",
    "queue": "queue (frame waits for the loop)",
    "preprocess": "preprocess",
    "h2d": "host to device",
    "compute": "compute",
    "backbone": "  backbone (of compute)",
    "head": "  memory head (of compute)",
    "d2h": "device to host",
    "inference": "inference (infer call)",
    "postprocess": "postprocess",
    "end_to_end": "end to end",
    "outputs": "verdict outputs and picture queue",
}
REPORT_ORDER = tuple(name for stage in STAGES for name in ((stage, *PART_STAGES) if stage == "compute" else (stage,)))
STAT_COLUMNS = ("min", "mean", "median", "p90", "p95", "p99", "max")


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    return atomic_write_json(path, report)


def write_markdown(report: dict[str, Any], path: str | Path) -> Path:
    return atomic_write_text(path, render_markdown(report))


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def environment_lines(env: dict[str, Any]) -> list[str]:
    packages = ", ".join(f"{name} {version}" for name, version in env.get("packages", {}).items())
    lines = [
        f"- CPU: {env.get('cpu_model')} ({env.get('cpu_cores')} cores usable, governor {env.get('cpu_governor')})",
        f"- GPU: {env.get('gpu')}; CUDA toolkit: {env.get('cuda')}",
        f"- OS: {env.get('os')}; Python {env.get('python')}",
        f"- packages: {packages}",
    ]
    jetson = env.get("jetson") or {}
    if jetson:
        lines.append(
            f"- Jetson: {jetson.get('model')}, {jetson.get('l4t')}, JetPack {jetson.get('jetpack', 'unknown')}, "
            f"nvpmodel {jetson.get('nvpmodel')}, "
            f"jetson_clocks {jetson.get('jetson_clocks')}"
        )
    return lines


def model_lines(model: dict[str, Any]) -> list[str]:
    params, flops = model.get("parameters"), model.get("flops_per_image")
    peaks = {p: v for p, v in (model.get("peak_flops") or {}).items() if v}
    peak_text = ", ".join(f"{p} {v / 1e12:g} TFLOP/s" for p, v in peaks.items()) or "unknown for this device (no floor)"
    return [
        f"- model: {model.get('kind')} ({model.get('bundle')}), input {model.get('input_shape')}",
        f"- parameters: {params if params is not None else 'unknown'}; "
        f"FLOPs per image: {f'{flops / 1e9:.3f} G' if flops else 'unknown'}",
        f"- device peak: {peak_text}",
    ]


def summary_table(cases: list[dict[str, Any]]) -> list[str]:
    """One line per measured case: the numbers a reader compares first."""
    rows = []
    for case in cases:
        if case["status"] != "measured":
            continue
        inference, e2e = case["stages"]["inference"], case["stages"]["end_to_end"]
        overhead = case.get("loop_overhead")
        rows.append(
            [
                case["backend"],
                case["precision"],
                str(case["batch"]),
                str(case["run"]),
                _number(inference["median"]),
                _number(e2e["median"]),
                _number(e2e["p99"]),
                _number(e2e["cv"], 3),
                _number(e2e["throughput"], 1),
                "–" if overhead is None else f"{overhead:.1%}",
                _number(case.get("compute_floor_ms"), 4),
            ]
        )
    header = ["backend", "precision", "batch", "run", "inference median ms", "end-to-end median ms",
              "end-to-end p99 ms", "CV", "images/s", "loop overhead", "compute floor ms"]
    return _table(header, rows)


def skipped_lines(cases: list[dict[str, Any]]) -> list[str]:
    """Each skipped backend/precision once, with its batch sizes and the reason."""
    batches: dict[tuple[str, str, str], list[str]] = {}
    for case in cases:
        if case["status"] != "measured":
            key = (case["backend"], case["precision"], case["reason"])
            if str(case["batch"]) not in batches.setdefault(key, []):
                batches[key].append(str(case["batch"]))
    return [f"- {backend} {precision} (batch {', '.join(sizes)}): {reason}"
            for (backend, precision, reason), sizes in batches.items()]


def stage_table(case: dict[str, Any]) -> list[str]:
    rows = []
    for stage in (stage for stage in REPORT_ORDER if stage in case["stages"]):
        stats = case["stages"][stage]
        if stats["status"] != "measured":
            rows.append([STAGE_LABELS[stage], stats["reason"]] + [""] * (len(STAT_COLUMNS) + 1))
            continue
        rows.append(
            [STAGE_LABELS[stage]]
            + [_number(stats[column]) for column in STAT_COLUMNS]
            + [_number(stats["cv"]), _number(stats["throughput"], 1)]
        )
    return _table(["stage", *(f"{c} ms" for c in STAT_COLUMNS), "CV", "images/s"], rows)


def render_markdown(report: dict[str, Any], title: str = "daad bench") -> str:
    config = report["config"]
    fixed = f"fixed camera-sized frames ({CAMERA_FRAME[1]}x{CAMERA_FRAME[0]} BGR)"
    paced = f" paced at {config['fps']:g} fps (realtime mode)" if config.get("fps") else ""
    inputs = f"source {config['source']}{paced}" if config.get("source") else fixed
    lines = [f"## {title}", "", f"Inputs: {inputs}; warm-up {config['warmup_s']} s, "
             f"then at least {config['duration_s']} s and {config['min_iterations']} iterations per case.", ""]
    lines += ["### Environment", "", *environment_lines(report["environment"]), ""]
    lines += ["### Model", "", *model_lines(report["model"]), ""]
    lines += ["### Summary", "", *summary_table(report["cases"]), ""]
    skipped = skipped_lines(report["cases"])
    if skipped:
        lines += ["### Skipped", "", *skipped, ""]
    if report.get("ratios"):
        rows = [
            [r["backend"], r["baseline"], r["precision"], str(r["batch"]), str(r.get("run", 1)),
             _ratio(r["inference_speedup"]), _ratio(r["end_to_end_speedup"])]
            for r in report["ratios"]
        ]
        lines += ["### Speed-up (ratio of medians)", "",
                  *_table(["backend", "vs", "precision", "batch", "run", "inference", "end to end"], rows), ""]
    if report.get("repeatability"):
        rows = [
            [r["backend"], r["precision"], str(r["batch"]), ", ".join(_number(m) for m in r["medians_ms"]),
             f"{r['spread']:.1%}", "yes" if r["repeatable"] else "no"]
            for r in report["repeatability"]
        ]
        lines += ["### Repeatability (end-to-end median per run)", "",
                  *_table(["backend", "precision", "batch", "medians ms", "spread", "within 10%"], rows), ""]
    for case in report["cases"]:
        if case["status"] == "measured" and case["run"] == 1:
            heading = f"### {case['backend']} {case['precision']} batch {case['batch']}: per stage"
            lines += [heading, "", *stage_table(case), ""]
            if case.get("counts"):
                lines += ["Frames and pictures: " + ", ".join(f"{name} {value}" for name, value in case["counts"].items()),
                          ""]
    if report.get("warnings"):
        lines += ["### Warnings", "", *(f"- {warning}" for warning in report["warnings"]), ""]
    return "\n".join(lines)
