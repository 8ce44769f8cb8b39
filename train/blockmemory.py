"""Block-wise memory (DAAD): divide a feature map into blocks, address a bank, assemble back.

The paper's central idea, shared by the pixel families (on the U-Net's skips) and daad-f (on a
pretrained backbone's features).

Everything here is written for export as well as training: divide/assemble are reshape +
permute (never unfold/fold, whose Col2Im TensorRT cannot parse), tensors stay at rank <= 7,
the batch dimension is always -1, and the cosine uses rsqrt instead of torch.norm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from train.config import ConfigError

EPS = 1e-12


@dataclass(frozen=True)
class MemoryConfig:
    """One block-wise memory: blocks of block_h x block_w x block_c, a bank of `slots` rows.

    block_c = 0 means all channels of the feature map (the paper's r_c = C).
    shrink_threshold = 0 turns MemAE's hard shrinkage off.
    """

    block_h: int = 4
    block_w: int = 4
    block_c: int = 0
    slots: int = 200
    temperature: float = 0.1
    shrink_threshold: float = 0.0

    def __post_init__(self) -> None:
        if min(self.block_h, self.block_w) < 1 or self.block_c < 0 or self.slots < 1:
            raise ConfigError(f"memory block and slots must be positive, got {self}")
        if self.temperature <= 0:
            raise ConfigError(f"memory temperature must be positive, got {self.temperature}")
        if not 0.0 <= self.shrink_threshold < 1.0:
            raise ConfigError(f"shrink_threshold must be in [0, 1), got {self.shrink_threshold}")


@dataclass(frozen=True)
class BlockShape:
    """A block of h x w x c inside a feature map of channels x height x width."""

    h: int
    w: int
    c: int
    channels: int
    height: int
    width: int

    @property
    def dim(self) -> int:
        return self.h * self.w * self.c

    @property
    def grid(self) -> tuple[int, int, int]:
        """Blocks along channels, rows and columns."""
        return self.channels // self.c, self.height // self.h, self.width // self.w


def block_shape(config: MemoryConfig, channels: int, height: int, width: int) -> BlockShape:
    """Resolve block_c = 0 to all channels and check that the blocks tile the map."""
    c = config.block_c or channels
    if channels % c or height % config.block_h or width % config.block_w:
        raise ConfigError(
            f"memory block {config.block_h}x{config.block_w}x{c} does not tile a "
            f"{height}x{width}x{channels} feature map: choose a block size that divides it"
        )
    return BlockShape(config.block_h, config.block_w, c, channels, height, width)


def divide(x: torch.Tensor, shape: BlockShape) -> torch.Tensor:
    """N x C x H x W -> (N * blocks) x D queries, one row per block, block order C, H, W."""
    gc, gh, gw = shape.grid
    x = x.reshape(-1, gc, shape.c, gh, shape.h, gw, shape.w)
    x = x.permute(0, 1, 3, 5, 2, 4, 6)  # N, gc, gh, gw, c, h, w
    return x.reshape(-1, shape.dim)


def assemble(queries: torch.Tensor, shape: BlockShape) -> torch.Tensor:
    """The inverse of `divide`: (N * blocks) x D -> N x C x H x W."""
    gc, gh, gw = shape.grid
    x = queries.reshape(-1, gc, gh, gw, shape.c, shape.h, shape.w)
    x = x.permute(0, 1, 4, 2, 5, 3, 6)  # N, gc, c, gh, h, gw, w
    return x.reshape(-1, shape.channels, shape.height, shape.width)


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm; plain ops so the ONNX graph needs no ReduceL2."""
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + EPS)


def address(
    queries: torch.Tensor, bank: torch.Tensor, temperature: float, shrink_threshold: float
) -> torch.Tensor:
    """Addressing weights: softmax over cosine similarities, optionally hard-shrunk (MemAE).

    Each row is a convex combination: non-negative and summing to 1 (after shrinkage, by the
    L1 renormalisation).
    """
    similarity = unit_rows(queries) @ unit_rows(bank).transpose(0, 1)
    weights = torch.softmax(similarity / temperature, dim=-1)
    if shrink_threshold > 0:
        shifted = weights - shrink_threshold
        weights = torch.relu(shifted) * weights / (torch.abs(shifted) + EPS)
        weights = weights / (weights.sum(dim=-1, keepdim=True) + EPS)
    return weights


def entropy(weights: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the addressing rows; MemAE's sparsity loss."""
    return -(weights * torch.log(weights + EPS)).sum(dim=-1).mean()


class BlockMemory(nn.Module):
    """A learned bank of `slots` normal blocks; every block of the input is rebuilt from it."""

    def __init__(self, config: MemoryConfig, channels: int, height: int, width: int) -> None:
        super().__init__()
        self.config = config
        self.shape = block_shape(config, channels, height, width)
        bound = self.shape.dim**-0.5
        self.bank = nn.Parameter(torch.empty(config.slots, self.shape.dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature map -> (assembled map of the same shape, addressing weights)."""
        weights = address(divide(x, self.shape), self.bank, self.config.temperature, self.config.shrink_threshold)
        return assemble(weights @ self.bank, self.shape), weights
