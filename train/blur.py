"""A fixed Gaussian smoothing as a depthwise convolution: constant kernels, so it exports as one
Conv with an initializer and costs TensorRT nothing to parse."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalised 2-D Gaussian, 1 x 1 x k x k, k = 2 * ceil(3 sigma) + 1."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    line = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = torch.outer(line, line)
    return (kernel / kernel.sum()).float()[None, None]


class GaussianBlur(nn.Module):
    """A fixed depthwise Gaussian, zero-padded, divided by the kernel mass inside the image so
    border pixels keep full weight. sigma = 0 is the identity."""

    def __init__(self, sigma: float, channels: int, height: int, width: int) -> None:
        super().__init__()
        self.sigma, self.channels = sigma, channels
        if sigma <= 0:
            return
        kernel = gaussian_kernel(sigma)
        self.register_buffer("kernel", kernel.repeat(channels, 1, 1, 1), persistent=False)
        self.padding = kernel.shape[-1] // 2
        ones = torch.ones(1, channels, height, width)
        self.register_buffer("border", 1.0 / self._convolve(ones), persistent=False)

    def _convolve(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel, padding=self.padding, groups=self.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._convolve(x) * self.border if self.sigma > 0 else x
