"""The clean, defect-free look of each synthetic product, drawn once per image size.

Each product is modelled on a real inspection target and rendered on a canvas twice the image
size; every sample is then a rotated, shifted view of that canvas (see train/synth.py). Designs
are fixed per product (their own seed), as a production line makes the same part all day.
Sizes are fractions of the image side, so a 64 px data set looks like a shrunk 256 px one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from runtime.optional import cv2, require


@dataclass(frozen=True)
class Product:
    """How a product looks (a renderer) and how much it moves on the line."""

    name: str
    description: str
    render: Callable[[int], tuple[np.ndarray, np.ndarray]]  # canvas side -> (float32 BGR 0..255, region bool)
    channels: int  # 1: a mono camera; 3: colour
    max_rotation: float  # degrees, each way
    max_shift: float  # fraction of the image side, each way


def _texture(name: str, side: int) -> np.ndarray:
    """A real photographed texture from scikit-image (ships with the package), as float in [-1, 1]."""
    data = require("skimage.data", "synthetic product textures")
    image = getattr(data, name)().astype(np.float32)
    image = cv2().resize(image, (side, side), interpolation=cv2().INTER_AREA)
    return (image - image.mean()) / (np.abs(image - image.mean()).max() + 1e-6)


def _grid(side: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:side, 0:side].astype(np.float32)


def render_fabric(canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """Plain-weave denim: warp and weft threads alternating over/under, fibres from `gravel`."""
    period = canvas / 24.0  # 12 threads across the image: still resolved at 64 px
    y, x = _grid(canvas)
    u, v = x / period, y / period
    across_warp = np.cos((u % 1.0 - 0.5) * np.pi) ** 2
    across_weft = np.cos((v % 1.0 - 0.5) * np.pi) ** 2
    warp_on_top = (np.floor(u) + np.floor(v)) % 2 == 0
    # A thread is brightest where it crests over the crossing thread.
    warp = across_warp * (0.55 + 0.45 * np.sin(np.pi * (v % 1.0)))
    weft = across_weft * (0.55 + 0.45 * np.sin(np.pi * (u % 1.0)))
    grey = 0.22 + 0.55 * np.where(warp_on_top, warp, 0.8 * weft) + 0.12 * _texture("gravel", canvas)
    tint = np.array([0.95, 0.62, 0.38], dtype=np.float32)  # BGR: indigo warp
    return np.clip(grey, 0, 1)[:, :, None] * tint * 255.0, np.ones((canvas, canvas), dtype=bool)


def render_cap(canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """A turned metal cap seen from above on a conveyor: knurled rim, turning rings, embossed mark."""
    cv = cv2()
    size = canvas / 2.0
    y, x = _grid(canvas)
    dy, dx = y - canvas / 2.0, x - canvas / 2.0
    radius, theta = np.hypot(dx, dy), np.arctan2(dy, dx)
    outer, inner = 0.36 * size, 0.30 * size
    conveyor = 45.0 + 10.0 * _texture("grass", canvas)
    rim = 140.0 + 45.0 * np.cos(72 * theta) ** 2 * np.clip((outer - radius) / (0.02 * size), 0, 1)
    rings = 8.0 * np.cos(2 * np.pi * radius / (0.012 * size))
    highlight = 45.0 * np.exp(-(((dx + 0.1 * size) ** 2 + (dy + 0.12 * size) ** 2) / (2 * (0.12 * size) ** 2)))
    bevel = -35.0 * np.clip((radius - 0.8 * inner) / (0.2 * inner), 0, 1)
    face = 165.0 + rings + highlight + bevel
    mark = np.zeros((canvas, canvas), dtype=np.uint8)  # putText draws on 8-bit images only
    scale = size / 256.0
    cv.putText(mark, "DAAD", (int(canvas / 2 - 50 * scale), int(canvas / 2 + 40 * scale)),
               cv.FONT_HERSHEY_SIMPLEX, 1.0 * scale, 255, max(1, round(3 * scale)), cv.LINE_AA)
    cv.circle(mark, (canvas // 2, canvas // 2), round(0.05 * size), 255, max(1, round(2 * scale)), cv.LINE_AA)
    mark = cv.GaussianBlur(mark.astype(np.float32) / 255.0, (0, 0), max(0.6, 1.2 * scale))
    emboss = 90.0 * (np.roll(mark, -1, axis=1) - np.roll(mark, 1, axis=1) + np.roll(mark, -1, axis=0) - mark)
    grey = np.where(radius < inner, face + emboss, np.where(radius < outer, rim, conveyor))
    edge = np.abs(radius - inner) < 0.008 * size
    grey = np.where(edge, grey - 50.0, grey)
    return np.clip(grey, 0, 255)[:, :, None].repeat(3, axis=2), radius < outer


def render_pcb(canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """A populated circuit board: solder mask, copper traces, pads, vias, chips and silkscreen."""
    cv = cv2()
    rng = np.random.default_rng(20211)  # the board design, not the sample: fixed
    size = canvas / 2.0
    unit = max(1, round(size / 128))
    board = np.empty((canvas, canvas, 3), dtype=np.uint8)  # OpenCV draws text on 8-bit images only
    board[:] = (55, 105, 35)
    trace, pad, silk = (75, 150, 70), (185, 190, 195), (235, 235, 230)
    for _ in range(35):
        points = [rng.uniform(0, canvas, size=2)]
        for _ in range(rng.integers(2, 5)):
            step = rng.uniform(0.05, 0.25) * size * rng.choice([-1, 1])
            axis = rng.integers(0, 2)
            nxt = points[-1].copy()
            nxt[axis] += step
            points.append(nxt)
        cv.polylines(board, [np.int32(points)], False, trace, 2 * unit, cv.LINE_AA)
        for end in (points[0], points[-1]):
            cv.circle(board, tuple(int(c) for c in end), 3 * unit, pad, -1, cv.LINE_AA)
            cv.circle(board, tuple(int(c) for c in end), unit, (20, 30, 20), -1, cv.LINE_AA)
    for index in range(14):
        cx, cy = rng.uniform(0.05, 0.95, size=2) * canvas
        if index % 3 == 0:
            _chip(board, int(cx), int(cy), unit, rng)
        else:
            w, h = (int(v) for v in rng.choice([6, 8, 10], size=2) * unit)
            cv.rectangle(board, (int(cx), int(cy)), (int(cx) + 2 * w, int(cy) + h), (60, 100, 150), -1)
            cv.rectangle(board, (int(cx), int(cy)), (int(cx) + w // 2, int(cy) + h), pad, -1)
            cv.rectangle(board, (int(cx) + 2 * w - w // 2, int(cy)), (int(cx) + 2 * w, int(cy) + h), pad, -1)
            cv.rectangle(board, (int(cx) - unit, int(cy) - unit), (int(cx) + 2 * w + unit, int(cy) + h + unit), silk, 1)
            cv.putText(board, f"{'RC'[index % 2]}{index}", (int(cx), int(cy) - 2 * unit),
                       cv.FONT_HERSHEY_PLAIN, 0.5 * unit, silk, 1, cv.LINE_AA)
    solder_mask_texture = 6.0 * _texture("gravel", canvas)[:, :, None]
    return board.astype(np.float32) + solder_mask_texture, np.ones((canvas, canvas), dtype=bool)


def _chip(board: np.ndarray, cx: int, cy: int, unit: int, rng: np.random.Generator) -> None:
    cv = cv2()
    w, h = int(rng.integers(16, 28)) * unit, int(rng.integers(12, 20)) * unit
    for offset in range(2 * unit, w - unit, 3 * unit):
        cv.rectangle(board, (cx + offset, cy - 2 * unit), (cx + offset + unit, cy + h + 2 * unit), (185, 190, 195), -1)
    cv.rectangle(board, (cx, cy), (cx + w, cy + h), (28, 28, 30), -1)
    cv.circle(board, (cx + 3 * unit, cy + 3 * unit), unit, (70, 70, 70), -1, cv.LINE_AA)


PRODUCTS: dict[str, Product] = {
    product.name: product
    for product in (
        Product("fabric", "plain-weave denim (periodic texture), seen through a moving web", render_fabric, 3, 3.0, 0.5),
        Product("cap", "turned metal cap from above on a conveyor (centred object, mono camera)", render_cap, 1, 12.0, 0.03),
        Product("pcb", "populated circuit board (printed, structured surface)", render_pcb, 3, 2.0, 0.03),
    )
}
