"""`daad demo`: the whole pipeline on synthetic data, on the CPU, end to end.

synth -> train daad+ -> eval -> export (parity) -> calibrate -> camera loop on a line video
-> latency table. Each step is the same verb a user types; the demo only chooses small sizes
and three seeds, so that the model is trained, calibrated and run on three disjoint sets of
parts, as on a real line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from runtime.atomic import check_output_folder
from runtime.dataset import find_samples
from runtime.errors import DaadError
from runtime.images import read_image
from runtime.optional import cv2
from runtime.preprocess import to_channels
from train.families import DEFAULT_KIND, KINDS, family_for

TRAIN_SEED, CALIBRATION_SEED, LINE_SEED = 0, 1, 2


@dataclass(frozen=True)
class DemoConfig:
    """Sizes chosen so the demo finishes in minutes on 2 CPU cores."""

    out: Path = Path("demo-out")
    product: str = "cap"
    model: str = DEFAULT_KIND
    image_size: int = 128
    epochs: int = 30
    train_images: int = 200
    bench_seconds: float = 3.0


def _step(title: str, verb: Callable[[list[str]], int], argv: list[str]) -> None:
    print(f"\n=== {title}\n$ daad {_verb_name(verb)} {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    code = verb(argv)
    if code not in (0, None):
        raise DaadError(f"demo step '{title}' failed with exit code {code}; see the messages above")
    print(f"--- {title}: {time.perf_counter() - started:.1f} s", flush=True)


def _verb_name(verb: Callable[[list[str]], int]) -> str:
    return verb.__module__.rsplit(".", 1)[-1].removesuffix("_cli")


def write_line_video(product_root: Path, video: Path, fps: float = 10.0) -> list[tuple[str, int]]:
    """Write the test parts of a product, good and defective interleaved, as an MJPG video.

    Returns (defect type, label) per frame in order, so the demo can compare the loop's verdicts
    with the truth.
    """
    cv = cv2()
    samples = find_samples(product_root, "test")
    good = [s for s in samples if s.label == 0]
    bad = [s for s in samples if s.label == 1]
    order = [s for pair in zip(good, bad) for s in pair] + good[len(bad):] + bad[len(good):]
    first = read_image(order[0].path)
    height, width = first.shape[:2]
    writer = cv.VideoWriter(str(video), cv.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise DaadError(f"cannot write {video}: OpenCV has no MJPG writer here")
    truth = []
    try:
        for sample in order:
            image = read_image(sample.path)
            if image is None:
                continue
            writer.write(np.ascontiguousarray(to_channels(image, 3)))
            truth.append((sample.defect, sample.label))
    finally:
        writer.release()
    return truth


def report_line(events: Path, truth: list[tuple[str, int]]) -> None:
    """Compare the loop's verdicts with what was on the line."""
    verdicts = [json.loads(line)["verdict"] for line in events.read_text().splitlines() if line.strip()]
    caught = sum(v == "NG" for v, (_, label) in zip(verdicts, truth) if label == 1)
    false_rejects = sum(v == "NG" for v, (_, label) in zip(verdicts, truth) if label == 0)
    faults = sum(v == "FAULT" for v in verdicts)
    defective = sum(label for _, label in truth)
    print(
        f"\nline video: {len(truth)} parts ({defective} defective): caught {caught}/{defective} defective, "
        f"{false_rejects}/{len(truth) - defective} good parts rejected, {faults} faults"
    )


def run_demo(config: DemoConfig) -> None:
    from calibration import calibrate_cli
    from export import export_cli
    from runtime.bench import cli as bench_cli
    from runtime.line import run_cli
    from train import eval_cli, synth_cli, train_cli

    # The model's input size is checked before three data sets are written, not after.
    family_for(config.model).preprocess(config.image_size, config.image_size, 1)
    check_output_folder(config.out)

    out = config.out
    size = str(config.image_size)
    data = {seed: out / f"data-seed{seed}" for seed in (TRAIN_SEED, CALIBRATION_SEED, LINE_SEED)}
    product = {seed: root / config.product for seed, root in data.items()}
    run, bundle = out / "run", out / "bundle"
    counts = {
        TRAIN_SEED: ["--train", str(config.train_images), "--test-good", "20", "--test-defect", "6"],
        CALIBRATION_SEED: ["--train", "100", "--test-good", "4", "--test-defect", "6"],
        LINE_SEED: ["--train", "4", "--test-good", "20", "--test-defect", "4"],
    }
    for seed, root in data.items():
        _step(
            f"synth (seed {seed})",
            synth_cli.main,
            ["--out", str(root), "--products", config.product, "--image-size", "256", "--seed", str(seed),
             *counts[seed], "--overwrite"],
        )
    budget = ["--epochs", str(config.epochs)] if family_for(config.model).trains_by_steps else []
    _step(
        f"train {config.model}",
        train_cli.main,
        ["--data", str(product[TRAIN_SEED]), "--model", config.model, "--out", str(run), *budget, "--image-size", size],
    )
    _step("eval", eval_cli.main, ["--checkpoint", str(run / "checkpoint.pt"), "--data", str(product[TRAIN_SEED]),
                                  "--json", str(run / "eval.json")])
    _step("export", export_cli.main, ["--checkpoint", str(run / "checkpoint.pt"), "--out", str(bundle)])
    _step(
        "calibrate",
        calibrate_cli.main,
        ["--bundle", str(bundle), "--good", str(product[CALIBRATION_SEED] / "train" / "good"),
         "--no-progress", "--note", "daad demo"],
    )
    video = out / "line.avi"
    truth = write_line_video(product[LINE_SEED], video)
    events = out / "events.jsonl"
    events.unlink(missing_ok=True)
    _step(
        "camera loop",
        run_cli.main,
        ["--bundle", str(bundle), "--source", str(video), "--mode", "lossless", "--events", str(events),
         "--save-ng", str(out / "ng"), "--output", str(out / "overlay.avi"), "--stats-every", "0"],
    )
    report_line(events, truth)
    _step(
        "bench (ONNX Runtime, CPU)",
        bench_cli.main,
        ["--bundle", str(bundle), "--backend", "onnxruntime", "--batch", "1", "--warmup-s", "1",
         "--duration-s", str(config.bench_seconds), "--markdown", str(out / "bench.md")],
    )
    print(f"\ndemo done: everything is in {out}/ (bundle, events.jsonl, ng/, overlay.avi, bench.md)")


def parse_args(argv: list[str] | None) -> DemoConfig:
    defaults = DemoConfig()
    parser = argparse.ArgumentParser(prog="daad demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=defaults.out, help=f"working folder (default {defaults.out})")
    parser.add_argument("--product", default=defaults.product, help=f"synthetic product (default {defaults.product})")
    parser.add_argument("--model", choices=KINDS, default=defaults.model, help=f"model kind (default {defaults.model})")
    parser.add_argument("--image-size", type=int, default=defaults.image_size,
                        help=f"model input size (default {defaults.image_size})")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help=f"training epochs of a pixel kind (default {defaults.epochs})")
    parser.add_argument("--train-images", type=int, default=defaults.train_images,
                        help=f"good training images (default {defaults.train_images})")
    parser.add_argument("--bench-seconds", type=float, default=defaults.bench_seconds,
                        help=f"measured seconds of the latency benchmark (default {defaults.bench_seconds})")
    args = parser.parse_args(argv)
    return DemoConfig(out=args.out, product=args.product, model=args.model, image_size=args.image_size, epochs=args.epochs,
                      train_images=args.train_images, bench_seconds=args.bench_seconds)


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    run_demo(parse_args(argv))
    print(f"total: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
