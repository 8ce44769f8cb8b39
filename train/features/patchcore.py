"""`patchcore`: the distance of each patch to its nearest neighbour in a memory of good patches.

The memory is a coreset of the good training images' patch features (patchmemory.coreset),
held as a buffer, so export freezes it as an ONNX initializer. The search is written with the
operators TensorRT runs well: |q - m|^2 = |q|^2 - 2 q.m + |m|^2 as one MatMul against the
memory plus constants, ReduceMin over the memory, Sqrt. That expansion cancels large terms:
keep it in fp32 (in fp16 a distance of 1 among features of length 30 loses most of its digits).

Map and score: train/features/scoring.py, shared with daad-f.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from patchmemory.coreset import DEFAULT_MEMORY_SIZE
from patchmemory.head import DEFAULT_MAP_SIGMA
from runtime.preprocess import PreprocessConfig
from train.features.patch_features import FeatureConfig, FeatureConfigError
from train.features.scoring import FeatureMemoryConfig, FeatureMemoryModel


@dataclass(frozen=True)
class PatchCoreConfig(FeatureMemoryConfig):
    kind: str = "patchcore"
    features: FeatureConfig = field(default_factory=FeatureConfig)
    memory_size: int = DEFAULT_MEMORY_SIZE  # coreset rows: the cost lever of the search
    map_sigma: float = DEFAULT_MAP_SIGMA  # input pixels

    def __post_init__(self) -> None:
        if self.memory_size < 1:
            raise FeatureConfigError(f"memory_size must be positive, got {self.memory_size}")
        if self.map_sigma < 0:
            raise FeatureConfigError(f"map_sigma must be >= 0, got {self.map_sigma}")


class PatchCoreModel(FeatureMemoryModel):
    """The distance of each patch to its nearest neighbour in a memory of good patches."""

    def __init__(self, config: PatchCoreConfig, preprocess: PreprocessConfig) -> None:
        super().__init__(config, preprocess)
        self.register_buffer("memory", torch.zeros(config.memory_size, self.features.channels))

    def set_memory(self, memory: np.ndarray) -> None:
        """Install the chosen patches; fewer rows than configured (a tiny data set) shrink the bank."""
        self.memory = torch.from_numpy(np.ascontiguousarray(memory, dtype=np.float32))

    def load_state_dict(self, state: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """A fitted memory may hold fewer rows than configured (a small data set): take its size."""
        if "memory" in state:
            self.set_memory(state["memory"].cpu().numpy())
        return super().load_state_dict(state, strict=strict, assign=assign)

    def patch_distances(self, features: torch.Tensor) -> torch.Tensor:
        """N x D x h x w -> N x 1 x h x w: distance of each patch to its nearest memory row."""
        n, d, h, w = features.shape
        queries = features.permute(0, 2, 3, 1).reshape(n, h * w, d)
        squared = (queries * queries).sum(dim=-1, keepdim=True)
        memory_squared = (self.memory * self.memory).sum(dim=-1)
        nearest = (squared - 2.0 * queries @ self.memory.t() + memory_squared).amin(dim=-1)
        return nearest.clamp_min(0.0).sqrt().reshape(n, 1, h, w)

    def memory_banks(self) -> dict[str, torch.Tensor]:
        return {"patches": self.memory}
