"""Training, checkpoints and evaluation end to end, on a tiny data set written to disk."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from runtime.cli import main as daad
from runtime.errors import DaadError
from runtime.preprocess import PreprocessConfig
from train import eval_cli, train_cli
from train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from train.config import ConfigError, TrainConfig, read_config_file
from train.pixel.config import MemoryConfig, ModelConfig
from train.pixel.family import PIXEL
from train.pixel.losses import generator_loss
from train.pixel.model import build_model
from train.torch_backend import TorchBackend
from train.pixel.trainer import train

torch.set_num_threads(1)

SIZE = 32
PREPROCESS = PreprocessConfig(height=SIZE, width=SIZE, channels=3)
MODEL = {
    "widths": [4, 8, 8, 8],
    "memories": [
        {"block_h": 4, "block_w": 4, "slots": 8},
        {"block_h": 2, "block_w": 2, "slots": 8},
        {"block_h": 2, "block_w": 2, "slots": 8},
        {"block_h": 1, "block_w": 1, "slots": 8},
    ],
    "memae_memory": {"block_h": 1, "block_w": 1, "slots": 8, "shrink_threshold": 0.05},
    "discriminator_widths": [4, 4, 8, 8],
    "map_sigma": 1.0,
}


def stripes(rng: np.random.Generator) -> np.ndarray:
    """A good part: horizontal stripes with a random phase and a little noise."""
    rows = (np.arange(SIZE)[:, None] + rng.integers(0, 8)) % 8 < 4
    image = np.where(rows, 180, 70) + rng.normal(0, 5, (SIZE, SIZE))
    return np.repeat(np.clip(image, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """MVTec AD layout: 12 good training images, 4 good and 4 spotted test images with masks."""
    root = tmp_path_factory.mktemp("data") / "stripes"
    rng = np.random.default_rng(0)
    for folder in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        (root / folder).mkdir(parents=True)
    for index in range(12):
        cv2.imwrite(str(root / f"train/good/{index:03d}.png"), stripes(rng))
    for index in range(4):
        cv2.imwrite(str(root / f"test/good/{index:03d}.png"), stripes(rng))
        image, mask = stripes(rng), np.zeros((SIZE, SIZE), np.uint8)
        cv2.circle(image, (16, 16), 5, (0, 0, 255), -1)
        cv2.circle(mask, (16, 16), 5, 255, -1)
        cv2.imwrite(str(root / f"test/spot/{index:03d}.png"), image)
        cv2.imwrite(str(root / f"ground_truth/spot/{index:03d}_mask.png"), mask)
    return root


def config_file(tmp_path: Path, epochs: int = 2) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model": MODEL, "train": {"epochs": epochs, "batch_size": 4}}))
    return path


def assert_same_weights(first: Path, second: Path) -> None:
    """Two checkpoints hold the same weights (a resumed run against one straight run)."""
    a, b = load_checkpoint(first).model, load_checkpoint(second).model
    for name, tensor in a.state_dict().items():
        assert torch.allclose(tensor, b.state_dict()[name], atol=1e-6), name


@pytest.mark.parametrize("kind", ["ae", "memae", "daad", "daad+"])
def test_a_few_training_steps_lower_the_loss(kind):
    torch.manual_seed(0)
    config = ModelConfig.from_dict({**MODEL, "kind": kind})
    model = build_model(config, PREPROCESS).train()
    optimiser = torch.optim.Adam(model.generator_parameters(), lr=5e-3)
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(np.stack([stripes(rng) for _ in range(4)]))
    losses = []
    for _ in range(8):
        loss, _ = generator_loss(model(batch), config)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_training_is_deterministic_and_the_checkpoint_round_trips(dataset, tmp_path):
    model_config = ModelConfig.from_dict({**MODEL, "kind": "daad+"})
    train_config = TrainConfig(epochs=2, batch_size=4, seed=3)
    first = train(dataset, tmp_path / "a", model_config, train_config, PREPROCESS, progress=False)
    second = train(dataset, tmp_path / "b", model_config, train_config, PREPROCESS, progress=False)
    a, b = load_checkpoint(first.checkpoint), load_checkpoint(second.checkpoint)
    for name, tensor in a.model.state_dict().items():
        assert torch.equal(tensor, b.model.state_dict()[name]), name
    assert [r["epoch"] for r in first.history] == [1, 2] and "val_image_auroc" in first.history[-1]
    assert a.model_config == model_config and a.preprocess == PREPROCESS and a.train_config == train_config
    assert a.meta["versions"]["torch"] == str(torch.__version__) and a.meta["data"]["train"] == {"good": 12}
    assert not a.model.training

    # The saved model scores exactly like a fresh save/load of the same weights.
    images = np.stack([stripes(np.random.default_rng(7)) for _ in range(3)])
    save_checkpoint(tmp_path / "again.pt", a.model, a.model_config, a.preprocess, a.train_config, {})
    again = load_checkpoint(tmp_path / "again.pt")
    assert np.array_equal(TorchBackend(a.model).infer(images).scores, TorchBackend(again.model).infer(images).scores)


def test_resume_continues_to_the_same_weights_as_one_run(dataset, tmp_path):
    model_config = ModelConfig.from_dict({**MODEL, "kind": "daad"})
    straight = train(dataset, tmp_path / "straight", model_config, TrainConfig(epochs=2, batch_size=4), PREPROCESS, progress=False)
    train(dataset, tmp_path / "resumed", model_config, TrainConfig(epochs=1, batch_size=4), PREPROCESS, progress=False)
    resumed = train(dataset, tmp_path / "resumed", model_config, TrainConfig(epochs=2, batch_size=4), PREPROCESS, resume=True, progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert_same_weights(straight.checkpoint, resumed.checkpoint)
    with pytest.raises(DaadError, match="larger --epochs"):
        train(dataset, tmp_path / "resumed", model_config, TrainConfig(epochs=2, batch_size=4), PREPROCESS, resume=True, progress=False)


def test_the_budget_counts_optimiser_steps_and_resume_extends_it(dataset, tmp_path):
    # 12 training images in batches of 4 are 3 steps an epoch: 7 steps buy 3 whole epochs.
    model_config = ModelConfig.from_dict({**MODEL, "kind": "ae"})
    budget = {"batch_size": 4, "validate_every": 0}
    straight = train(dataset, tmp_path / "straight", model_config, TrainConfig(steps=7, **budget), PREPROCESS, progress=False)
    assert [r["epoch"] for r in straight.history] == [1, 2, 3]
    train(dataset, tmp_path / "resumed", model_config, TrainConfig(steps=3, **budget), PREPROCESS, progress=False)
    resumed = train(dataset, tmp_path / "resumed", model_config, TrainConfig(steps=7, **budget), PREPROCESS, resume=True, progress=False)
    assert_same_weights(straight.checkpoint, resumed.checkpoint)
    with pytest.raises(DaadError, match="whole budget of 7 steps: pass a larger --epochs or --steps"):
        train(dataset, tmp_path / "resumed", model_config, TrainConfig(steps=7, **budget), PREPROCESS, resume=True, progress=False)
    # A small and a large set train about as many steps; a fixed epoch count overrides.
    assert TrainConfig(steps=1500).epochs_for(50) == 375 and TrainConfig(steps=1500).epochs_for(5000) == 5
    assert TrainConfig(steps=1500, epochs=20).epochs_for(5000) == 20 and TrainConfig(epochs=20).budget == "20 epochs"


def test_cosine_schedule_decays_both_rates_and_resumes_like_one_run(dataset, tmp_path):
    model_config = ModelConfig.from_dict({**MODEL, "kind": "daad+"})
    cosine = {"batch_size": 4, "lr": 4e-3, "discriminator_lr": 2e-4, "lr_schedule": "cosine"}
    straight = train(dataset, tmp_path / "straight", model_config, TrainConfig(epochs=2, **cosine), PREPROCESS, progress=False)
    state = load_checkpoint(straight.checkpoint).state
    # The last epoch (1 of 2) ran at (1 + cos(pi / 2)) / 2 = half of each rate.
    assert state["optimiser"]["param_groups"][0]["lr"] == pytest.approx(2e-3)
    assert state["disc_optimiser"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    train(dataset, tmp_path / "resumed", model_config, TrainConfig(epochs=1, **cosine), PREPROCESS, progress=False)
    resumed = train(dataset, tmp_path / "resumed", model_config, TrainConfig(epochs=2, **cosine), PREPROCESS, resume=True, progress=False)
    assert_same_weights(straight.checkpoint, resumed.checkpoint)
    with pytest.raises(ConfigError, match="lr_schedule must be one of constant, cosine"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ConfigError, match="device must be cpu or cuda"):
        TrainConfig(device="tpu")


def test_truncated_or_foreign_checkpoints_give_a_clear_error(dataset, tmp_path):
    model = build_model(ModelConfig.from_dict({**MODEL, "kind": "ae"}), PREPROCESS)
    good = save_checkpoint(tmp_path / "good.pt", model, model.config, PREPROCESS, TrainConfig(), {})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": model.state_dict()}, foreign)
    hostile = tmp_path / "hostile.pt"
    hostile.write_bytes(pickle.dumps(ConfigError("runs code on load"), protocol=2))
    for path, message in [
        (truncated, "not a readable daad checkpoint"),
        (text, "not a readable daad checkpoint"),
        (hostile, "not a readable daad checkpoint"),
        (foreign, "not a daad checkpoint"),
        (tmp_path / "missing.pt", "does not exist"),
    ]:
        with pytest.raises(CheckpointError, match=message) as caught:
            load_checkpoint(path)
        assert str(path) in str(caught.value)


def test_train_and_eval_command_lines(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli.main(["--data", str(dataset), "--model", "daad+", "--out", str(run), "--image-size", "32",
                           "--config", str(config_file(tmp_path)), "--epochs", "1", "--quiet"]) == 0
    assert "trained daad+ for 1 epoch(s)" in capsys.readouterr().out
    metrics_path = tmp_path / "metrics.json"
    assert eval_cli.main(["--checkpoint", str(run / "checkpoint.pt"), "--data", str(dataset), "--json", str(metrics_path)]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads(metrics_path.read_text())
    assert {"image_auroc", "pixel_auroc", "aupro", "f1_max", "per_defect"} <= set(metrics)
    assert set(metrics["per_defect"]) == {"spot"} and "image_auroc" in printed
    grid = cv2.imread(str(run / "eval_grid.png"))
    assert grid is not None and grid.shape[0] > grid.shape[1]  # 6 rows of 4 panels

    # The same model as a bundle, scored through ONNX Runtime, gives the same metrics.
    from export.export_cli import main as export_main

    bundle = tmp_path / "bundle"
    assert export_main(["--checkpoint", str(run / "checkpoint.pt"), "--out", str(bundle)]) == 0
    bundle_metrics_path = tmp_path / "bundle_metrics.json"
    assert eval_cli.main(["--bundle", str(bundle), "--backend", "onnxruntime", "--data", str(dataset),
                          "--json", str(bundle_metrics_path)]) == 0
    assert "onnxruntime fp32" in capsys.readouterr().out
    bundle_metrics = json.loads(bundle_metrics_path.read_text())
    assert bundle_metrics["image_auroc"] == pytest.approx(metrics["image_auroc"], abs=1e-6)
    assert bundle_metrics["pixel_auroc"] == pytest.approx(metrics["pixel_auroc"], abs=1e-4)
    assert cv2.imread(str(bundle / "eval_grid.png")) is not None


def test_an_unwritable_or_colliding_out_stops_before_training(dataset, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    for out, message in ((tmp_path / "a-file" / "run", "a part of that path is a file, not a folder"),
                         (dataset / "run", "lies inside --data")):
        assert daad(["train", "--data", str(dataset), "--out", str(out), "--image-size", "32", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (dataset / "run").exists()


def test_a_spot_on_stripes_scores_higher_after_training(dataset, tmp_path):
    config = ModelConfig.from_dict({**MODEL, "kind": "ae"})
    result = train(dataset, tmp_path / "run", config, TrainConfig(epochs=8, batch_size=4, lr=5e-3), PREPROCESS, progress=False)
    assert result.final_auroc is not None and result.final_auroc >= 0.9
    reconstruct_fn = PIXEL.reconstructor(load_checkpoint(result.checkpoint).model)
    assert reconstruct_fn(np.zeros((2, SIZE, SIZE, 3), np.uint8)).shape == (2, SIZE, SIZE, 3)


def test_config_files_and_unknown_keys(tmp_path):
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text("model:\n  gamma: 0.25\n  memories:\n" + "".join(
        f"    - {{block_h: {b}, block_w: {b}, slots: 7}}\n" for b in (4, 4, 2, 1)
    ) + "train:\n  epochs: 3\n")
    sections = read_config_file(yaml_path)
    config = ModelConfig.from_dict(sections["model"])
    assert config.gamma == 0.25 and config.memories[3] == MemoryConfig(block_h=1, block_w=1, slots=7)
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert TrainConfig.from_dict(sections["train"]).epochs == 3
    with pytest.raises(ConfigError, match="unknown ModelConfig keys: gama"):
        ModelConfig.from_dict({"gama": 0.5})
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match="broken.json is not valid"):
        read_config_file(broken)
