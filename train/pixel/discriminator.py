"""DAAD+'s discriminator: a feature extractor f_D and a real/fake classifier on top of it.

f_D serves twice: the feature-alignment loss pulls f_D(x_hat) towards f_D(x) during training,
and the same distance is the L term of the anomaly score.
"""

from __future__ import annotations

import torch
from torch import nn


class Discriminator(nn.Module):
    """Four stride-2 conv layers (f_D), then a 1x1 conv averaged over positions (a logit)."""

    def __init__(self, in_channels: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for width in widths:
            layers += [nn.Conv2d(previous, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            previous = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(previous, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised image N x C x H x W -> (features, real-vs-fake logit N)."""
        features = self.features(x)
        return features, self.classifier(features).mean(dim=(1, 2, 3))


def feature_distance(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared distance between discriminator features: L(x), shape N."""
    return ((real - fake) ** 2).mean(dim=(1, 2, 3))
