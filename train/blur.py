"""A fixed Gaussian smoothing as a depthwise convolution: constant kernels, so it exports as one
Conv with an initializer and costs TensorRT nothing to parse."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from patchmemory import blur


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """A normalised 2-D Gaussian, 1 x 1 x k x k, k = 2 * ceil(3 sigma) + 1 (patchmemory.blur's numbers)."""
    return torch.from_numpy(blur.gaussian_kernel(sigma))[None, None]


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
        border = torch.from_numpy(blur.border_weights(kernel[0, 0].numpy(), height, width))
        self.register_buffer("border", border.expand(1, channels, height, width).clone(), persistent=False)

    def _convolve(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel, padding=self.padding, groups=self.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._convolve(x) * self.border if self.sigma > 0 else x
