"""What every feature memory shares: its config's file form, and how a per-patch distance
becomes the anomaly map and the score.

A family says how far each patch is from normal (`patch_distances`); the map is that distance
Gaussian-smoothed on the patch grid (sigma `map_sigma` input pixels, applied at the patch
stride, where it costs a 5 x 5 kernel instead of a 25 x 25 one at full size), then bilinearly upsampled to the
input; the score is the map's maximum, so a threshold on the score is a level on the map.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from runtime.preprocess import PreprocessConfig
from train.blur import GaussianBlur
from train.features.patch_features import PatchFeatures, with_feature_config


class FeatureMemoryConfig:
    """to_dict/from_dict of a frozen dataclass with a `features: FeatureConfig` field."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)  # type: ignore[call-overload]
        data["features"]["levels"] = list(self.features.levels)  # type: ignore[attr-defined]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        return cls(**with_feature_config(data))


class FeatureMemoryModel(nn.Module):
    """uint8 frames -> (score N, anomaly map N x 1 x H x W) from a per-patch distance to normal."""

    def __init__(self, config: Any, preprocess: PreprocessConfig) -> None:
        super().__init__()
        self.config, self.preprocess = config, preprocess
        self.features = PatchFeatures(config.features, preprocess)
        stride = config.features.stride
        self.grid = (preprocess.height // stride, preprocess.width // stride)
        self.map_blur = GaussianBlur(config.map_sigma / stride, 1, *self.grid)

    def patch_features(self, frames: torch.Tensor) -> torch.Tensor:
        """N x D x h x w features of uint8 frames (what the memory is fitted on)."""
        return self.features(frames)

    def patch_distances(self, features: torch.Tensor) -> torch.Tensor:
        """N x D x h x w -> N x 1 x h x w: how far each patch is from normal."""
        raise NotImplementedError

    def score(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.score_features(self.features(frames))

    def score_features(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(score, map) of patch features already computed (experiments score many memories on one pass)."""
        patches = self.map_blur(self.patch_distances(features))
        maps = F.interpolate(patches, scale_factor=self.config.features.stride, mode="bilinear", align_corners=False)
        return maps.amax(dim=(1, 2, 3)), maps
