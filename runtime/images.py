"""Reading image files from disk, safely: a bad file is reported, never a crash mid-run.

Production data sets hold half-written files, non-ASCII names and symlinks into other
folders; this is the one place that decides what counts as a readable image inside a root.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from runtime.optional import cv2

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})


def read_image(path: Path) -> np.ndarray | None:
    """Decode an image as stored (grey, BGR, BGRA; 8 or 16 bit); None if it cannot be read.

    `np.fromfile` + `imdecode` instead of `imread`, because `imread` fails on non-ASCII paths
    on some platforms.
    """
    cv = cv2()
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    try:
        image = cv.imdecode(data, cv.IMREAD_UNCHANGED)
    except cv.error:
        return None
    if image is None or image.size == 0:
        return None
    return image


def is_within(path: Path, root: Path) -> bool:
    """True when `path`, with every symlink followed, lies inside `root`."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def list_images(folder: Path, root: Path | None = None) -> list[Path]:
    """Image files directly in `folder`, sorted by name; nothing that resolves outside `root`.

    `root` defaults to `folder`. A symlink pointing out of the data set is skipped with a
    warning, so a data set cannot pull in files its owner did not put there.
    """
    folder, root = Path(folder), Path(root if root is not None else folder)
    images = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if not is_within(path, root):
            warnings.warn(f"ignoring {path}: it resolves outside the data set root {root}", stacklevel=2)
            continue
        images.append(path)
    return images
