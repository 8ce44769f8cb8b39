"""Data sets on disk: MVTec AD layout, or a plain folder of good images.

    <root>/train/good/*                      good samples to train on
    <root>/test/good/*, <root>/test/<defect>/*
    <root>/ground_truth/<defect>/<stem>_mask.png

A plain folder of images (no train/ or test/ inside) is a good-only data set: it can be trained
on and calibrated on, but not evaluated. Images go through `prepare_frame`, the same code the
camera loop runs, so training sees exactly what production sees.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import DataError
from runtime.images import IMAGE_SUFFIXES, is_within, list_images, read_image
from runtime.optional import cv2, require
from runtime.preprocess import PreprocessConfig, center_crop, grey_for_colour, prepare_frame

SPLITS = ("train", "test")
GOOD = "good"


@dataclass(frozen=True)
class Sample:
    """One image of a data set and what is known about it."""

    path: Path
    label: int  # 0 good, 1 defective
    defect: str  # "good" or the defect type (the name of its test/ subfolder)
    mask_path: Path | None = None


@dataclass
class ImageSet:
    """Images that loaded, aligned with their samples; the ones that did not are in `skipped`.

    `grey` lists the loaded images stored with one channel that a colour model takes: they are
    used (the grey channel repeated), but a colour model scores them as no colour camera would
    show the part, so every verb names and counts them.
    """

    images: np.ndarray  # uint8 N x H x W x C, from prepare_frame
    samples: list[Sample]
    skipped: list[Path] = field(default_factory=list)
    skip_reasons: list[str] = field(default_factory=list)  # aligned with `skipped`
    grey: list[Path] = field(default_factory=list)


def has_test_split(root: Path) -> bool:
    return (Path(root) / "test").is_dir()


def is_mvtec_layout(root: Path) -> bool:
    root = Path(root)
    return (root / "train").is_dir() or (root / "test").is_dir()


def find_samples(root: Path, split: str) -> list[Sample]:
    """The samples of one split ("train" or "test"), sorted by defect type then file name."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data set folder {root} does not exist: pass a folder in MVTec AD layout or a folder of images")
    if not is_mvtec_layout(root):
        samples = _plain_folder_samples(root, split)
    elif split == "train":
        samples = _good_samples(_split_folder(root, "train", GOOD), root)
    else:
        samples = _test_samples(root)
    if not samples:
        where = root if not is_mvtec_layout(root) else root / split
        raise DataError(
            f"no images in {where} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}): "
            "add images there or point to another folder"
        )
    return samples


def _plain_folder_samples(root: Path, split: str) -> list[Sample]:
    if split == "test":
        raise DataError(
            f"{root} is a plain folder of good images and has no test split: evaluation needs "
            f"{root / 'test'}/good and {root / 'test'}/<defect> folders (MVTec AD layout), "
            "e.g. as written by `daad synth`"
        )
    return _good_samples(root, root)


def _split_folder(root: Path, *parts: str) -> Path:
    folder = root.joinpath(*parts)
    if not folder.is_dir():
        raise DataError(
            f"missing folder {folder}: an MVTec AD data set keeps its {parts[0]} images in "
            f"{root / parts[0]}/good (and defects in {root}/test/<defect>); create it or point to another data set"
        )
    if not is_within(folder, root):
        raise DataError(f"{folder} resolves outside the data set root {root}: replace the symlink with the folder")
    return folder


def _good_samples(folder: Path, root: Path) -> list[Sample]:
    return [Sample(path, 0, GOOD, None) for path in list_images(folder, root)]


def _test_samples(root: Path) -> list[Sample]:
    test = _split_folder(root, "test")
    samples: list[Sample] = []
    for folder in sorted(p for p in test.iterdir() if p.is_dir()):
        if not is_within(folder, root):
            warnings.warn(f"ignoring {folder}: it resolves outside the data set root {root}", stacklevel=3)
            continue
        defect = folder.name
        if defect == GOOD:
            samples += _good_samples(folder, root)
            continue
        samples += [Sample(path, 1, defect, _mask_path(root, defect, path)) for path in list_images(folder, root)]
    return samples


def _mask_path(root: Path, defect: str, image: Path) -> Path | None:
    mask = root / "ground_truth" / defect / f"{image.stem}_mask.png"
    return mask if mask.is_file() and is_within(mask, root) else None


def load_images(samples: list[Sample], config: PreprocessConfig, progress: bool = False) -> ImageSet:
    """Read and prepare every sample; unreadable and too small ones are skipped with a warning and
    counted, grey ones for a colour model are used with a warning and counted."""
    iterator: Any = samples
    if progress:
        tqdm = require("tqdm", "progress bars").tqdm
        iterator = tqdm(samples, desc="loading images", unit="img", leave=False)
    images, loaded = [], []
    result = ImageSet(np.empty(0), [])
    for sample in iterator:
        frame = read_image(sample.path)
        try:
            if frame is None:
                raise DataError("not a readable image (corrupt, empty or unsupported format)")
            images.append(prepare_frame(frame, config))
        except DataError as exc:
            warnings.warn(f"skipping {sample.path}: {exc}", stacklevel=2)
            result.skipped.append(sample.path)
            result.skip_reasons.append(str(exc).split(":")[0])
            continue
        loaded.append(sample)
        if grey_for_colour(frame, config):
            result.grey.append(sample.path)
    if result.grey:
        warnings.warn(f"{len(result.grey)} grey image(s) given to a colour model, used with the grey repeated in "
                      f"all three channels: {', '.join(str(path) for path in result.grey[:5])}", stacklevel=2)  # fmt: skip
    if not images:
        first = samples[0].path.parent if samples else "the data set"
        raise DataError(f"none of the {len(samples)} images in {first} could be read: check the files")
    result.images, result.samples = np.stack(images), loaded
    return result


def load_masks(samples: list[Sample], config: PreprocessConfig) -> np.ndarray:
    """bool N x H x W ground truth, cropped and resized exactly like `prepare_frame` crops images.

    Nearest-neighbour resizing keeps masks binary. Good samples and samples without a mask
    file get an all-false mask; an unreadable mask is warned about and treated as missing.
    """
    masks = np.zeros((len(samples), config.height, config.width), dtype=bool)
    for index, sample in enumerate(samples):
        if sample.label == 0 or sample.mask_path is None:
            continue
        raw = read_image(sample.mask_path)
        if raw is None:
            warnings.warn(f"ignoring mask {sample.mask_path}: not a readable image", stacklevel=2)
            continue
        masks[index] = _prepare_mask(raw, config)
    return masks


def _prepare_mask(raw: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    cv = cv2()
    foreground = raw != 0 if raw.ndim == 2 else (raw != 0).any(axis=2)
    cropped = center_crop(foreground.astype(np.uint8), config.center_crop)
    resized = cv.resize(cropped, (config.width, config.height), interpolation=cv.INTER_NEAREST)
    return resized.astype(bool)


def sampled_sizes(samples: list[Sample], config: PreprocessConfig, count: int = 16) -> list[tuple[int, int]]:
    """(height, width) of (the centre crop of) up to `count` images spread over `samples`,
    unreadable ones skipped: what a default input size follows and a chosen one is checked against."""
    picks = [samples[i] for i in np.linspace(0, len(samples) - 1, min(count, len(samples))).astype(int)] if samples else []
    sizes = []
    for sample in picks:
        image = read_image(sample.path)
        if image is not None and image.size:
            sizes.append(center_crop(image, config.center_crop).shape[:2])
    return sizes


def median_aspect(samples: list[Sample], config: PreprocessConfig, count: int = 16) -> float:
    """Median height / width of `sampled_sizes`: the aspect a default input size follows."""
    sizes = sampled_sizes(samples, config, count)
    if not sizes:
        first = samples[0].path.parent if samples else "the data set"
        raise DataError(f"no readable image in {first} to take the input size from: pass --image-size HxW")
    return float(np.median([height / width for height, width in sizes]))


def summarize(root: Path) -> dict[str, Any]:
    """Counts per split and defect type (from file names, nothing decoded), for printing."""
    root = Path(root)
    summary: dict[str, Any] = {"root": str(root), "layout": "mvtec" if is_mvtec_layout(root) else "folder"}
    samples = {split: _samples_or_none(root, split) for split in SPLITS}
    for split in SPLITS:
        summary[split] = dict(Counter(sample.defect for sample in samples[split]))
    summary["masks"] = sum(1 for sample in samples["test"] if sample.mask_path is not None)
    return summary


def _samples_or_none(root: Path, split: str) -> list[Sample]:
    try:
        return find_samples(root, split)
    except DataError:
        return []


def format_summary(summary: dict[str, Any]) -> str:
    """One line: `<root> (mvtec): train: good 200 | test: good 30, scratch 15 | masks: 15`."""

    def counts(split: str) -> str:
        items = summary.get(split) or {}
        return ", ".join(f"{defect} {n}" for defect, n in items.items()) or "none"

    return (
        f"{summary['root']} ({summary['layout']}): train: {counts('train')} | "
        f"test: {counts('test')} | masks: {summary['masks']}"
    )
