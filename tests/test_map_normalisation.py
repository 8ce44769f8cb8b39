"""map_normalisation "pixel": the anomaly map standardised per pixel against good training images."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import dataclasses
import json

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from export.bundle_export import export_bundle
from export.parity import synthetic_frames
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.bundle import open_bundle
from runtime.preprocess import PreprocessConfig
from train.checkpoint import load_checkpoint, save_checkpoint
from train.config import ConfigError, TrainConfig
from train.pixel.config import MemoryConfig, ModelConfig
from train.metrics import image_auroc
from train.pixel.model import build_model
from train.pixel.trainer import train

torch.set_num_threads(1)

SIZE = 32
PREPROCESS = PreprocessConfig(height=SIZE, width=SIZE, channels=3)


def tiny_config(kind: str = "ae", normalisation: str = "pixel") -> ModelConfig:
    memory = MemoryConfig(block_h=2, block_w=2, slots=8)
    return ModelConfig(
        kind=kind,
        widths=(4, 8, 8, 8),
        memories=(memory,) * 4,
        discriminator_widths=(4, 4, 4, 4),
        map_normalisation=normalisation,
    )


def logo_part(rng: np.random.Generator, spot: bool = False) -> np.ndarray:
    """A grey part with a bright centre logo of varying brightness; optionally a small dark spot."""
    image = 128 + rng.normal(0, 3, (SIZE, SIZE))
    image[12:20, 12:20] += rng.uniform(80, 120)
    if spot:
        image[3:7, 24:28] -= 60
    return np.repeat(np.clip(image, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def missing_the_logo(model: torch.nn.Module) -> torch.nn.Module:
    """A model whose reconstruction is the plain grey part on every image: it never reconstructs
    the logo (nor a defect), like an autoencoder that cannot learn embossed structure."""
    grey = model.normalise(torch.full((1, SIZE, SIZE, 3), 128, dtype=torch.uint8))
    model.reconstruct = lambda x: (grey.expand_as(x), {})
    return model.eval()


def scores_and_labels(model: torch.nn.Module, rng: np.random.Generator) -> tuple[np.ndarray, list[int], torch.Tensor]:
    good = [logo_part(rng) for _ in range(10)]
    bad = [logo_part(rng, spot=True) for _ in range(10)]
    with torch.no_grad():
        scores, maps = model.score(torch.from_numpy(np.stack(good + bad)))
    return scores.numpy(), [0] * 10 + [1] * 10, maps


def test_a_structure_missed_on_every_good_image_no_longer_dominates_the_score():
    rng = np.random.default_rng(0)
    fitting = torch.from_numpy(np.stack([logo_part(rng) for _ in range(40)]))
    results = {}
    for normalisation in ("none", "pixel"):
        model = missing_the_logo(build_model(tiny_config("ae", normalisation), PREPROCESS))
        model.fit_score_stats([fitting[:20], fitting[20:]])
        results[normalisation] = scores_and_labels(model, np.random.default_rng(1))
    raw_scores, labels, raw_maps = results["none"]
    peaks = raw_maps[:10].flatten(1).argmax(dim=1)
    assert all(12 <= int(p) // SIZE < 20 and 12 <= int(p) % SIZE < 20 for p in peaks)  # the logo
    assert image_auroc(labels, raw_scores) < 0.8
    pixel_scores, _, pixel_maps = results["pixel"]
    assert image_auroc(labels, pixel_scores) == 1.0
    spot_peaks = pixel_maps[10:].flatten(1).argmax(dim=1)
    assert all(1 <= int(p) // SIZE < 9 and 22 <= int(p) % SIZE < 30 for p in spot_peaks)  # the spot


def test_none_scores_the_raw_map_and_keeps_the_state_dict_unchanged():
    torch.manual_seed(0)
    model = build_model(tiny_config("ae", "none"), PREPROCESS).eval()
    frames = torch.from_numpy(synthetic_frames(SIZE, SIZE, 3, count=4, seed=2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.fit_score_stats([frames])
    with torch.no_grad():
        scores, maps = model.score(frames)
        x = model.normalise(frames)
        raw = model.anomaly_map(x, model.reconstruct(x)[0])
    assert torch.equal(maps, raw) and torch.equal(scores, raw.amax(dim=(1, 2, 3)))
    assert set(model.state_dict()) == set(before) and not any(k.startswith("map_") for k in before)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_daad_plus_standardises_r_on_the_standardised_map():
    torch.manual_seed(0)
    model = build_model(tiny_config("daad+"), PREPROCESS).eval()
    frames = torch.from_numpy(synthetic_frames(SIZE, SIZE, 3, count=6, seed=3))
    model.fit_score_stats([frames[:3], frames[3:]])
    with torch.no_grad():
        rec, _, maps = model.score_terms(frames)
        x = model.normalise(frames)
        raw = model.anomaly_map(x, model.reconstruct(x)[0])
    assert torch.allclose(maps, (raw - model.map_mean) / model.map_std)
    assert torch.allclose(rec.mean(), model.score_stats[0], atol=1e-5)
    assert torch.allclose(rec.std(), model.score_stats[1], rtol=1e-4)


def test_the_field_is_validated_and_round_trips():
    with pytest.raises(ConfigError, match="map_normalisation"):
        ModelConfig(map_normalisation="image")
    config = ModelConfig(map_normalisation="pixel")
    assert ModelConfig.from_dict(config.to_dict()) == config


@pytest.fixture(scope="module")
def logo_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "logo"
    (root / "train/good").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(8):
        cv2.imwrite(str(root / f"train/good/{index:03d}.png"), logo_part(rng))
    return root


def test_training_fits_the_buffers_into_the_checkpoint_and_onnx(logo_data, tmp_path):
    result = train(logo_data, tmp_path / "run", tiny_config(), TrainConfig(epochs=1, batch_size=4), PREPROCESS, progress=False)
    loaded = load_checkpoint(result.checkpoint)
    model = loaded.model
    assert loaded.model_config.map_normalisation == "pixel"
    mean, spread = model.map_mean.numpy()[0, 0], model.map_std.numpy()[0, 0]
    assert mean.min() > 0 and spread.min() > 0 and spread.std() > 0
    assert mean[12:20, 12:20].mean() > 2 * np.median(mean)  # the missed logo: a high expected error

    bundle = export_bundle(model, PREPROCESS, tmp_path / "bundle", "ae", loaded.model_config.to_dict(), training={})
    assert json.loads((bundle.root / "model.json").read_text())["parity"]["passed"]
    proto = onnx.load(str(bundle.root / "model.onnx"))
    constants = [numpy_helper.to_array(init) for init in proto.graph.initializer]
    assert any(np.array_equal(c, model.map_mean.numpy()) for c in constants)  # a constant, not an input
    frames = np.stack([logo_part(np.random.default_rng(5), spot=True) for _ in range(2)])
    with OnnxRuntimeBackend(open_bundle(bundle.root)) as backend:
        onnx_scores = backend.infer(frames).scores
    with torch.no_grad():
        torch_scores = model.score(torch.from_numpy(frames))[0].numpy()
    np.testing.assert_allclose(onnx_scores, torch_scores, rtol=1e-4, atol=1e-6)


def test_checkpoints_from_before_the_field_load_as_none(tmp_path):
    model = build_model(tiny_config("ae", "none"), PREPROCESS)
    path = save_checkpoint(tmp_path / "old.pt", model, model.config, PREPROCESS, TrainConfig(), {})
    payload = torch.load(path, weights_only=True)
    del payload["model_config"]["map_normalisation"]
    torch.save(payload, path)
    assert load_checkpoint(path).model_config.map_normalisation == "none"


@pytest.mark.parametrize("gamma", [1.0, 0.5])
def test_the_map_is_in_score_units_so_the_score_is_its_maximum(gamma):
    """daad+ too: a threshold on the score is a level on the map, so both share one colour scale."""
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(tiny_config("daad+"), gamma=gamma), PREPROCESS).eval()
    frames = torch.from_numpy(synthetic_frames(SIZE, SIZE, 3, count=6, seed=3))
    model.fit_score_stats([frames[:3], frames[3:]])
    with torch.no_grad():
        scores, maps = model.score(frames)
        rec, feature, _ = model.score_terms(frames)
    stats = model.score_stats
    expected = gamma * (rec - stats[0]) / stats[1] + (1 - gamma) * (feature - stats[2]) / stats[3]
    assert torch.allclose(scores, expected, atol=1e-5) and torch.equal(scores, maps.amax(dim=(1, 2, 3)))


def part_on_black(rng: np.random.Generator, background_noise: float = 0.0, spot: bool = False) -> np.ndarray:
    """A textured part on a plain black background (a tyre on a dark table); optionally sensor
    noise on the background, or a dark spot on the part."""
    image = rng.normal(0, background_noise, (SIZE, SIZE)) if background_noise else np.zeros((SIZE, SIZE))
    image[8:24, 8:24] = 128 + rng.normal(0, 8, (16, 16))
    if spot:
        image[14:17, 14:17] -= 40
    return np.repeat(np.clip(image, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def test_noise_on_a_plain_background_does_not_outscore_a_defect():
    """The background reconstructs perfectly on every training image, so its per-pixel std is
    zero; with the std floored only at a tenth of its image mean, 3 grey levels of sensor noise
    there scored 44-84 and a defect 38-73. Floored at half the residual map's std, they cannot."""
    model = build_model(tiny_config("ae"), PREPROCESS)
    clean = np.zeros((1, SIZE, SIZE, 3), np.uint8)
    clean[:, 8:24, 8:24] = 128
    reference = model.normalise(torch.from_numpy(clean))
    model.reconstruct = lambda x: (reference.expand_as(x), {})
    rng = np.random.default_rng(0)
    model.eval().fit_score_stats([torch.from_numpy(np.stack([part_on_black(rng) for _ in range(20)]))])
    good = np.stack([part_on_black(rng, background_noise=3) for _ in range(5)])
    bad = np.stack([part_on_black(rng, spot=True) for _ in range(5)])
    with torch.no_grad():
        good_scores, bad_scores = model.score(torch.from_numpy(good))[0], model.score(torch.from_numpy(bad))[0]
    assert float(good_scores.max()) < float(bad_scores.min())
    assert float(model.map_std.max() / model.map_std.min()) < 10
