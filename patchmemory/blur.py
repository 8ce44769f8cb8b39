"""The anomaly map's Gaussian smoothing as numbers (numpy, no torch): PyTorch's GaussianBlur
(train/blur.py) and the memory head written without torch (patchmemory/head.py) take the same
kernel and the same border weights from here, so both graphs smooth alike."""

from __future__ import annotations

import math

import numpy as np


def gaussian_kernel(sigma: float) -> np.ndarray:
    """A normalised 2-D Gaussian, float32 k x k, k = 2 * ceil(3 sigma) + 1 (computed in float64)."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    line = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel = np.outer(line, line)
    return (kernel / kernel.sum()).astype(np.float32)


def border_weights(kernel: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 height x width: 1 / (the kernel mass that falls inside the image) at each pixel.

    A zero-padded blur loses mass at the border; multiplying by this gives border pixels full
    weight, so a defect at the edge of the part is not smoothed away."""
    radius = kernel.shape[0] // 2
    padded = np.zeros((height + 2 * radius, width + 2 * radius), dtype=np.float64)
    padded[radius : radius + height, radius : radius + width] = 1.0
    mass = np.zeros((height, width), dtype=np.float64)
    for dy in range(kernel.shape[0]):
        for dx in range(kernel.shape[1]):
            mass += kernel[dy, dx] * padded[dy : dy + height, dx : dx + width]
    return (1.0 / mass).astype(np.float32)
