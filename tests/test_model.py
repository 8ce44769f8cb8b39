"""The network: shapes, preprocessing inside the model, memories, and the score definition."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch
from scipy import ndimage

from runtime.preprocess import PreprocessConfig, normalise
from train.config import ConfigError
from train.pixel.config import MemoryConfig, ModelConfig
from train.pixel.model import build_model

torch.set_num_threads(1)

PREPROCESS = PreprocessConfig(height=32, width=32, channels=3, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
TINY_MEMORIES = (
    MemoryConfig(block_h=4, block_w=4, slots=6),
    MemoryConfig(block_h=2, block_w=2, slots=6),
    MemoryConfig(block_h=2, block_w=2, block_c=4, slots=6),
    MemoryConfig(block_h=1, block_w=1, slots=6),
)


def tiny(kind: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    settings = {"map_sigma": 1.0, "diff_sigma": 1.0, **overrides}
    config = ModelConfig(
        kind=kind,
        widths=(4, 8, 8, 8),
        memories=TINY_MEMORIES,
        memae_memory=MemoryConfig(block_h=1, block_w=1, slots=10, shrink_threshold=0.05),
        discriminator_widths=(4, 4, 8, 8),
        **settings,
    )
    return build_model(config, PREPROCESS)


def frames(count: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8))


def test_the_model_normalises_exactly_like_the_runtime_reference():
    batch = frames(2)
    expected = normalise(batch.numpy(), PREPROCESS)
    assert np.allclose(tiny("ae").normalise(batch).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("kind", ["ae", "memae", "daad", "daad+"])
@pytest.mark.parametrize("count", [1, 3])
def test_score_handles_any_batch_and_scores_each_frame_alone(kind, count):
    model = tiny(kind).eval()
    batch = frames(count)
    with torch.no_grad():
        scores, maps = model.score(batch)
        single, single_map = model.score(batch[-1:])
    assert scores.shape == (count,) and maps.shape == (count, 1, 32, 32)
    assert torch.isfinite(scores).all()
    assert torch.allclose(scores[-1:], single, atol=1e-5)
    assert torch.allclose(maps[-1:], single_map, atol=1e-5)


def test_memories_per_kind_are_named_by_scale():
    assert tiny("ae").memory_banks() == {}
    assert list(tiny("memae").memory_banks()) == ["bottleneck"]
    banks = tiny("daad").memory_banks()
    assert list(banks) == ["skip1", "skip2", "skip3", "bottleneck"]
    assert banks["skip3"].shape == (6, 2 * 2 * 4)
    assert tiny("daad").discriminator is None and tiny("daad+").discriminator is not None


@pytest.mark.parametrize("kind", ["memae", "daad", "daad+"])
def test_gradients_reach_every_memory_bank(kind):
    model = tiny(kind).train()
    output = model(frames(4))
    loss = ((output.reconstruction - output.normalised) ** 2).mean() + output.entropy
    loss.backward()
    for name, bank in model.memory_banks().items():
        assert bank.grad is not None and bank.grad.abs().sum() > 0, name


def test_the_decoder_sees_the_input_only_through_the_memories():
    """Replacing every bank row by one constant vector makes the output independent of the input."""
    model = tiny("daad").eval()
    with torch.no_grad():
        for bank in model.memory_banks().values():
            bank.copy_(torch.ones_like(bank))
        first, _ = model.reconstruct(model.normalise(frames(1, seed=1)))
        second, _ = model.reconstruct(model.normalise(frames(1, seed=2)))
    assert torch.allclose(first, second, atol=1e-6)


def test_anomaly_map_is_the_smoothed_square_of_the_smoothed_difference():
    model = tiny("daad").eval()
    batch = frames(2)
    with torch.no_grad():
        _, maps = model.score(batch)
        x = model.normalise(batch)
        reconstruction, _ = model.reconstruct(x)
    difference = (x - reconstruction).numpy()

    def blur(image: np.ndarray) -> np.ndarray:
        """Zero padding, renormalised by the kernel mass inside the image (sigma 1, radius 3)."""
        mass = ndimage.gaussian_filter(np.ones_like(image), 1.0, mode="constant", truncate=3.0)
        return ndimage.gaussian_filter(image, 1.0, mode="constant", truncate=3.0) / mass

    expected = [blur(np.mean([blur(channel) ** 2 for channel in image], axis=0)) for image in difference]
    assert np.allclose(maps[:, 0].numpy(), np.stack(expected), rtol=1e-4, atol=1e-6)


def test_zero_sigmas_give_the_plain_squared_error():
    model = tiny("ae", diff_sigma=0.0, map_sigma=0.0).eval()
    batch = frames(1)
    with torch.no_grad():
        _, maps = model.score(batch)
        x = model.normalise(batch)
        reconstruction, _ = model.reconstruct(x)
    assert torch.allclose(maps, ((x - reconstruction) ** 2).mean(dim=1, keepdim=True))


def test_daad_plus_score_is_gamma_r_plus_one_minus_gamma_l():
    gamma = 0.3
    model = tiny("daad+", gamma=gamma).eval()
    model.score_stats.copy_(torch.tensor([0.5, 2.0, 0.1, 0.5]))
    batch = frames(3)
    with torch.no_grad():
        scores, maps = model.score(batch)
        output = model(batch)
        rec = model.score_terms(batch)[0]  # R, before mixing
    feature = ((output.real_features - output.fake_features) ** 2).mean(dim=(1, 2, 3))
    expected = gamma * (rec - 0.5) / 2.0 + (1 - gamma) * (feature - 0.1) / 0.5
    assert torch.allclose(scores, expected, atol=1e-5) and torch.equal(scores, maps.amax(dim=(1, 2, 3)))


def test_score_stats_standardise_r_and_l_on_the_fitting_images():
    model = tiny("daad+").eval()
    batch = frames(6)
    model.fit_score_stats([batch[:3], batch[3:]])
    with torch.no_grad():
        rec, feature, _ = model.score_terms(batch)
    stats = model.score_stats
    assert torch.allclose((rec - stats[0]).mean(), torch.zeros(()), atol=1e-5)
    assert torch.allclose(((feature - stats[2]) / stats[3]).std(), torch.ones(()), atol=1e-4)


def test_mean_reduction_scores_the_mean_of_the_map():
    model = tiny("ae", score_reduction="mean").eval()
    with torch.no_grad():
        scores, maps = model.score(frames(2))
    assert torch.allclose(scores, maps.mean(dim=(1, 2, 3)))


def test_an_image_size_that_is_not_a_multiple_of_16_is_refused():
    with pytest.raises(ConfigError, match="multiple of 16"):
        build_model(ModelConfig(kind="ae"), PreprocessConfig(height=40, width=40))
