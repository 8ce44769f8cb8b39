"""Defects drawn onto a product image, each returning the pixels it changed as a mask.

Sizes and contrasts are drawn from ranges that go down to barely visible, as on a real line:
a data set where every defect jumps out makes every model look perfect. Each function takes a
float32 BGR image (0..255, modified in place), the product region (defects only land on the
part, never on the conveyor) and a generator, and returns the bool ground-truth mask.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from runtime.optional import cv2

Defect = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


def _centre(region: np.ndarray, rng: np.random.Generator, margin: float) -> np.ndarray:
    """A random point of the region at least `margin` (fraction of the side) from the border."""
    side = region.shape[0]
    edge = max(1, int(margin * side))
    inner = np.zeros_like(region)
    inner[edge:-edge, edge:-edge] = region[edge:-edge, edge:-edge]
    ys, xs = np.nonzero(inner if inner.any() else region)
    pick = rng.integers(len(ys))
    return np.array([xs[pick], ys[pick]], dtype=np.float64)


def _blend(image: np.ndarray, alpha: np.ndarray, target: np.ndarray) -> None:
    image[:] = image * (1.0 - alpha[:, :, None]) + np.asarray(target, dtype=np.float32) * alpha[:, :, None]


def _stroke(image: np.ndarray, points: np.ndarray, width: int) -> np.ndarray:
    """Anti-aliased polyline coverage in [0, 1]; OpenCV draws on 8-bit canvases."""
    cv = cv2()
    canvas = np.zeros(image.shape[:2], dtype=np.uint8)
    cv.polylines(canvas, [np.round(points).astype(np.int32)], False, 255, width, cv.LINE_AA)
    return canvas.astype(np.float32) / 255.0


def _line_defect(image: np.ndarray, region: np.ndarray, points: np.ndarray, strength: float, target: np.ndarray) -> np.ndarray:
    side = image.shape[0]
    coverage = _stroke(image, points, max(1, round(side / 80))) * region
    _blend(image, strength * coverage, target)
    return coverage > 0.3


def scratch(image: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A thin, smooth, bright (or dark) arc: tooling or handling marks."""
    side = image.shape[0]
    start = _centre(region, rng, 0.15)
    heading = rng.uniform(0, 2 * np.pi)
    length = rng.uniform(0.12, 0.3) * side
    bend = rng.uniform(-1.0, 1.0)
    t = np.linspace(0, 1, 24)[:, None]
    direction = np.array([np.cos(heading), np.sin(heading)])
    normal = np.array([-direction[1], direction[0]])
    points = start + length * (t - 0.5) * direction + bend * 0.15 * length * (t * (1 - t) * 4) * normal
    target = np.full(3, 245.0 if rng.random() < 0.6 else 25.0)
    return _line_defect(image, region, points, rng.uniform(0.35, 0.65), target)


def crack(image: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A dark, jagged random walk: brittle fracture."""
    side = image.shape[0]
    steps = int(rng.integers(8, 16))
    step = rng.uniform(0.01, 0.02) * side
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.5, steps))
    walk = np.cumsum(np.stack([np.cos(heading), np.sin(heading)], axis=1) * step, axis=0)
    points = _centre(region, rng, 0.15) + np.vstack([[0.0, 0.0], walk]) - walk[-1] / 2
    return _line_defect(image, region, points, rng.uniform(0.5, 0.8), np.full(3, 15.0))


def _blob(side: int, centre: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Soft irregular blob in [0, 1]: a jittered polygon, blurred."""
    cv = cv2()
    angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
    radii = radius * rng.uniform(0.6, 1.2, angles.size)
    polygon = centre + np.stack([np.cos(angles), np.sin(angles)], axis=1) * radii[:, None]
    canvas = np.zeros((side, side), dtype=np.uint8)
    cv.fillPoly(canvas, [np.round(polygon).astype(np.int32)], 255, cv.LINE_AA)
    return cv.GaussianBlur(canvas.astype(np.float32) / 255.0, (0, 0), max(0.8, radius / 4))


def hole(image: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A small dark pit with a soft rim: a hole in cloth, a dent or pore in metal."""
    side = image.shape[0]
    radius = rng.uniform(0.015, 0.04) * side
    alpha = _blob(side, _centre(region, rng, 0.1), radius, rng) * region
    _blend(image, rng.uniform(0.45, 0.85) * alpha, np.full(3, 20.0))
    return alpha > 0.5


def stain(image: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A faint, larger discoloured patch (oil, rust, dirt): colour shift more than darkening."""
    side = image.shape[0]
    radius = rng.uniform(0.04, 0.1) * side
    alpha = _blob(side, _centre(region, rng, 0.12), radius, rng) * region
    tint = np.array([0.55, 0.8, 1.0], dtype=np.float32) * rng.uniform(0.75, 1.0)  # brownish: less blue
    strength = rng.uniform(0.3, 0.55)
    image[:] = image * (1.0 - strength * alpha[:, :, None] * (1.0 - tint))
    return alpha > 0.5


def misplaced(image: np.ndarray, region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Material where it does not belong: a patch of the part itself, moved and turned.

    Local statistics stay those of a good part, so only a model of the part's structure, not
    of its colours, finds it: missing/extra material, misprint, misweave.
    """
    side = image.shape[0]
    patch = max(4, int(rng.uniform(0.08, 0.15) * side))
    target = _centre(region, rng, 0.15).astype(int) - patch // 2
    original = image[target[1] : target[1] + patch, target[0] : target[0] + patch]
    turns = int(rng.integers(1, 4))
    # Of a few candidate sources, the one that differs most: a patch of plain background
    # moved onto plain background changes nothing and would be a defect no one can see.
    candidates = [_centre(region, rng, 0.15).astype(int) - patch // 2 for _ in range(4)]
    pieces = [np.rot90(image[y : y + patch, x : x + patch], k=turns) for x, y in candidates]
    piece = max(pieces, key=lambda p: float(np.abs(p - original).mean()))
    mask = np.zeros(region.shape, dtype=bool)
    mask[target[1] : target[1] + patch, target[0] : target[0] + patch] = True
    alpha = np.zeros(region.shape, dtype=np.float32)
    alpha[mask] = 1.0
    alpha = cv2().GaussianBlur(alpha, (0, 0), 0.7) * region
    pasted = image.copy()
    pasted[target[1] : target[1] + patch, target[0] : target[0] + patch] = piece
    image[:] = image * (1.0 - alpha[:, :, None]) + pasted * alpha[:, :, None]
    return mask & region


DEFECTS: dict[str, Defect] = {
    "scratch": scratch,
    "hole": hole,
    "stain": stain,
    "crack": crack,
    "misplaced": misplaced,
}
