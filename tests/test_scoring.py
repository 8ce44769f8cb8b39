"""The map-definition study: proxy defects on good images, and refits that reproduce the model's score."""

from __future__ import annotations

import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch

from experiments.realdata import main as realdata
from experiments.scoring import draw_defects
from experiments.scoring import main as scoring
from tiny_training import tiny_products

torch.set_num_threads(1)


def test_defects_are_drawn_into_a_crop_of_a_grey_strip_and_nowhere_else():
    rng = np.random.default_rng(0)
    good = rng.integers(90, 110, (3, 80, 32, 1), dtype=np.uint8)  # taller than wide, one channel
    drawn = draw_defects(good, seed=1, per_image=2)
    assert drawn.images.shape[1:] == (80, 32, 1) and drawn.images.dtype == np.uint8
    assert list(drawn.labels[:3]) == [0, 1, 1] and drawn.labels.sum() == len(drawn.labels) - 3
    assert not drawn.masks[drawn.labels == 0].any() and all(m.any() for m in drawn.masks[drawn.labels == 1])
    source = np.repeat(good, 3, axis=0)  # every image and its two copies
    for image, original, mask, label in zip(drawn.images, source, drawn.masks, drawn.labels):
        changed = image[:, :, 0] != original[:, :, 0]
        if label == 0:
            assert not changed.any()
            continue
        rows = np.nonzero(changed.any(axis=1))[0]
        assert rows.max() - rows.min() < 32  # inside one 32 x 32 crop
        assert np.abs(image.astype(int) - original)[mask].mean() > 5  # the defect is visible where the mask says


def test_the_default_definition_reproduces_the_models_own_score(tmp_path):
    root, config = tiny_products(tmp_path / "sets", ("cap",))
    runs = tmp_path / "tiny-s0"
    assert realdata([
        "--data", str(root), "--out", str(runs), "--image-size", "32", "--batch-size", "4", "--config", str(config),
        "--steps", "4", "--bench-seconds", "0.05", "--models", "ae", "daad+", "--seeds", "0",
    ]) == 0  # fmt: skip
    assert scoring(["--data", str(root), "--runs", str(runs), "--out", str(tmp_path / "scoring")]) == 0

    trained = {row["kind"]: row for row in json.loads((runs / "realdata.json").read_text())}
    rows = json.loads((tmp_path / "scoring" / "scoring.json").read_text())
    assert [(r["set"], r["kind"], r["seed"]) for r in rows] == [("cap", "ae", 0), ("cap", "daad+", 0)]
    for row in rows:
        default = row["definitions"]["mse pixel f0.5"]
        assert default["test"]["image_auroc"] == pytest.approx(trained[row["kind"]]["image_auroc"])
        assert default["test"]["pixel_auroc"] == pytest.approx(trained[row["kind"]]["pixel_auroc"], abs=1e-6)
        for measures in row["definitions"].values():
            assert all(0.0 <= value <= 1.0 for split in measures.values() for value in split.values() if value is not None)
    table = (tmp_path / "scoring" / "scoring.md").read_text()
    assert "| cap | ae (tiny) | mse pixel f0.5 | 1 |" in table and "| cap | daad+ (tiny) | ssim raw | 1 |" in table
    mixes = {name for name in rows[1]["definitions"] if name.startswith("mix")}
    assert mixes == {"mix gamma 0.9", "mix gamma 0.7", "mix gamma 0.5"} and not any(n.startswith("mix") for n in rows[0]["definitions"])
    assert rows[1]["definitions"]["mix gamma 0.5"]["test"]["pixel_auroc"] is None
