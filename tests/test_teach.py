"""`daad teach` end to end on a small real product: real images written with OpenCV, the real
backbone part in ONNX Runtime, a bundle the rest of the product opens, scores and calibrates as
any other, and PyTorch's patchcore on the same memory as the reference."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from export.trt_support import check_tensorrt_support
from patchmemory.coreset import coreset_rows
from patchmemory.head import MEMORY_INITIALIZER
from runtime.backends import open_backend
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.backends.split_backend import SplitOnnxRuntimeBackend
from runtime.bundle import file_sha256, open_bundle
from runtime.cli import main as daad
from runtime.dataset import find_samples, load_images
from runtime.errors import BundleError
from runtime.threshold import check_binding, history_entries, read_threshold
from teach.parts import holdout_mask
from teach.product import check_assembly
from train.features.patchcore import PatchCoreConfig, PatchCoreModel
from train.synth import SynthConfig, write_product

ROOT = Path(__file__).resolve().parents[1]
PARTS = 25  # 10 held out at --holdout 0.4: the least a threshold takes
HOLDOUT = "0.4"
MEMORY = 150


@pytest.fixture(scope="module")
def product(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    return write_product(root, "pcb", SynthConfig(image_size=64, train=PARTS, test_good=4, test_defect=2))


def teach(capsys, backbone_part: Path, good: Path, out: Path, *more: object) -> tuple[int, str, str]:
    args = ["--backbone", backbone_part, "--good", good, "--out", out, "--holdout", HOLDOUT,
            "--memory-size", MEMORY, "--no-progress", *more]  # fmt: skip
    code = daad(["teach", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def memory_of(bundle: Path) -> np.ndarray:
    model = onnx.load(str(bundle / "head.onnx"))
    stored = next(init for init in model.graph.initializer if init.name == MEMORY_INITIALIZER)
    return numpy_helper.to_array(stored).T


@pytest.fixture(scope="module")
def taught(product, backbone_part, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "pcb"
    code = daad(["teach", "--backbone", str(backbone_part), "--good", str(product), "--out", str(out),
                 "--holdout", HOLDOUT, "--memory-size", str(MEMORY), "--no-progress", "--name", "pcb, line 3"])  # fmt: skip
    assert code == 0
    return out


def test_teach_writes_an_ordinary_calibrated_bundle(taught, backbone_part) -> None:
    bundle = open_bundle(taught)  # sha256 of model.onnx verified
    metadata = bundle.metadata
    assert metadata.model_kind == "patchcore" and metadata.model_config["memory_size"] == MEMORY
    assert metadata.training["taught_by"] == "daad teach" and metadata.training["product"] == "pcb, line 3"
    assert len(metadata.training["calibration_parts"]) == 10 and len(metadata.training["memory_parts"]) == 15
    assert metadata.model_stats["memory_banks"]["patches"]["slots"] == MEMORY
    assert check_tensorrt_support(bundle.onnx_path) == []
    for role, part in metadata.parts.items():
        assert file_sha256(taught / part["file"]) == part["sha256"], role
    assert (taught / "backbone.onnx").read_bytes() == (backbone_part / "backbone.onnx").read_bytes()
    record = read_threshold(bundle)
    check_binding(record, bundle, "onnxruntime", "fp32")
    assert record.counts["good"] == 10 and "held-out" in record.counts["good_source"]
    assert len(history_entries(bundle)) == 1 and (taught / "calibration.png").stat().st_size > 0
    low, high = metadata.score_stats["min"], metadata.score_stats["max"]
    assert low <= record.score_stats["good"]["median"] <= high  # the head alone and the bundle score alike


def test_the_bundle_scores_as_pytorch_patchcore_with_the_same_memory(taught, product) -> None:
    bundle = open_bundle(taught)
    test = load_images(find_samples(product, "test"), bundle.preprocess)
    with OnnxRuntimeBackend(bundle) as backend:
        result = backend.infer(test.images)
    config = PatchCoreConfig.from_dict(bundle.metadata.model_config)
    reference = PatchCoreModel(config, bundle.preprocess).eval()
    reference.set_memory(memory_of(taught))
    with torch.inference_mode():
        scores, maps = (value.numpy() for value in reference.score(torch.from_numpy(test.images)))
    assert np.abs(result.scores - scores).max() <= 1e-5 * np.abs(scores).max()
    assert np.abs(result.anomaly_maps - maps).max() <= 1e-4 * np.abs(maps).max()


def test_the_memory_is_the_coreset_of_the_kept_parts_and_the_same_seed_keeps_it(
    taught, product, backbone_part, tmp_path, capsys
) -> None:
    again = tmp_path / "again"
    assert teach(capsys, backbone_part, product, again)[0] == 0
    assert np.array_equal(memory_of(again), memory_of(taught))
    other = tmp_path / "other"
    assert teach(capsys, backbone_part, product, other, "--seed", "1")[0] == 0
    assert not np.array_equal(memory_of(other), memory_of(taught))
    # PyTorch's features of the same kept parts give the same coreset (daad train's memory).
    bundle = open_bundle(taught)
    images = load_images(find_samples(product, "train"), bundle.preprocess).images
    kept = images[~holdout_mask(len(images), float(HOLDOUT))]
    reference = PatchCoreModel(PatchCoreConfig.from_dict(bundle.metadata.model_config), bundle.preprocess).eval()
    with torch.inference_mode():
        features = reference.patch_features(torch.from_numpy(kept))
    rows = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).numpy()
    np.testing.assert_allclose(coreset_rows(rows, MEMORY, seed=0), memory_of(taught), atol=1e-4)


def test_teaching_again_keeps_the_threshold_history(taught, product, backbone_part, tmp_path, capsys) -> None:
    out = tmp_path / "retaught"
    assert teach(capsys, backbone_part, product, out)[0] == 0
    code, printed, _ = teach(capsys, backbone_part, product, out, "--memory-size", "100", "--note", "second shift")
    assert code == 0 and "threshold" in printed
    bundle = open_bundle(out)
    assert len(history_entries(bundle)) == 2
    assert read_threshold(bundle).note == "second shift" and bundle.metadata.model_config["memory_size"] == 100


def test_a_taught_bundle_is_a_backbone_part_for_the_next_product(taught, product, tmp_path, capsys) -> None:
    code, _, err = teach(capsys, taught, product, tmp_path / "next")
    assert code == 0, err
    assert open_bundle(tmp_path / "next").metadata.training["backbone_part"]["sha256"] == json.loads(
        (taught / "backbone.json").read_text())["onnx_sha256"]  # fmt: skip


@pytest.mark.parametrize(
    "case, message",
    [
        ("no backbone part", "backbone.json is missing"),
        ("too few parts", "teaching needs at least"),
        ("out is the good folder", "lies inside --good"),
        ("out is the backbone part", "is the same file as --backbone"),
        ("an exported bundle", "made by `daad export`"),
        ("camera without --parts", "pass --parts N"),
        ("bad holdout", "--holdout must be between 0 and 1"),
        ("a part whose json lies", "the part's files do not belong together"),
    ],
)
def test_bad_input_is_one_line_naming_the_fix_and_writes_nothing(
    case, message, product, backbone_part, tiny_bundle, tmp_path, capsys
) -> None:
    backbone, good, out, more = backbone_part, product, tmp_path / "out", []
    if case == "no backbone part":
        backbone = tmp_path / "not-a-part"
        backbone.mkdir()
    elif case == "too few parts":
        more = ["--parts", "20"]
    elif case == "out is the good folder":
        out = product / "train" / "good"
    elif case == "out is the backbone part":
        out = backbone_part
    elif case == "an exported bundle":
        out = tiny_bundle
    elif case == "camera without --parts":
        good = Path("0")
    elif case == "bad holdout":
        more = ["--holdout", "1.5"]
    elif case == "a part whose json lies":
        backbone = tmp_path / "edited-part"
        shutil.copytree(backbone_part, backbone)
        described = json.loads((backbone / "backbone.json").read_text())
        (backbone / "backbone.json").write_text(json.dumps({**described, "feature_dim": 99}))
    before = sorted(path.name for path in out.iterdir()) if out.is_dir() else None
    code, _, err = teach(capsys, backbone, good, out, *more)
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (sorted(path.name for path in out.iterdir()) if out.is_dir() else None) == before


def test_teach_runs_without_torch(taught, product, backbone_part, tmp_path) -> None:
    code = (  # as on a device where torch is not installed: every import of it fails
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ImportError('torch is not installed on this device')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "from runtime.cli import main\n"
        f"code = main(['teach', '--backbone', {str(backbone_part)!r}, '--good', {str(product)!r}, '--out', "
        f"{str(tmp_path / 'out')!r}, '--holdout', {HOLDOUT!r}, '--memory-size', '{MEMORY}', '--no-progress'])\n"
        "assert 'torch' not in sys.modules\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert np.array_equal(memory_of(tmp_path / "out"), memory_of(taught))


def test_the_line_runs_the_split_parts_and_they_score_as_the_fused_model(taught, product, tiny_bundle, tmp_path) -> None:
    bundle = open_bundle(taught)
    frames = load_images(find_samples(product, "test"), bundle.preprocess).images
    with OnnxRuntimeBackend(bundle) as fused, open_backend(bundle, "auto") as split:
        assert isinstance(split, SplitOnnxRuntimeBackend) and split.name == "onnxruntime"
        assert split.choice.graphs == "backbone.onnx + head.onnx"
        whole, parts = fused.infer(frames), split.infer(frames)
    assert np.abs(parts.scores - whole.scores).max() <= 1e-5 * np.abs(whole.scores).max()
    assert np.abs(parts.anomaly_maps - whole.anomaly_maps).max() <= 1e-5 * np.abs(whole.anomaly_maps).max()
    assert parts.timings["backbone"] > 0 and parts.timings["head"] > 0
    with pytest.raises(BundleError, match="lists no backbone and head parts"):
        SplitOnnxRuntimeBackend(open_bundle(tiny_bundle))
    changed = tmp_path / "changed"
    shutil.copytree(taught, changed)
    (changed / "head.onnx").write_bytes((changed / "head.onnx").read_bytes()[:-4])
    with pytest.raises(BundleError, match="head.onnx is missing or does not match"):
        SplitOnnxRuntimeBackend(open_bundle(changed))


def test_a_video_source_gives_its_next_parts_and_a_short_one_is_named(product, backbone_part, tmp_path, capsys) -> None:
    from runtime.optional import cv2
    from test_sources import write_video

    frames = [cv2().imread(str(sample.path)) for sample in find_samples(product, "train")]
    video = write_video(tmp_path / "line.avi", frames)
    code, _, err = teach(capsys, backbone_part, video, tmp_path / "out", "--parts", 40)
    assert code == 0, err
    assert f"gave {PARTS} parts, not the 40 asked for" in err
    record = read_threshold(open_bundle(tmp_path / "out"))
    assert record.counts["good"] == 10 and str(video) in record.counts["good_source"]


def test_a_fused_graph_that_does_not_score_as_its_head_gets_no_threshold(tmp_path) -> None:
    head = np.array([10.0, 12.0, 30.0], dtype=np.float32)
    assert check_assembly(head, head * (1 + 1e-6), tmp_path / "model.onnx") < 1e-5
    with pytest.raises(BundleError, match="model.onnx scores the held-out parts .* no threshold was written"):
        check_assembly(head, head + 0.5, tmp_path / "model.onnx")
