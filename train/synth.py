"""Synthetic products in MVTec AD layout: good parts that vary as a real line does, and defects.

A sample is a view of the product's clean rendering (train/synth_products.py), moved and turned
a little as parts are on a conveyor, with a defect drawn on it (train/synth_defects.py) for
defective samples, then lit and captured: gain, offset, an illumination gradient, slight blur
and sensor noise. Every image has its own random stream derived from (seed, product, split,
defect, index), so the same seed writes the same bytes, whatever the other counts are.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from runtime.atomic import atomic_write_bytes, atomic_write_json, writing
from runtime.errors import DataError
from runtime.optional import cv2, require
from train.synth_defects import DEFECTS
from train.synth_products import PRODUCTS, Product

# The manifest: the settings and every file synth writes, written first (complete: false) and
# again last (complete: true). `--overwrite` deletes exactly these files, so a folder that holds
# anything else, or whose synth.json lists no files, is never emptied.
MARKER = "synth.json"


@dataclass(frozen=True)
class SynthConfig:
    """What `daad synth` writes; defaults sized for a 2-core CPU."""

    image_size: int = 256
    seed: int = 0
    train: int = 200  # train/good
    test_good: int = 30  # test/good
    test_defect: int = 15  # per defect type
    # Fraction of each defect's change to the pixels that is kept: 1 draws it as designed,
    # 0.5 at half the contrast. Placement, shape and mask are the same at every severity,
    # so one seed at several severities is the same test set made harder.
    severity: float = 1.0

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ValueError(f"image_size must be at least 32, got {self.image_size}")
        if not 0.0 < self.severity <= 1.0:
            raise ValueError(f"severity must be in (0, 1], got {self.severity}")
        if min(self.train, self.test_good, self.test_defect) < 0:
            raise ValueError("sample counts must not be negative")


class Renderer:
    """One product at one image size; the clean rendering is drawn once and reused."""

    def __init__(self, product: Product, image_size: int, severity: float = 1.0) -> None:
        self.product, self.size, self.severity = product, image_size, severity
        self.base, region = product.render(2 * image_size)
        self.region = region.astype(np.float32)

    def sample(self, rng: np.random.Generator, defect: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """One captured image (uint8, grey or BGR) and, for a defect, its bool mask."""
        image, region = self.place(rng)
        mask = None
        if defect is not None:
            clean = image.copy()
            mask = DEFECTS[defect](image, region, rng)
            if self.severity != 1.0:
                image = clean + np.float32(self.severity) * (image - clean)
        image = _capture(image, rng)
        if self.product.channels == 1:
            image = cv2().cvtColor(image, cv2().COLOR_BGR2GRAY)
        return image, mask

    def place(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Rotate and shift the part as the line presents it; the view is the canvas centre."""
        cv = cv2()
        canvas, size = self.base.shape[0], self.size
        angle = rng.uniform(-1, 1) * self.product.max_rotation
        shift = rng.uniform(-1, 1, size=2) * self.product.max_shift * size
        matrix = cv.getRotationMatrix2D((canvas / 2, canvas / 2), angle, 1.0)
        matrix[:, 2] -= (canvas - size) / 2 + shift
        image = cv.warpAffine(self.base, matrix, (size, size), flags=cv.INTER_LINEAR, borderMode=cv.BORDER_REFLECT)
        region = cv.warpAffine(self.region, matrix, (size, size), flags=cv.INTER_LINEAR) > 0.5
        return image, region


def _capture(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lighting and sensor: per-channel gain, offset, a gradient, focus blur, noise -> uint8."""
    size = image.shape[0]
    gain = rng.uniform(0.92, 1.08) * rng.uniform(0.98, 1.02, size=3)
    direction = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    gradient = 1.0 + rng.uniform(-0.08, 0.08) * (x * np.cos(direction) + y * np.sin(direction))
    lit = image * gain.astype(np.float32) * gradient[:, :, None] + rng.uniform(-6, 6)
    lit = cv2().GaussianBlur(lit, (0, 0), rng.uniform(0.3, 0.7))
    noisy = lit + rng.normal(0.0, rng.uniform(1.0, 3.0), size=lit.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _rng(seed: int, product: str, split: str, defect: str, index: int) -> np.random.Generator:
    key = zlib.crc32(f"{product}/{split}/{defect}".encode())
    return np.random.default_rng(np.random.SeedSequence([seed, key, index]))


def _plan(config: SynthConfig) -> Iterator[tuple[str, str, int]]:
    """(split, defect or "good", index) of every image of one product."""
    yield from (("train", "good", i) for i in range(config.train))
    yield from (("test", "good", i) for i in range(config.test_good))
    for defect in DEFECTS:
        yield from (("test", defect, i) for i in range(config.test_defect))


def _files(config: SynthConfig) -> list[str]:
    """Every image and mask of one product, relative to its folder, in the order they are written."""
    files = []
    for split, defect, index in _plan(config):
        files.append(f"{split}/{defect}/{index:03d}.png")
        if defect != "good":
            files.append(f"ground_truth/{defect}/{index:03d}_mask.png")
    return files


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, data = cv2().imencode(".png", image)
    if not ok:
        raise DataError(f"could not encode {path}")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.tobytes())


def check_products(names: list[str]) -> list[str]:
    unknown = [name for name in names if name not in PRODUCTS]
    if unknown or not names:
        raise DataError(f"unknown product(s) {unknown or names}: choose from {', '.join(PRODUCTS)}")
    return names


def write_product(out: Path, product: str, config: SynthConfig, overwrite: bool = False, progress: bool = False) -> Path:
    """Write one product's data set to out/<product> in MVTec AD layout; returns that folder."""
    check_products([product])
    folder = Path(out) / product
    _make_room(folder, overwrite)
    manifest = {"product": product, **asdict(config), "files": _files(config)}
    atomic_write_json(folder / MARKER, {**manifest, "complete": False})
    renderer = Renderer(PRODUCTS[product], config.image_size, config.severity)
    plan = list(_plan(config))
    if progress:
        plan = require("tqdm", "progress bars").tqdm(plan, desc=f"synth {product}", unit="img", leave=False)
    for split, defect, index in plan:
        rng = _rng(config.seed, product, split, defect, index)
        image, mask = renderer.sample(rng, None if defect == "good" else defect)
        _write_png(folder / split / defect / f"{index:03d}.png", image)
        if mask is not None:
            _write_png(folder / "ground_truth" / defect / f"{index:03d}_mask.png", mask.astype(np.uint8) * 255)
    atomic_write_json(folder / MARKER, {**manifest, "complete": True})
    return folder


def _make_room(folder: Path, overwrite: bool) -> None:
    """Never mix two runs in one folder, and never delete a file synth did not write.

    With `overwrite`, the files an earlier `daad synth` listed in synth.json are deleted, and the
    folders they leave empty; anything else in the folder stops it before anything is deleted.
    """
    present = _files_under(folder)
    if not present:
        return
    if not overwrite:
        raise DataError(f"{folder} already exists and is not empty: pass --overwrite to replace it, or another --out")
    listed = _listed_files(folder)
    foreign = sorted(str(path.relative_to(folder)) for path in present if path not in listed)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise DataError(
            f"{folder} holds {len(foreign)} file(s) `daad synth` did not write ({shown}): nothing was deleted; "
            "move them out or choose another --out"
        )
    with writing(folder):
        for path in present:
            path.unlink()
        for dirpath, _, _ in sorted(os.walk(folder), key=lambda entry: -len(Path(entry[0]).parts)):
            if not any(Path(dirpath).iterdir()):
                Path(dirpath).rmdir()


def _files_under(folder: Path) -> list[Path]:
    """Every non-folder entry under `folder` (symlinks included, never followed)."""
    if not folder.is_dir():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        base = Path(dirpath)
        found += [base / name for name in filenames]
        found += [base / name for name in dirnames if (base / name).is_symlink()]
    return found


def _listed_files(folder: Path) -> set[Path]:
    """The files synth.json says synth wrote (and synth.json), or a refusal when it is no manifest."""
    marker = folder / MARKER
    try:
        manifest = json.loads(marker.read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest["product"] != folder.name or not isinstance(files, list):
            raise ValueError("another product's manifest")
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise DataError(
            f"{folder} was not written by `daad synth` ({marker} is missing or lists no files it wrote): "
            "nothing was deleted; delete the folder yourself or choose another --out"
        ) from exc
    listed = {folder / str(name) for name in files}
    return {path for path in listed if not path.is_symlink()} | {marker}


def example_grid(image_size: int = 128, seed: int = 0) -> np.ndarray:
    """One row per product: two good samples, then one of each defect, its mask outlined in red."""
    cv = cv2()
    rows = []
    for name, product in PRODUCTS.items():
        renderer = Renderer(product, image_size)
        tiles = []
        for column, defect in enumerate(["good", "good", *DEFECTS]):
            image, mask = renderer.sample(_rng(seed, name, "example", defect, column), None if defect == "good" else defect)
            tile = image if image.ndim == 3 else cv.cvtColor(image, cv.COLOR_GRAY2BGR)
            if mask is not None:
                outline = cv.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8))  # around, not over, the defect
                contours, _ = cv.findContours(outline, cv.RETR_EXTERNAL, cv.CHAIN_APPROX_NONE)
                cv.drawContours(tile, contours, -1, (0, 0, 255), 1)
            label = np.full((16, image_size, 3), 255, dtype=np.uint8)
            cv.putText(label, f"{name} {defect}", (2, 12), cv.FONT_HERSHEY_PLAIN, 0.8, (0, 0, 0), 1, cv.LINE_AA)
            tiles.append(np.pad(np.vstack([label, tile]), ((2, 2), (2, 2), (0, 0)), constant_values=255))
        rows.append(np.hstack(tiles))
    return np.vstack(rows)


def write_example_grid(path: Path, image_size: int = 128, seed: int = 0) -> Path:
    ok, data = cv2().imencode(".png", example_grid(image_size, seed))
    if not ok:
        raise DataError(f"could not encode {path}")
    return atomic_write_bytes(path, data.tobytes())
