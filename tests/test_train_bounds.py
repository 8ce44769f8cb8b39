"""`daad train --image-size` within what the model, the training images and the memory allow: one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
from runtime.cli import main as daad  # noqa: E402
from runtime.optional import cv2  # noqa: E402


@pytest.fixture
def parts(tmp_path) -> Path:
    folder = tmp_path / "good"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(4):
        cv2().imwrite(str(folder / f"{index}.png"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    return folder


@pytest.mark.parametrize("model", ["daad+", "patchcore"])
@pytest.mark.parametrize("size, says", [
    ("7", "must be a multiple of 16"),
    ("100000", "would enlarge the training images (at most 48x64 px among those sampled) more than 4x: "
               "choose at most 192x256"),
    ("16x100000", "more than 4x"),
])
def test_an_image_size_the_model_or_the_images_cannot_serve_is_one_line(model, size, says, parts, tmp_path,
                                                                          capsys) -> None:
    run = tmp_path / "run"
    assert daad(["train", "--data", str(parts), "--out", str(run), "--model", model, "--image-size", size,
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (run / "checkpoint.pt").exists()


def test_an_image_size_beyond_the_free_memory_is_one_line(parts, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert daad(["train", "--data", str(parts), "--out", str(run), "--model", "daad+", "--image-size", "192x256",
                 "--batch-size", "1000000000", "--steps", "1", "--quiet"]) == 2  # a batch no machine holds
    err = capsys.readouterr().err
    assert "GiB for 4 training images and a batch of 1000000000, more than the" in err and err.count("\n") == 1
