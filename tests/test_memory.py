"""Block-wise memory: divide/assemble, addressing, the per-pixel special case."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from train.config import ConfigError
from train.blockmemory import MemoryConfig
from train.blockmemory import BlockMemory, address, assemble, block_shape, divide, entropy

torch.set_num_threads(1)


@st.composite
def tiled_maps(draw):
    """A feature map and a block shape that tiles it (block_c = 0 means all channels)."""
    block = [draw(st.integers(1, 4)) for _ in range(3)]
    grid = [draw(st.integers(1, 3)) for _ in range(3)]
    channels, height, width = (b * g for b, g in zip(block, grid))
    whole_depth = draw(st.booleans())
    config = MemoryConfig(block_h=block[1], block_w=block[2], block_c=0 if whole_depth else block[0], slots=3)
    batch = draw(st.integers(1, 3))
    return torch.randn(batch, channels, height, width), config


@settings(max_examples=60, deadline=None)
@given(tiled_maps())
def test_divide_then_assemble_is_identity_and_rows_are_blocks(case):
    x, config = case
    shape = block_shape(config, *x.shape[1:])
    queries = divide(x, shape)
    assert queries.shape == (x.shape[0] * shape.grid[0] * shape.grid[1] * shape.grid[2], shape.dim)
    assert torch.equal(assemble(queries, shape), x)
    # The last row is the bottom-right, deepest block of the last image, flattened c, h, w.
    corner = x[-1, -shape.c :, -shape.h :, -shape.w :].reshape(-1)
    assert torch.equal(queries[-1], corner)


def test_a_block_that_does_not_tile_is_refused_with_the_sizes():
    with pytest.raises(ConfigError, match="does not tile a 6x8x4"):
        block_shape(MemoryConfig(block_h=4, block_w=4), 4, 6, 8)


@pytest.mark.parametrize("shrink", [0.0, 0.05])
def test_addressing_weights_are_a_convex_combination(shrink):
    torch.manual_seed(0)
    weights = address(torch.randn(50, 12), torch.randn(10, 12), temperature=0.1, shrink_threshold=shrink)
    assert (weights >= 0).all()
    assert torch.allclose(weights.sum(dim=1), torch.ones(50), atol=1e-5)


def test_shrinkage_zeroes_weights_below_the_threshold():
    torch.manual_seed(0)
    queries, bank = torch.randn(40, 8), torch.randn(16, 8)
    soft = address(queries, bank, temperature=1.0, shrink_threshold=0.0)
    hard = address(queries, bank, temperature=1.0, shrink_threshold=1.0 / 16)
    assert ((soft < 1.0 / 16) == (hard == 0)).all()
    assert (hard == 0).any()


def test_entropy_is_zero_for_one_hot_and_log_n_for_uniform():
    assert entropy(torch.eye(4)).item() == pytest.approx(0.0, abs=1e-6)
    assert entropy(torch.full((3, 8), 1 / 8)).item() == pytest.approx(torch.log(torch.tensor(8.0)).item(), rel=1e-5)


def test_a_1x1xC_block_is_per_pixel_memory():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 7)
    memory = BlockMemory(MemoryConfig(block_h=1, block_w=1, block_c=0, slots=9, temperature=0.5), 6, 5, 7)
    assembled, _ = memory(x)

    # Independent statement: every pixel's C-vector is rebuilt from the bank on its own.
    pixels = x.permute(0, 2, 3, 1).reshape(-1, 6)
    similarity = F.cosine_similarity(pixels[:, None, :], memory.bank[None, :, :], dim=-1)
    rebuilt = torch.softmax(similarity / 0.5, dim=1) @ memory.bank
    expected = rebuilt.reshape(2, 5, 7, 6).permute(0, 3, 1, 2)
    assert torch.allclose(assembled, expected, atol=1e-5)


def test_a_whole_map_block_is_one_global_query_per_image():
    x = torch.randn(3, 4, 4, 4)
    memory = BlockMemory(MemoryConfig(block_h=4, block_w=4, slots=5), 4, 4, 4)
    _, weights = memory(x)
    assert weights.shape == (3, 5)
