"""Height x width input size: a part that is not square trains, exports and runs at its own aspect."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from export.export_cli import main as export_main
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.bundle import open_bundle
from runtime.cli import main as daad
from runtime.preprocess import parse_image_size, prepare_batch, size_for_aspect
from train import train_cli
from train.families import family_for
from train.checkpoint import load_checkpoint

HEIGHT, WIDTH = 40, 100  # stored images: wider than high, 1 : 2.5 like a KolektorSDD strip on its side
MODEL = {"widths": [4, 8, 8, 8], "discriminator_widths": [4, 4, 4, 4],
         "memories": [{"block_h": 2, "block_w": 2, "slots": 8}] * 4}


def test_image_size_is_height_by_width_or_one_number_for_a_square() -> None:
    assert parse_image_size("128x320") == (128, 320)
    assert parse_image_size("320X128") == (320, 128)
    assert parse_image_size("96") == (96, 96)
    for bad in ("", "x", "128x", "0x64", "1x2x3", "big"):
        with pytest.raises(argparse.ArgumentTypeError, match="HEIGHTxWIDTH"):
            parse_image_size(bad)


def test_default_size_keeps_the_short_side_and_rounds_the_long_one_to_the_stride() -> None:
    assert size_for_aspect(1262 / 500) == (320, 128)  # KolektorSDD: tall strips
    assert size_for_aspect(800 / 600) == (176, 128)  # tire: 170.7 rounds to 176
    assert size_for_aspect(500 / 1262) == (128, 320)
    assert size_for_aspect(1.0) == (128, 128) and size_for_aspect(1.05) == (128, 128)
    assert size_for_aspect(3.0, short_side=64) == (192, 64)


def strip(rng: np.random.Generator, crack: bool = False) -> np.ndarray:
    """A grey strip with vertical grooves; optionally a thin dark crack along it."""
    columns = (np.arange(WIDTH) + rng.integers(0, 6)) % 6 < 3
    image = np.where(columns[None, :], 170, 90) + rng.normal(0, 4, (HEIGHT, WIDTH))
    if crack:
        image[HEIGHT // 2 - 1 : HEIGHT // 2 + 1, 20:80] = 10
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def strips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "strip"
    rng = np.random.default_rng(0)
    for folder in ("train/good", "test/good", "test/crack", "ground_truth/crack"):
        (root / folder).mkdir(parents=True)
    for index in range(8):
        cv2.imwrite(str(root / f"train/good/{index:03d}.png"), strip(rng))
    for index in range(3):
        cv2.imwrite(str(root / f"test/good/{index:03d}.png"), strip(rng))
        cv2.imwrite(str(root / f"test/crack/{index:03d}.png"), strip(rng, crack=True))
        mask = np.zeros((HEIGHT, WIDTH), np.uint8)
        mask[HEIGHT // 2 - 1 : HEIGHT // 2 + 1, 20:80] = 255
        cv2.imwrite(str(root / f"ground_truth/crack/{index:03d}_mask.png"), mask)
    return root


def test_the_default_input_size_follows_the_training_images(strips, capsys) -> None:
    assert train_cli.default_size(strips, resume=False, family=family_for("daad+")) == (128, 320)
    assert "input size 128x320" in capsys.readouterr().err
    assert train_cli.default_size(strips, resume=False, family=family_for("patchcore")) == (224, 560)


def test_a_non_square_part_trains_exports_and_runs_at_its_aspect(strips, tmp_path, capsys) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": MODEL, "train": {"batch_size": 4, "validate_every": 0}}))
    run = tmp_path / "run"
    assert train_cli.main(["--data", str(strips), "--model", "daad+", "--out", str(run), "--image-size", "32x96",
                           "--config", str(config), "--epochs", "1", "--quiet"]) == 0
    loaded = load_checkpoint(run / "checkpoint.pt")
    assert (loaded.preprocess.height, loaded.preprocess.width) == (32, 96)
    assert tuple(loaded.model.memories["skip1"].bank.shape) == (8, 4 * 2 * 2)

    bundle = tmp_path / "bundle"
    assert export_main(["--checkpoint", str(run / "checkpoint.pt"), "--out", str(bundle)]) == 0
    assert json.loads((bundle / "model.json").read_text())["input_shape"][1:] == [32, 96, 1]
    frames = [cv2.imread(str(path), cv2.IMREAD_UNCHANGED) for path in sorted((strips / "test/crack").glob("*.png"))]
    with OnnxRuntimeBackend(open_bundle(bundle)) as backend:
        result = backend.infer(prepare_batch(frames, open_bundle(bundle).preprocess))
    assert result.anomaly_maps.shape == (3, 1, 32, 96) and np.isfinite(result.scores).all()

    ng = tmp_path / "ng"
    assert daad(["run", "--bundle", str(bundle), "--source", str(strips / "test/crack"), "--threshold=-1e9",
                 "--save-ng", str(ng)]) == 0
    saved = sorted(ng.glob("*.png"))
    assert len(saved) == 3 and cv2.imread(str(saved[0])).shape == (HEIGHT, WIDTH, 3)  # the heat map over the whole part
    capsys.readouterr()
