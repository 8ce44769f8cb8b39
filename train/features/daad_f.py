"""`daad-f`: DAAD's divide-and-assemble on a frozen pretrained backbone's features.

The paper's question asked again where features mean something: divide the patch-feature map
into r x r blocks (all channels), rebuild each block as a softmax-weighted mix of a learned
bank of normal blocks, and score each position by the distance between its feature and its
rebuild. Block size is the granularity knob: 1 x 1 is close to a soft patch memory (patchcore
with a learned, blurred memory), a whole-level block is a global memory that must rebuild the
whole part at once. Only the bank learns; the backbone stays frozen, so fitting is a few
hundred Adam steps on features computed once.

Map and score: train/features/scoring.py, shared with patchcore.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from runtime.preprocess import PreprocessConfig
from train.blockmemory import BlockMemory, MemoryConfig
from train.features.patch_features import FeatureConfig, FeatureConfigError
from train.features.scoring import FeatureMemoryConfig, FeatureMemoryModel

WHOLE = 0  # block = 0: one block covers the whole level (a global memory)


@dataclass(frozen=True)
class DaadFConfig(FeatureMemoryConfig):
    kind: str = "daad-f"
    features: FeatureConfig = field(default_factory=FeatureConfig)
    block: int = 1  # r: blocks of r x r positions x all channels; 0 = the whole level
    slots: int = 2000  # rows of the bank
    temperature: float = 0.05  # softmax over cosine similarities; lower = closer to nearest neighbour
    steps: int = 300  # Adam steps on the bank
    lr: float = 0.01
    map_sigma: float = 4.0  # input pixels

    def __post_init__(self) -> None:
        if self.block < 0 or self.slots < 1 or self.steps < 0 or self.temperature <= 0 or self.lr <= 0:
            raise FeatureConfigError(f"daad-f needs block >= 0 and positive slots, steps, temperature and lr, got {self}")

    def memory(self, grid: tuple[int, int]) -> MemoryConfig:
        """The bank's block on a grid of h x w positions (block 0: the whole grid)."""
        h, w = grid if self.block == WHOLE else (self.block, self.block)
        return MemoryConfig(block_h=h, block_w=w, block_c=0, slots=self.slots, temperature=self.temperature)


class DaadFModel(FeatureMemoryModel):
    """The distance of each patch feature to its rebuild from a bank of normal blocks."""

    def __init__(self, config: DaadFConfig, preprocess: PreprocessConfig) -> None:
        super().__init__(config, preprocess)
        try:
            self.memory = BlockMemory(config.memory(self.grid), self.features.channels, *self.grid)
        except Exception as exc:  # a block that does not tile the grid
            raise FeatureConfigError(f"daad-f block {config.block} on a {self.grid[0]}x{self.grid[1]} patch grid: {exc}") from exc

    def patch_distances(self, features: torch.Tensor) -> torch.Tensor:
        """N x D x h x w -> N x 1 x h x w: distance of each position's feature to its rebuild."""
        rebuilt, _ = self.memory(features)
        difference = features - rebuilt
        return (difference * difference).sum(dim=1, keepdim=True).clamp_min(0.0).sqrt()

    def memory_banks(self) -> dict[str, torch.Tensor]:
        return {"blocks": self.memory.bank}

    def init_bank(self, features: torch.Tensor, seed: int) -> None:
        """Start the bank from blocks of the good images themselves, drawn with `seed`."""
        from train.blockmemory import divide

        blocks = divide(features, self.memory.shape)
        chosen = np.random.default_rng(seed).choice(len(blocks), self.config.slots, replace=len(blocks) < self.config.slots)
        self.memory.bank.data.copy_(blocks[torch.from_numpy(chosen)])


def fit_bank(model: DaadFModel, features: torch.Tensor, seed: int, batch_size: int, progress: Any) -> list[float]:
    """Adam on the bank alone: mean squared feature reconstruction error on the good images."""
    model.init_bank(features, seed)
    bank = model.memory.bank
    bank.requires_grad_(True)
    optimiser = torch.optim.Adam([bank], lr=model.config.lr)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(model.config.steps):
        batch = features[torch.randint(len(features), (min(batch_size, len(features)),), generator=generator)]
        rebuilt, _ = model.memory(batch)
        loss = ((batch - rebuilt) ** 2).sum(dim=1).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        progress(1, losses[-1])
    bank.requires_grad_(False)
    return losses
