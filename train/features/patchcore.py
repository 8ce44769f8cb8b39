"""`patchcore`: the distance of each patch to its nearest neighbour in a memory of good patches.

The memory is a coreset of the good training images' patch features (patchmemory.coreset),
held as a buffer, so export freezes it as an ONNX initializer. The search is written with the
operators TensorRT runs well: |q - m|^2 = |q|^2 - 2 q.m + |m|^2 as one MatMul against the
memory plus constants, ReduceMin over the memory, Sqrt. That expansion cancels large terms:
keep it in fp32 (in fp16 a distance of 1 among features of length 30 loses most of its digits).

The map: patch distances, Gaussian-smoothed on the patch grid (sigma `map_sigma` input pixels,
applied at the patch stride, where it costs a 3 x 3 kernel instead of 25 x 25), then bilinear
up to the input size. The score is the map's maximum, so a threshold is a level on the map.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from patchmemory.coreset import DEFAULT_MEMORY_SIZE
from patchmemory.head import DEFAULT_MAP_SIGMA
from runtime.preprocess import PreprocessConfig
from train.features.patch_features import FeatureConfig, FeatureConfigError, PatchFeatures, with_feature_config
from train.pixel.model import GaussianBlur


@dataclass(frozen=True)
class PatchCoreConfig:
    kind: str = "patchcore"
    features: FeatureConfig = field(default_factory=FeatureConfig)
    memory_size: int = DEFAULT_MEMORY_SIZE  # coreset rows: the cost lever of the search
    map_sigma: float = DEFAULT_MAP_SIGMA  # input pixels

    def __post_init__(self) -> None:
        if self.memory_size < 1:
            raise FeatureConfigError(f"memory_size must be positive, got {self.memory_size}")
        if self.map_sigma < 0:
            raise FeatureConfigError(f"map_sigma must be >= 0, got {self.map_sigma}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["features"]["levels"] = list(self.features.levels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PatchCoreConfig":
        return cls(**with_feature_config(data))


class PatchCoreModel(nn.Module):
    """uint8 frames -> (score N, anomaly map N x 1 x H x W) against the memory of good patches."""

    def __init__(self, config: PatchCoreConfig, preprocess: PreprocessConfig) -> None:
        super().__init__()
        self.config, self.preprocess = config, preprocess
        self.features = PatchFeatures(config.features, preprocess)
        stride = config.features.stride
        self.grid = (preprocess.height // stride, preprocess.width // stride)
        self.register_buffer("memory", torch.zeros(config.memory_size, self.features.channels))
        self.map_blur = GaussianBlur(config.map_sigma / stride, 1, *self.grid)

    def set_memory(self, memory: np.ndarray) -> None:
        """Install the chosen patches; fewer rows than configured (a tiny data set) shrink the bank."""
        self.memory = torch.from_numpy(np.ascontiguousarray(memory, dtype=np.float32))

    def load_state_dict(self, state: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """A fitted memory may hold fewer rows than configured (a small data set): take its size."""
        if "memory" in state:
            self.set_memory(state["memory"].cpu().numpy())
        return super().load_state_dict(state, strict=strict, assign=assign)

    def patch_features(self, frames: torch.Tensor) -> torch.Tensor:
        """N x D x h x w features of uint8 frames (what the memory is fitted on)."""
        return self.features(frames)

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        """N x D x h x w -> N x 1 x h x w: distance of each patch to its nearest memory row."""
        n, d, h, w = features.shape
        queries = features.permute(0, 2, 3, 1).reshape(n, h * w, d)
        squared = (queries * queries).sum(dim=-1, keepdim=True)
        memory_squared = (self.memory * self.memory).sum(dim=-1)
        nearest = (squared - 2.0 * queries @ self.memory.t() + memory_squared).amin(dim=-1)
        return nearest.clamp_min(0.0).sqrt().reshape(n, 1, h, w)

    def score(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.score_features(self.features(frames))

    def score_features(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(score, map) of patch features already computed (experiments score many memories on one pass)."""
        patches = self.map_blur(self.distances(features))
        maps = F.interpolate(patches, scale_factor=self.config.features.stride, mode="bilinear", align_corners=False)
        return maps.amax(dim=(1, 2, 3)), maps

    def memory_banks(self) -> dict[str, torch.Tensor]:
        return {"patches": self.memory}
