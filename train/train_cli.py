"""`daad train`: fit or train a model (patchcore, ae, memae, daad, daad+) on a data set folder."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from runtime.atomic import check_output_folder
from runtime.dataset import find_samples, median_aspect, sampled_sizes
from runtime.paths import check_outputs
from runtime.preprocess import MAX_ENLARGEMENT, PreprocessConfig, parse_image_size, size_for_aspect
from train.config import ConfigError, TrainConfig, read_config_file, with_overrides
from train.families import DEFAULT_KIND, KINDS, Family, family_for


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daad train",
        description="Train an anomaly model on the good images of DIR/train/good (or a plain folder). "
        "Writes RUN/checkpoint.pt after every epoch; with a test split, prints the validation "
        "image AUROC per epoch.",
    )
    parser.add_argument("--data", required=True, type=Path, help="product folder in MVTec AD layout, or a folder of good images")
    parser.add_argument("--model", choices=KINDS, default=DEFAULT_KIND,
                        help=f"model kind (default: {DEFAULT_KIND}; feature memories fit in one pass, pixel kinds train)")
    parser.add_argument("--out", required=True, type=Path, help="run folder; RUN/checkpoint.pt is written there")
    parser.add_argument("--steps", type=int, help=f"training budget in optimiser steps, rounded up to whole epochs (default {TrainConfig.steps})")
    parser.add_argument("--epochs", type=int, help="a fixed number of epochs instead of --steps")
    parser.add_argument("--validate-every", type=int, help="epochs between validation AUROCs on the test split, 0: never "
                        f"(default {TrainConfig.validate_every}; it chooses nothing, and refitting the score costs time)")
    parser.add_argument("--image-size", type=parse_image_size, default=None, metavar="HxW",
                        help="input size HEIGHTxWIDTH (e.g. 320x128) or one number for a square, multiples of 16 "
                        "(default: shorter side 224 for feature memories, 128 for pixel kinds, the longer one following the training images' aspect)")
    parser.add_argument("--channels", type=int, choices=(1, 3), help="3: BGR, 1: grey (default: as the training images are stored)")
    parser.add_argument("--batch-size", type=int, help=f"images per step (default {TrainConfig.batch_size})")
    parser.add_argument("--lr", type=float, help=f"Adam learning rate (default {TrainConfig.lr})")
    parser.add_argument("--seed", type=int, help="random seed; same seed, same result on the CPU (default 0)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="where to train (default cpu)")
    parser.add_argument("--config", type=Path, help="JSON/YAML file with 'model' and 'train' sections; flags win over it")
    parser.add_argument("--resume", action="store_true", help="continue RUN/checkpoint.pt (its configs; --steps or --epochs may grow, --validate-every may change)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def default_size(data: Path, resume: bool, family: Family) -> tuple[int, int]:
    """The input size when --image-size is not given: the family's short side, the long one from
    the training images' aspect (a resumed run keeps its checkpoint's size, so nothing is read then)."""
    short = family.default_short_side
    if resume:
        return short, short
    aspect = median_aspect(find_samples(Path(data), "train"), PreprocessConfig())
    height, width = size_for_aspect(aspect, short)
    print(f"input size {height}x{width} (training images' aspect {aspect:.2f}; --image-size HxW to choose)", file=sys.stderr)
    return height, width


def check_size_fits(size: tuple[int, int], data: Path, channels: int, batch: int) -> None:
    """Refuse an --image-size the training images or this machine's memory cannot serve, before any
    image is loaded: a side more than MAX_ENLARGEMENT times the largest sampled image's (the loader
    would skip every image as too small), or the training images at that size as uint8 and one
    batch as float32 (a lower bound of what training holds) beyond the memory free now."""
    height, width = size
    samples = find_samples(Path(data), "train")
    sizes = sampled_sizes(samples, PreprocessConfig())
    if sizes:
        tallest, widest = max(h for h, _ in sizes), max(w for _, w in sizes)
        if height > MAX_ENLARGEMENT * tallest or width > MAX_ENLARGEMENT * widest:
            raise ConfigError(
                f"--image-size {height}x{width} would enlarge the training images (at most {tallest}x{widest} px among "
                f"those sampled) more than {MAX_ENLARGEMENT}x: choose at most "
                f"{MAX_ENLARGEMENT * tallest}x{MAX_ENLARGEMENT * widest}, or leave it out for the default")
    needed = height * width * channels * (len(samples) + 4 * batch)
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if needed > free:
        raise ConfigError(f"--image-size {height}x{width} needs at least {needed / 2**30:.1f} GiB for {len(samples)} "
                          f"training images and a batch of {batch}, more than the {free / 2**30:.1f} GiB of memory free: "
                          "choose a smaller size")


def main(argv: list[str] | None = None) -> int:
    from train.fitting import detect_channels

    args = build_parser().parse_args(argv)
    check_outputs(inputs={"--data": args.data, "--config": args.config}, outputs={"--out": args.out})
    check_output_folder(args.out)  # now, not when the first epoch's checkpoint is written
    sections = read_config_file(args.config) if args.config else {}
    family = family_for(args.model)
    ignored = [flag for flag, value in (("--steps", args.steps), ("--epochs", args.epochs), ("--lr", args.lr),
                                        ("--validate-every", args.validate_every)) if value is not None]  # fmt: skip
    if ignored and not family.trains_by_steps:
        print(f"warning: {args.model} is fitted in one pass; {', '.join(ignored)} has no effect", file=sys.stderr)
    model_config = family.config_from_dict({**sections.get("model", {}), "kind": args.model})
    train_config = with_overrides(
        TrainConfig.from_dict(sections.get("train", {})),
        steps=args.steps,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validate_every=args.validate_every,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
    )
    height, width = args.image_size or default_size(args.data, args.resume, family)
    channels = args.channels or detect_channels(args.data)
    preprocess = family.preprocess(height, width, channels)  # the family's own bounds (its stride) first
    if args.image_size:
        check_size_fits(args.image_size, args.data, channels, train_config.batch_size)
    result = family.fit(args.data, args.out, model_config, train_config, preprocess, args.resume, not args.quiet)
    print(result.summary)
    return 0
