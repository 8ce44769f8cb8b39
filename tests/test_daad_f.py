"""daad-f: DAAD's block-wise memory on frozen features, fitted, reloaded, exported."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from export.bundle_export import ParityImages, export_bundle
from runtime.dataset import find_samples, load_images
from train.checkpoint import load_checkpoint
from train.config import ConfigError, TrainConfig
from train.families import family_for
from train.synth import SynthConfig, write_product

SMALL = {"kind": "daad-f", "block": 2, "slots": 40, "steps": 30}


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_product(root, "cap", SynthConfig(image_size=64, train=8, test_good=3, test_defect=1))
    return root / "cap"


@pytest.fixture(scope="module")
def fitted(product, tmp_path_factory):
    family = family_for("daad-f")
    out = tmp_path_factory.mktemp("run")
    result = family.fit(product, out, family.config_from_dict(SMALL), TrainConfig(seed=0, batch_size=4),
                        family.preprocess(64, 64, 1), resume=False, progress=False)  # fmt: skip
    return result


def test_the_bank_learns_to_rebuild_good_features(fitted):
    record = fitted.history[0]
    assert record["slots"] == 40 and record["blocks"] == 16  # an 8 x 8 patch grid in 2 x 2 blocks
    assert "a bank of 40 blocks (16 per image) after 30 steps" in fitted.summary
    model = load_checkpoint(fitted.checkpoint).model
    assert model.memory.shape.h == 2 and tuple(model.memory.bank.shape) == (40, 2 * 2 * 152)


def test_same_seed_same_bank(product, fitted, tmp_path):
    family = family_for("daad-f")
    again = family.fit(product, tmp_path, family.config_from_dict(SMALL), TrainConfig(seed=0, batch_size=4),
                       family.preprocess(64, 64, 1), resume=False, progress=False)  # fmt: skip
    assert torch.equal(load_checkpoint(again.checkpoint).model.memory.bank, load_checkpoint(fitted.checkpoint).model.memory.bank)


def test_block_sizes_from_one_position_to_the_whole_level():
    family = family_for("daad-f")
    preprocess = family.preprocess(64, 64, 3)
    for block, dim in ((1, 152), (4, 16 * 152), (0, 64 * 152)):
        model = family.build(family.config_from_dict({**SMALL, "block": block}), preprocess)
        assert model.memory.shape.dim == dim
    with pytest.raises(ConfigError, match="does not tile"):
        family.build(family.config_from_dict({**SMALL, "block": 3}), preprocess)


def test_exports_with_the_bank_as_an_initializer_and_matches_pytorch(product, fitted, tmp_path):
    loaded = load_checkpoint(fitted.checkpoint)
    test = load_images(find_samples(product, "test"), loaded.preprocess)
    labels = np.array([sample.label for sample in test.samples])
    exported = export_bundle(loaded.model, loaded.preprocess, tmp_path / "bundle", "daad-f", loaded.model_config.to_dict(),
                             parity_images=ParityImages(test.images, labels, "test"))  # fmt: skip
    assert exported.parity.passed
    assert exported.metadata.model_stats["memory_banks"]["blocks"]["slots"] == 40
    assert "blocks of 2 x 2 positions" in exported.metadata.score_definition
