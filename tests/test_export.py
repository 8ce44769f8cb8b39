"""daad export: real tiny models of every kind, exported, checked and run in ONNX Runtime."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch.nn import functional as F

from export.bundle_export import ParityImages, export_bundle
from export.export_cli import export_checkpoint
from export.onnx_export import export_onnx
from export.parity import SCORE_TOLERANCE, measure_parity, score_spread, synthetic_frames
from export.trt_support import check_tensorrt_support
from runtime.backends import open_backend
from runtime.backends.base import InferenceResult
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.bundle import file_sha256, open_bundle
from runtime.dataset import find_samples, load_images
from runtime.errors import BundleError, DaadError, OutputError
from runtime.preprocess import PreprocessConfig
from train.checkpoint import load_checkpoint
from train.config import TrainConfig
from train.pixel.config import MemoryConfig, ModelConfig
from train.pixel.model import build_model
from train.synth import SynthConfig, write_product
from train.torch_backend import TorchBackend
from train.pixel.trainer import train

KINDS = ("ae", "memae", "daad", "daad+")
BANKS = {"ae": 0, "memae": 1, "daad": 4, "daad+": 4}
PREPROCESS = PreprocessConfig(height=32, width=32, channels=3)


def tiny_config(kind: str) -> ModelConfig:
    memory = MemoryConfig(block_h=2, block_w=2, slots=8)
    return ModelConfig(
        kind=kind,
        widths=(4, 8, 8, 8),
        memories=(memory,) * 4,
        memae_memory=MemoryConfig(block_h=1, block_w=1, slots=8, temperature=1.0, shrink_threshold=0.0025),
        discriminator_widths=(4, 4, 4, 4),
        map_sigma=1.0,
    )


def trained_one_step(kind: str, preprocess: PreprocessConfig = PREPROCESS) -> torch.nn.Module:
    """A tiny model after one optimiser step, so banks and batch-norm statistics are not the initial ones."""
    torch.manual_seed(0)
    model = build_model(tiny_config(kind), preprocess)
    frames = torch.from_numpy(synthetic_frames(*preprocess.shape, count=4, seed=1))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    output = model.train()(frames)
    F.mse_loss(output.reconstruction, output.normalised).backward()
    optimiser.step()
    model.eval().fit_score_stats([frames])
    return model


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=KINDS)
def exported(request, tmp_path_factory):
    kind = request.param
    model = trained_one_step(kind)
    root = tmp_path_factory.mktemp(kind.replace("+", "plus")) / "bundle"
    result = export_bundle(model, PREPROCESS, root, kind, tiny_config(kind).to_dict(), training={"data": {"root": "x"}})
    return kind, model, result


def test_memory_banks_are_initializers_holding_the_trained_values(exported) -> None:
    kind, model, result = exported
    proto = onnx.load(str(result.root / "model.onnx"))
    initializers = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    graph_inputs = [value.name for value in proto.graph.input]
    located = result.metadata.model_stats["memory_banks"]
    assert len(located) == BANKS[kind] == len(model.memory_banks())
    for name, bank in model.memory_banks().items():
        stored = initializers[located[name]["initializer"]]
        np.testing.assert_array_equal(stored, bank.detach().numpy())  # raw rows, as trained
        assert located[name]["initializer"] not in graph_inputs
    assert graph_inputs == ["frames"]


def test_parity_report_passes_and_is_stored(exported) -> None:
    _, _, result = exported
    stored = json.loads((result.root / "model.json").read_text())["parity"]
    assert stored["passed"] and stored["images"] == 16
    assert stored["max_spread_score_error"] <= SCORE_TOLERANCE
    assert stored["reference"] == "torch" and stored["candidate"] == "onnxruntime"


def test_dynamic_batch_of_1_and_4_matches_pytorch(exported) -> None:
    _, model, result = exported
    frames = synthetic_frames(32, 32, 3, count=4, seed=7)
    with OnnxRuntimeBackend(open_bundle(result.root)) as onnx_backend, TorchBackend(model) as torch_backend:
        expected = torch_backend.infer(frames)
        four = onnx_backend.infer(frames)
        ones = [onnx_backend.infer(frames[i : i + 1]) for i in range(4)]
    assert four.scores.shape == (4,) and four.anomaly_maps.shape == (4, 1, 32, 32)
    np.testing.assert_allclose(four.scores, expected.scores, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.concatenate([r.scores for r in ones]), expected.scores, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(four.anomaly_maps, expected.anomaly_maps, rtol=1e-4, atol=1e-5)


def test_opset_written_is_17_and_graph_is_tensorrt_ready(exported) -> None:
    _, _, result = exported
    proto = onnx.load(str(result.root / "model.onnx"))
    assert [(entry.domain, entry.version) for entry in proto.opset_import] == [("", 17)]
    assert result.metadata.opset == 17
    assert check_tensorrt_support(proto) == []


def test_model_json_describes_the_graph(exported) -> None:
    kind, model, result = exported
    data = json.loads((result.root / "model.json").read_text())
    assert data["onnx_sha256"] == file_sha256(result.root / "model.onnx")
    assert (data["input_name"], data["input_shape"], data["input_dtype"]) == ("frames", ["batch", 32, 32, 3], "uint8")
    assert (data["channel_order"], data["output_names"]) == ("BGR", ["score", "anomaly_map"])
    assert data["model_kind"] == kind and data["model_config"]["kind"] == kind
    assert data["exporter"]["torch"] == torch.__version__ and data["exporter"]["onnx"] == onnx.__version__
    assert data["model_stats"]["parameters"] == sum(p.numel() for p in model.parameters())
    assert data["model_stats"]["flops_per_image"] > 0
    assert data["training"] == {"data": {"root": "x"}}
    assert ("discriminator features" in data["score_definition"]) == (kind == "daad+")
    with open_backend(open_bundle(result.root), "onnxruntime") as backend:  # the exported graph's scores, as the line gets them
        assert isinstance(backend, OnnxRuntimeBackend) and backend.choice.graphs == "model.onnx"  # no parts to split
        scores = backend.infer(synthetic_frames(32, 32, 3)).scores
    stats = data["score_stats"]  # what a threshold must be plausible against (runtime/threshold.py)
    assert stats["images"] == 16 and stats["min"] <= stats["median"] <= stats["max"]
    assert stats["min"] == pytest.approx(float(scores.min()), rel=1e-5)


def test_truncated_model_onnx_is_refused(exported, tmp_path) -> None:
    _, _, result = exported
    copy = tmp_path / "bundle"
    copy.mkdir()
    for name in ("model.onnx", "model.json"):
        (copy / name).write_bytes((result.root / name).read_bytes())
    onnx_path = copy / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes()[: onnx_path.stat().st_size // 2])
    with pytest.raises(BundleError, match="model.onnx does not match.*truncated.*daad export"):
        open_bundle(copy)


def test_flops_count_matches_hand_count_for_one_conv(tmp_path) -> None:
    from export.onnx_stats import flops_per_image

    class OneConv(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 5, 3, padding=1)

        def score(self, frames):
            anomaly_map = self.conv(frames.float().permute(0, 3, 1, 2)).mean(dim=1, keepdim=True)
            return anomaly_map.amax(dim=(1, 2, 3)), anomaly_map

    proto = export_onnx(OneConv(), PreprocessConfig(height=16, width=16, channels=3))
    assert flops_per_image(proto) == 2 * (5 * 16 * 16) * (3 * 3 * 3)


def test_fixed_batch_export_runs_at_that_batch(tmp_path) -> None:
    model = trained_one_step("daad")
    result = export_bundle(model, PREPROCESS, tmp_path / "b", "daad", tiny_config("daad").to_dict(), batch=2)
    assert result.metadata.input_shape == [2, 32, 32, 3] and result.parity.passed
    dynamic = export_bundle(model, PREPROCESS, tmp_path / "d", "daad", tiny_config("daad").to_dict())
    assert result.metadata.model_stats["flops_per_image"] == dynamic.metadata.model_stats["flops_per_image"]
    with OnnxRuntimeBackend(open_bundle(tmp_path / "b")) as backend:
        assert backend.infer(synthetic_frames(32, 32, 3, count=2)).scores.shape == (2,)


class _Shifted:
    """A real backend whose scores are off by `error` times the reference score spread: what parity must catch."""

    def __init__(self, inner: TorchBackend, error: float, spread: float) -> None:
        self.inner, self.offset, self.name, self.precision = inner, error * spread, "shifted", "fp32"

    def infer(self, frames: np.ndarray) -> InferenceResult:
        result = self.inner.infer(frames)
        return InferenceResult(result.scores + self.offset, result.anomaly_maps, result.timings)


def test_parity_fails_on_a_score_error_above_tolerance_of_the_spread() -> None:
    model = trained_one_step("ae")
    frames = synthetic_frames(32, 32, 3, count=8)
    labels = np.array([1, 0] * 4)
    reference = TorchBackend(model)
    spread = score_spread(reference.infer(frames).scores.astype(np.float64))
    close = measure_parity(reference, _Shifted(reference, SCORE_TOLERANCE / 10, spread), frames, labels)
    far = measure_parity(reference, _Shifted(reference, SCORE_TOLERANCE * 10, spread), frames, labels)
    assert close.passed and close.auroc_identical
    assert not far.passed and far.max_spread_score_error == pytest.approx(SCORE_TOLERANCE * 10, rel=1e-3)
    assert "FAIL" in far.summary()


def test_the_spread_is_the_interquartile_range_or_a_fallback() -> None:
    assert score_spread(np.array([0.0, 1.0, 2.0, 3.0, 4.0])) == 2.0
    assert score_spread(np.array([5.0] * 9 + [6.0])) == pytest.approx(0.3)  # IQR 0: the std
    assert score_spread(np.full(4, 7.0)) == 1.0  # all equal: absolute error


def test_a_sound_model_whose_score_sits_at_zero_is_exported(tmp_path) -> None:
    """daad+ (default network) trained one epoch at 64 px: its standardised scores sit around
    zero. Put one part's PyTorch score exactly at zero where ONNX Runtime differs by float
    noise: an infinite relative error, a negligible one against the spread of the scores, which
    is what a decision at a threshold sees."""
    data = write_product(tmp_path / "data", "pcb", SynthConfig(image_size=64, train=8, test_good=4, test_defect=2))
    run = train(data, tmp_path / "run", ModelConfig(kind="daad+"), TrainConfig(epochs=1, batch_size=4, validate_every=0),
                PreprocessConfig(height=64, width=64, channels=3), progress=False)
    first = export_checkpoint(run.checkpoint, tmp_path / "first")
    model = load_checkpoint(run.checkpoint).model
    frames = load_images(find_samples(data, "test"), model.preprocess).images
    with OnnxRuntimeBackend(open_bundle(first.root)) as backend, torch.no_grad():
        noise = np.abs(backend.infer(frames).scores - model.score(torch.from_numpy(frames))[0].numpy())
        part = int(noise.argmax())
        model.score_stats[0] = model.score_terms(torch.from_numpy(frames[part : part + 1]))[0][0]
        assert model.score(torch.from_numpy(frames[part : part + 1]))[0].item() == 0.0 < noise[part]
    result = export_bundle(model, model.preprocess, tmp_path / "bundle", "daad+", model.config.to_dict(),
                           parity_images=ParityImages(frames, None, "test split, one score at zero"))
    assert result.parity.passed and result.parity.max_abs_score_error > 0.0
    largest = float(model.score(torch.from_numpy(frames))[0].detach().abs().max())
    assert noise[part] / (1e-3 * largest) > 1e-4  # the old rule (relative, floored at 1e-3 of the largest) refused it
    assert result.parity.max_spread_score_error < SCORE_TOLERANCE / 100


def test_export_refuses_fold_and_writes_nothing(tmp_path) -> None:
    class Folding(torch.nn.Module):
        def score(self, frames):
            x = frames.float().permute(0, 3, 1, 2)
            rebuilt = F.fold(F.unfold(x, 4, stride=4), (32, 32), 4, stride=4)
            anomaly_map = (rebuilt - x).abs().mean(dim=1, keepdim=True)
            return anomaly_map.amax(dim=(1, 2, 3)), anomaly_map

        def memory_banks(self):
            return {}

    with pytest.raises(DaadError, match="opset 17"):
        export_bundle(Folding(), PREPROCESS, tmp_path / "b17", "test", {})
    with pytest.raises(DaadError, match="Col2Im"):
        export_bundle(Folding(), PREPROCESS, tmp_path / "b18", "test", {}, opset=18)
    assert not (tmp_path / "b18").exists() or not any((tmp_path / "b18").iterdir())


def write_tiny_mvtec(root, size: int = 32) -> None:
    """Grey textured parts; defects carry a dark square. Written and read back through OpenCV."""
    import cv2

    frames = synthetic_frames(size, size, 1, count=14, seed=3)
    frames[::2] = synthetic_frames(size, size, 1, count=7, seed=4)  # no blobs in the good ones
    for folder, indices in (("train/good", range(0, 6)), ("test/good", range(6, 10)), ("test/scratch", range(10, 14))):
        (root / folder).mkdir(parents=True)
        for index in indices:
            frame = frames[index].copy()
            if folder == "test/scratch":
                frame[8:20, 8:20] = 0
            cv2.imwrite(str(root / folder / f"{index:03d}.png"), frame)


def test_export_cli_end_to_end_with_eval_set(tmp_path, capsys) -> None:
    from export.export_cli import main
    from runtime.dataset import summarize
    from train.checkpoint import save_checkpoint
    from train.config import TrainConfig

    data = tmp_path / "product"
    write_tiny_mvtec(data)
    preprocess = PreprocessConfig(height=32, width=32, channels=1, mean=(0.5,), std=(0.25,))
    model = trained_one_step("daad+", preprocess)
    checkpoint = save_checkpoint(
        tmp_path / "run" / "checkpoint.pt", model, tiny_config("daad+"), preprocess, TrainConfig(epochs=1),
        extra={"meta": {"data": summarize(data)}},
    )  # fmt: skip
    orphan = tmp_path / "bundle" / ".model.onnx.k1ll3d_x.daad.tmp"  # a killed export's half-written model
    orphan.parent.mkdir()
    orphan.write_bytes(b"half")
    staging = tmp_path / ".export-k1ll3d_x"  # a killed export's staging folder, beside the bundle
    staging.mkdir()
    (staging / "model.onnx").write_bytes(b"staged")
    for stale in (orphan, staging / "model.onnx", staging):
        os.utime(stale, (time.time() - 3600, time.time() - 3600))
    assert main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "bundle")]) == 0
    captured = capsys.readouterr()
    assert not orphan.exists() and ".model.onnx.k1ll3d_x.daad.tmp" in captured.err
    assert not staging.exists() and "1 staging folder(s)" in captured.err and ".export-k1ll3d_x" in captured.err
    printed = captured.out
    assert "PASS" in printed and "image AUROC" in printed and "identical" in printed
    bundle = open_bundle(tmp_path / "bundle")
    assert bundle.metadata.channel_order == "GRAY" and bundle.metadata.input_shape == ["batch", 32, 32, 1]
    parity = bundle.metadata.parity
    assert parity["images"] == 8 and parity["auroc_identical"] is True
    assert parity["source"].endswith("test split")
    assert bundle.metadata.training["data"]["root"] == str(data)
    assert bundle.metadata.training["train_config"]["epochs"] == 1


def test_only_stale_staging_folders_of_export_are_removed(tmp_path) -> None:
    from export.bundle_export import remove_stale_staging

    def folder(name: str, files: dict[str, bytes], age_s: float) -> Path:
        path = tmp_path / name
        path.mkdir()
        for file, data in files.items():
            (path / file).write_bytes(data)
        for entry in [*path.iterdir(), path]:
            os.utime(entry, (time.time() - age_s, time.time() - age_s))
        return path

    stale = folder(".export-abcd_123", {"model.onnx": b"x", ".model.onnx.qwertyui.daad.tmp": b"y"}, 3600)
    empty = folder(".export-zzzzzzzz", {}, 3600)
    in_flight = folder(".export-fresh123", {"model.onnx": b"x"}, 60)
    users = [folder(".export-mine1234", {"notes.txt": b"mine"}, 3600),  # not what export stages
             folder(".export-old", {"model.onnx": b"x"}, 3600),  # not export's name pattern
             folder("export-abcd1234", {"model.onnx": b"x"}, 3600)]
    (tmp_path / ".export-linked12").symlink_to(users[0])
    assert remove_stale_staging(tmp_path) == [stale, empty]
    assert in_flight.is_dir() and all(path.is_dir() for path in users) and (users[0] / "notes.txt").exists()
    assert (tmp_path / ".export-linked12").is_symlink()


def test_export_cli_rejects_bad_arguments(tmp_path) -> None:
    from export.export_cli import main

    with pytest.raises(DaadError, match="does not exist"):
        main(["--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "b")])
    with pytest.raises(SystemExit):
        main(["--checkpoint", "x.pt", "--out", "b", "--batch", "0"])
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"checked after the paths")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(OutputError, match="cannot write .*a-file/bundle: .*not a folder"):
        main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "a-file" / "bundle")])
    with pytest.raises(DaadError, match="--out .* lies inside --checkpoint|same file as --checkpoint"):
        main(["--checkpoint", str(checkpoint), "--out", str(checkpoint)])


def test_an_exporter_that_writes_another_opset_fails_loudly(monkeypatch) -> None:
    """What torch's dynamo exporter does when asked for 17: writes 18. The check reads the file."""
    import export.onnx_export as onnx_export
    from tiny_bundle import tiny_model

    def writes_opset_18(graph, example, buffer, opset, output_names, dynamic_axes) -> None:
        proto = tiny_model(32, 32, 3)
        proto.opset_import[0].version = 18
        buffer.write(proto.SerializeToString())

    monkeypatch.setattr(onnx_export, "_trace", writes_opset_18)
    with pytest.raises(DaadError, match="asked for ONNX opset 17, but the exporter wrote opset 18"):
        export_onnx(trained_one_step("ae"), PREPROCESS, opset=17)
