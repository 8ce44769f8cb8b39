"""The measurements behind docs/TEACH.md: `daad teach` against the PyTorch-side fit of the same kind.

    python -m experiments.teach --data /work/data/real/kolektorsdd /work/data/real/tire \
        /work/data/synth256/cap --out /tmp/teach-runs [--latency]
    python -m experiments.teach --out /tmp/teach-latency --latency /tmp/teach-runs/teach/cap
    python -m experiments.teach --out /tmp/teach-latency --latency BUNDLE --backend tensorrt --precision fp16

Per data set (MVTec AD layout):
- a backbone part at the size `daad train --model patchcore` chooses for it (made once, not timed);
- `daad teach --parts 200` in a fresh process, timed wall clock: from the images on disk to a
  calibrated bundle (target: 2 minutes on the 2-core development machine);
- the PyTorch-side fit on the same images: `daad train --model patchcore` on a folder holding
  exactly the parts teach kept in its memory, then `daad export`; and, for what the held-out
  share costs, the same on all the parts teach was given;
- image AUROC of both bundles on the test split, through ONNX Runtime (target: within 0.005);
- the two memories row by row, and a second teach with the same seed (target: identical);
- with --latency, the taught bundle at batch 1 as one fused graph and as its backbone and head
  parts in two sessions (runtime/backends/split_backend.py, what `daad run` runs on ONNX Runtime),
  and what a product switch costs: opening a product while another holds its backbone (the head
  alone), opening one with nothing held (backbone and head), and opening the fused model.onnx;
  `--backend tensorrt --precision fp16` times the same on the device's engines (the whole
  model.onnx engine against the shared backbone engine chained to the head engine; both built
  first), the comparison docs/EXPORT.md asks a Jetson for.

Everything is written under --out (teach.json, the bundles, copies of the kept images): keep
--out outside the repository, the real images are licensed for evaluation only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from onnx import numpy_helper

from runtime.atomic import atomic_write_json
from runtime.backends import open_backend
from runtime.backends.batches import infer_batches
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.bundle import open_bundle
from runtime.dataset import find_samples, load_images
from train.metrics import image_auroc

def daad(*args: object) -> float:
    """Run a `daad` verb in a fresh process (imports and all, as a technician would); its wall seconds."""
    begun = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sys; from runtime.cli import main; sys.exit(main())",
                    *map(str, args)], check=True)  # fmt: skip
    return time.perf_counter() - begun


def image_size(data: Path) -> tuple[int, int]:
    from train.families import family_for
    from train.train_cli import default_size

    return default_size(data, resume=False, family=family_for("patchcore"))


def test_auroc(bundle: Path, data: Path) -> float:
    opened = open_bundle(bundle)
    test = load_images(find_samples(data, "test"), opened.preprocess)
    with OnnxRuntimeBackend(opened) as backend:
        scores = infer_batches(backend, test.images, 8, keep_maps=False).scores
    return image_auroc([sample.label for sample in test.samples], scores)


def memory_rows(bundle: Path) -> np.ndarray:
    """The memory rows of a bundle's model.onnx (taught: head/memory; exported: model.json names it)."""
    opened = open_bundle(bundle)
    bank = opened.metadata.model_stats["memory_banks"]["patches"]
    model = onnx.load(str(opened.onnx_path))
    stored = numpy_helper.to_array(next(init for init in model.graph.initializer if init.name == bank["initializer"]))
    return stored.T if bank["rows"] == "transposed" else stored


def torch_fit(data: Path, names: list[str], folder: Path, size: tuple[int, int], seed: int, run: Path,
              exported: Path) -> float:  # fmt: skip
    """`daad train --model patchcore` on a folder holding exactly `names` of data's good images, then
    `daad export`; the training's wall seconds."""
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(run, ignore_errors=True)
    shutil.rmtree(exported, ignore_errors=True)
    folder.mkdir(parents=True)
    good = {sample.path.name: sample.path for sample in find_samples(data, "train")}
    for name in names:
        shutil.copy2(good[name], folder / name)
    seconds = daad("train", "--model", "patchcore", "--data", folder, "--image-size", f"{size[0]}x{size[1]}",
                   "--channels", 3, "--seed", seed, "--out", run)  # fmt: skip
    daad("export", "--checkpoint", run / "checkpoint.pt", "--out", exported, "--eval-data", data, "--parity-images", 16)
    return seconds


def measure(data: Path, out: Path, parts: int, seed: int) -> dict[str, Any]:
    from export.backbone_export import export_backbone
    from train.features.patch_features import FeatureConfig

    height, width = image_size(data)
    part = out / "parts" / f"lite0-{height}x{width}"
    if not (part / "backbone.json").is_file():
        export_backbone(part, FeatureConfig(), height, width, 3)
    taught, again, run, exported = (out / name / data.name for name in ("teach", "teach-again", "train", "export"))
    for folder in (taught, again):
        shutil.rmtree(folder, ignore_errors=True)
    load = os.getloadavg()[0]
    teach_s = daad("teach", "--backbone", part, "--good", data, "--parts", parts, "--out", taught, "--seed", seed,
                   "--no-progress")  # fmt: skip
    daad("teach", "--backbone", part, "--good", data, "--parts", parts, "--out", again, "--seed", seed, "--no-progress")
    training = open_bundle(taught).metadata.training
    train_s = torch_fit(data, training["memory_parts"], out / "kept" / data.name, (height, width), seed, run, exported)
    everything = training["memory_parts"] + training["calibration_parts"]
    torch_fit(data, everything, out / "all" / data.name, (height, width), seed, out / "train-all" / data.name,
              out / "export-all" / data.name)  # fmt: skip
    mine, theirs = memory_rows(taught), memory_rows(exported)
    same_shape = mine.shape == theirs.shape
    return {
        "data": str(data), "image_size": f"{height}x{width}", "parts": parts, "seed": seed,
        "load_average_before": load,
        "teach_seconds": teach_s, "torch_train_seconds": train_s,
        "teach_auroc": test_auroc(taught, data), "torch_auroc": test_auroc(exported, data),
        "torch_all_parts_auroc": test_auroc(out / "export-all" / data.name, data),
        "memory_rows": len(mine),
        "same_seed_memory_identical": bool(np.array_equal(mine, memory_rows(again))),
        "memory_rows_equal_to_torch": int((np.abs(mine - theirs).max(axis=1) <= 1e-4).sum()) if same_shape else 0,
        "memory_max_abs_difference_to_torch": float(np.abs(mine - theirs).max()) if same_shape else None,
        "calibration_parts": len(open_bundle(taught).metadata.training["calibration_parts"]),
    }  # fmt: skip


def openers(opened: Any, backend: str, precision: str, threads: int) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(open the fused graph, open the parts as the line does) on ONNX Runtime, or on TensorRT with
    both the whole engine and the backbone + head engines built first (on the device)."""
    if backend == "onnxruntime":
        return (lambda: OnnxRuntimeBackend(opened, threads=threads),
                lambda: open_backend(opened, "onnxruntime", threads=threads))  # fmt: skip
    from engines.engine_builder import build_bundle_engines
    from runtime.backends.tensorrt_backend import TensorRTBackend

    whole = build_bundle_engines(opened, precision, whole=True)
    build_bundle_engines(opened, precision)
    return (lambda: TensorRTBackend(opened, precision, engines=whole),
            lambda: open_backend(opened, "tensorrt", precision))  # fmt: skip


def latency(bundle: Path, repeats: int, threads: int, backend: str = "onnxruntime",
            precision: str = "fp32") -> dict[str, Any]:  # fmt: skip
    """ms per frame at batch 1, model.onnx as one graph (one session, or one engine) against the two
    parts as the line opens them, frame by frame in turn (a shared machine's load then weighs on both
    alike): medians, fastest, and the median of the paired differences; and what a product switch
    opens: the head alone (another product holds the backbone), the backbone and the head (none
    does), or the fused graph."""
    opened = open_bundle(bundle)
    frame = load_images(find_samples(Path(opened.metadata.training["source"]), "train")[:1], opened.preprocess).images
    times: dict[str, list[float]] = {"fused": [], "split": []}
    open_fused, open_split = openers(opened, backend, precision, threads)
    with open_fused() as fused, open_split() as split:
        backends = {"fused": fused, "split": split}
        for index in range(repeats + 5):
            for name, running in backends.items():
                begun = time.perf_counter()
                running.infer(frame)
                if index >= 5:  # warm-up frames are not counted
                    times[name].append((time.perf_counter() - begun) * 1e3)
        head = [split.infer(frame).timings["head"] * 1e3 for _ in range(repeats)]
        switch = _median_ms(lambda: open_split().close(), 5)  # `split` holds the backbone: the head alone
        graphs = split.choice.graphs
    result: dict[str, Any] = {"backend": backend, "precision": precision, "split_graphs": graphs}
    result.update({f"{name}_{what}_ms": float(how(values)) for name, values in times.items()
                   for what, how in (("median", np.median), ("fastest", np.min))})  # fmt: skip
    result["split_minus_fused_median_ms"] = float(np.median(np.subtract(times["split"], times["fused"])))
    result["split_head_median_ms"] = float(np.median(head))
    result["switch_head_median_ms"] = switch
    result["open_split_median_ms"] = _median_ms(lambda: open_split().close(), 5)  # nothing held: backbone and head
    result["open_fused_median_ms"] = _median_ms(lambda: open_fused().close(), 5)
    return result


def _median_ms(action: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        begun = time.perf_counter()
        action()
        times.append((time.perf_counter() - begun) * 1e3)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.teach", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="*", type=Path, default=[], help="data sets in MVTec AD layout")
    parser.add_argument("--out", type=Path, required=True, help="results folder, outside the repository")
    parser.add_argument("--parts", type=int, default=200, help="good parts teach takes (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", nargs="*", type=Path, metavar="BUNDLE",
                        help="also time fused vs split: these taught bundles, or (none named) those taught here")
    parser.add_argument("--repeats", type=int, default=100, help="timed frames per latency variant (default 100)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads for --latency (default 1)")
    parser.add_argument("--backend", choices=("onnxruntime", "tensorrt"), default="onnxruntime",
                        help="--latency on ONNX Runtime, or on TensorRT on the device (builds the whole engine and "
                        "the backbone + head engines first)")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32", help="TensorRT precision (default fp32)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"runs": [], "latency": [], "cpus": os.cpu_count()}
    for data in args.data:
        row = measure(data, args.out, args.parts, args.seed)
        print({key: row[key] for key in ("data", "teach_seconds", "teach_auroc", "torch_auroc", "torch_all_parts_auroc",
                                         "same_seed_memory_identical", "memory_rows_equal_to_torch")}, flush=True)  # fmt: skip
        results["runs"].append(row)
        atomic_write_json(args.out / "teach.json", results)
    for bundle in [] if args.latency is None else args.latency or [args.out / "teach" / data.name for data in args.data]:
        timed = {"bundle": str(bundle), "threads": args.threads, "load_average_before": os.getloadavg()[0],
                 **latency(bundle, args.repeats, args.threads, args.backend, args.precision)}  # fmt: skip
        print(timed, flush=True)
        results["latency"].append(timed)
        atomic_write_json(args.out / "teach.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
