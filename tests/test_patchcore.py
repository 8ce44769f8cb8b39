"""patchcore end to end on a small real product: fit, checkpoint, score, export, the seam."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
import pytest
import torch

from export.bundle_export import ParityImages, export_bundle
from export.onnx_stats import locate_memory_banks
from runtime.backends import open_backend
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.bundle import open_bundle
from runtime.dataset import find_samples, load_images
from runtime.errors import DaadError
from train.checkpoint import load_checkpoint
from train.config import ConfigError, TrainConfig
from train.families import DEFAULT_KIND, KINDS, family_for
from train.synth import SynthConfig, write_product


@pytest.fixture(scope="module")
def product(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_product(root, "cap", SynthConfig(image_size=128, train=12, test_good=4, test_defect=2))
    return root / "cap"


@pytest.fixture(scope="module")
def fitted(product, tmp_path_factory):
    family = family_for("patchcore")
    config = family.config_from_dict({"kind": "patchcore", "memory_size": 300})
    preprocess = family.preprocess(128, 128, 1)
    out = tmp_path_factory.mktemp("run")
    result = family.fit(product, out, config, TrainConfig(seed=0), preprocess, resume=False, progress=False)
    return result, preprocess


def test_patchcore_is_the_default_kind_and_every_kind_has_a_family():
    assert DEFAULT_KIND == "patchcore"
    for kind in KINDS:
        assert family_for(kind).config_from_dict({"kind": kind}).kind == kind
    with pytest.raises(ConfigError, match="must be one of"):
        family_for("resnet")


def test_fit_keeps_a_coreset_and_the_checkpoint_brings_it_back(fitted):
    result, _ = fitted
    record = result.history[0]
    assert record["memory"] == 300 and record["patches"] == 12 * 16 * 16 and record["images"] == 12
    assert "fitted patchcore: 300 of 3,072 patches" in result.summary
    loaded = load_checkpoint(result.checkpoint)
    assert loaded.model_config.kind == "patchcore"
    assert loaded.model.memory.shape == (300, 152)
    assert torch.isfinite(loaded.model.memory).all()


def test_same_seed_same_memory(product, fitted, tmp_path):
    result, preprocess = fitted
    family = family_for("patchcore")
    config = family.config_from_dict({"kind": "patchcore", "memory_size": 300})
    again = family.fit(product, tmp_path, config, TrainConfig(seed=0), preprocess, resume=False, progress=False)
    assert torch.equal(load_checkpoint(again.checkpoint).model.memory, load_checkpoint(result.checkpoint).model.memory)


def test_a_training_image_scores_lower_than_the_same_image_with_a_defect(product, fitted):
    result, preprocess = fitted
    model = load_checkpoint(result.checkpoint).model
    good = load_images(find_samples(product, "train")[:1], preprocess).images
    damaged = good.copy()
    damaged[0, 30:50, 80:86] = 255  # a bright bar on the part
    with torch.no_grad():
        scores, maps = model.score(torch.from_numpy(np.concatenate([good, damaged])))
    assert maps.shape == (2, 1, 128, 128)
    assert scores[1] > scores[0] + 1.0
    rise = (maps[1, 0] - maps[0, 0]).numpy()
    peak = np.unravel_index(int(rise.argmax()), rise.shape)
    # where the bar is, give or take half a patch (features of stride 8 sit 3.5 px off the
    # centres bilinear upsampling assumes)
    assert 30 - 8 <= peak[0] <= 50 + 8 and 80 - 8 <= peak[1] <= 86 + 8


def test_resume_is_refused_with_a_message(product, fitted, tmp_path):
    result, preprocess = fitted
    family = family_for("patchcore")
    with pytest.raises(DaadError, match="nothing to resume"):
        family.fit(product, tmp_path, load_checkpoint(result.checkpoint).model_config, TrainConfig(), preprocess,
                   resume=True, progress=False)  # fmt: skip


def test_sizes_the_backbone_cannot_take_are_refused():
    family = family_for("patchcore")
    config = family.config_from_dict({"kind": "patchcore"})
    with pytest.raises(ConfigError, match="multiple of 16"):
        family.build(config, family.preprocess(72, 64, 3))
    with pytest.raises(ConfigError, match="levels must be some of"):
        family.config_from_dict({"kind": "patchcore", "features": {"levels": ["s5"]}})
    with pytest.raises(ConfigError, match="unexpected keyword"):
        family.config_from_dict({"kind": "patchcore", "memory_slots": 3})


def test_export_freezes_the_memory_as_an_initializer_and_matches_pytorch(product, fitted, tmp_path):
    result, preprocess = fitted
    loaded = load_checkpoint(result.checkpoint)
    test = load_images(find_samples(product, "test"), preprocess)
    labels = np.array([sample.label for sample in test.samples])
    exported = export_bundle(loaded.model, preprocess, tmp_path / "bundle", "patchcore",
                             loaded.model_config.to_dict(), parity_images=ParityImages(test.images, labels, "test"))  # fmt: skip
    assert exported.parity.passed
    proto = onnx.load(str(tmp_path / "bundle" / "model.onnx"))
    banks = exported.metadata.model_stats["memory_banks"]
    assert banks["patches"]["slots"] == 300 and banks["patches"]["dim"] == 152
    # The bank is the fitted rows themselves, not something computed from them at run time.
    assert locate_memory_banks(proto, {"patches": loaded.model.memory.numpy()}) == banks
    ops = {node.op_type for node in proto.graph.node}
    assert {"MatMul", "ReduceMin", "Sqrt"} <= ops
    assert "Pad" not in ops  # symmetric padding is each Conv's own attribute
    # The graph reads that initializer (|m|^2 is a second constant folded from it at export, so a
    # hand-edited bank no longer matches it: the scores move).
    before = _ort_scores(proto, test.images[:2])
    bank = next(init for init in proto.graph.initializer if init.name == banks["patches"]["initializer"])
    bank.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(bank)), bank.name))
    assert (np.abs(_ort_scores(proto, test.images[:2]) - before) > 5.0).all()
    metadata = json.loads((tmp_path / "bundle" / "model.json").read_text())
    assert "nearest neighbour among 300 good patches" in metadata["score_definition"]
    with open_backend(open_bundle(tmp_path / "bundle"), "onnxruntime") as backend:  # exported, not taught: no parts
        assert isinstance(backend, OnnxRuntimeBackend) and backend.choice.graphs == "model.onnx"
    assert metadata["preprocess"]["mean"] == [pytest.approx(127 / 255)]


def test_daad_train_fits_patchcore_by_default_and_says_what_it_kept(product, tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "train", "train", "--data", str(product), "--out", str(tmp_path / "run"),
         "--image-size", "128", "--quiet", "--config", str(_config(tmp_path))],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert "fitted patchcore: 200 of" in completed.stdout
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt").model_config.kind == "patchcore"


def test_tensorflow_padding_exports_with_constant_pad_amounts(tmp_path):
    """padding "same": a ZeroPad2d before each stride-2 conv, its amounts folded into constants."""
    from export.onnx_export import export_onnx
    from export.onnx_stats import flops_per_image

    family = family_for("patchcore")
    config = family.config_from_dict({"kind": "patchcore", "memory_size": 10, "features": {"padding": "same"}})
    model = family.build(config, family.preprocess(64, 96, 3))
    proto = export_onnx(model, model.preprocess)
    constants = {init.name for init in proto.graph.initializer}
    pads = [node for node in proto.graph.node if node.op_type == "Pad"]
    assert len(pads) == 4 and all(node.input[1] in constants for node in pads)  # stem and 3 stride-2 stages
    assert flops_per_image(proto) > 0  # every shape static
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = model.score(torch.from_numpy(frames))[0].numpy()
    assert np.allclose(_ort_scores(proto, frames), expected, atol=1e-4)


def _ort_scores(proto: onnx.ModelProto, frames: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["score"], {session.get_inputs()[0].name: frames})[0]


def _config(folder: Path) -> Path:
    path = folder / "small.json"
    path.write_text(json.dumps({"model": {"memory_size": 200}}))
    return path
