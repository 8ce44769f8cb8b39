"""TensorRT engines of taught products: the backbone part's engine is built once per device and
shared, each product builds only its fp32 memory head. Where the engines live and which are
loaded is checked everywhere (real taught bundles, engine files as `daad build` names them);
building and running them needs TensorRT (marked `tensorrt`, skipped without it)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
from test_engine_builder import GPU, TRT, _fake_engine

from runtime.backends import choose_backend
from runtime.backends import tensorrt_backend
from runtime.backends.engine_cache import (
    DEVICE_ENGINE_DIR_VARIABLE,
    HEAD_PRECISION,
    EngineSet,
    engine_path,
    engines_for,
    model_source,
    part_sources,
    stale_engines,
)
from runtime.bundle import open_bundle
from runtime.cli import main as daad
from train.synth import SynthConfig, write_product

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def products(backbone_part, tmp_path_factory) -> dict[str, Path]:
    """Two products taught from the same backbone part, as a line's --products folder holds them."""
    data = tmp_path_factory.mktemp("data")
    folder = tmp_path_factory.mktemp("products")
    for name in ("pcb", "cap"):
        good = write_product(data, name, SynthConfig(image_size=64, train=20, test_good=1, test_defect=1))
        args = ["teach", "--backbone", backbone_part, "--good", good, "--out", folder / name, "--holdout", "0.5",
                "--memory-size", "60", "--no-progress"]  # fmt: skip
        assert daad([str(arg) for arg in args]) == 0
    return {name: folder / name for name in ("pcb", "cap")}


@pytest.fixture
def device_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "device-engines"
    monkeypatch.setenv(DEVICE_ENGINE_DIR_VARIABLE, str(folder))
    return folder


def test_products_of_one_part_share_the_backbone_engine_and_keep_their_heads(products, device_dir) -> None:
    (pcb_backbone, pcb_head), (cap_backbone, cap_head) = (part_sources(open_bundle(p)) for p in products.values())
    same = engine_path(pcb_backbone, TRT, GPU, "fp16", 1)
    assert engine_path(cap_backbone, TRT, GPU, "fp16", 1) == same and same.parent == device_dir / "backbones"
    assert pcb_head.folder == products["pcb"] / "engines" and cap_head.folder == products["cap"] / "engines"
    assert pcb_head.sha256 != cap_head.sha256


def test_an_exported_bundle_has_no_parts(tiny_bundle) -> None:
    assert part_sources(open_bundle(tiny_bundle)) is None


def test_the_line_runs_backbone_and_head_when_both_are_built_else_the_whole_model(products, device_dir) -> None:
    bundle = open_bundle(products["pcb"])
    backbone, head = part_sources(bundle)
    find = lambda precision="fp16", batch=1: engines_for(bundle, precision, batch, TRT, GPU)  # noqa: E731
    assert find() is None
    whole = _fake_engine(model_source(bundle), "fp16", 1)
    assert find() == EngineSet(whole=whole)
    shared = _fake_engine(backbone, "fp16", 4)
    assert find() == EngineSet(whole=whole)  # a backbone without this product's head is not enough
    _fake_engine(head, "fp16", 4)
    assert find() == EngineSet(whole=whole)  # heads are fp32 whatever the backbone runs at
    own = _fake_engine(head, HEAD_PRECISION, 4)
    assert find() == EngineSet(backbone=shared, head=own) and find(batch=4).split
    assert find(batch=8) is None  # neither takes 8 frames
    assert find("fp32") is None  # no fp32 backbone: the head alone runs nothing


def test_a_second_product_needs_only_its_head(products, device_dir) -> None:
    pcb, cap = (open_bundle(path) for path in products.values())
    shared = _fake_engine(part_sources(pcb)[0], "fp16", 1)
    _fake_engine(part_sources(pcb)[1], HEAD_PRECISION, 1)
    assert engines_for(pcb, "fp16", 1, TRT, GPU).split
    assert engines_for(cap, "fp16", 1, TRT, GPU) is None
    cap_head = _fake_engine(part_sources(cap)[1], HEAD_PRECISION, 1)
    assert engines_for(cap, "fp16", 1, TRT, GPU) == EngineSet(backbone=shared, head=cap_head)


def test_head_engines_are_not_stale_and_earlier_ones_are(products, device_dir) -> None:
    bundle = open_bundle(products["cap"])
    head = _fake_engine(part_sources(bundle)[1], HEAD_PRECISION, 1)
    whole = _fake_engine(bundle, "fp32", 1)
    old = bundle.engines_dir / f"{'e' * 16}_trt{TRT}_x_fp32_b1.engine"
    old.write_bytes(b"old")
    assert stale_engines(bundle) == [old] and head.exists() and whole.exists()


def test_the_device_engine_folder_defaults_to_the_users_cache(monkeypatch, tmp_path) -> None:
    from runtime.backends.engine_cache import device_engine_dir

    monkeypatch.delenv(DEVICE_ENGINE_DIR_VARIABLE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert device_engine_dir() == tmp_path / "cache" / "daad-edge" / "engines"
    monkeypatch.setenv(DEVICE_ENGINE_DIR_VARIABLE, "~/engines")
    assert device_engine_dir() == Path(os.path.expanduser("~/engines"))


def test_auto_says_it_runs_the_shared_backbone_and_the_head(products, monkeypatch, tmp_path) -> None:
    engines = EngineSet(backbone=tmp_path / "b.engine", head=tmp_path / "h.engine")
    monkeypatch.setattr(tensorrt_backend, "import_tensorrt", lambda: (None, None))
    monkeypatch.setattr(tensorrt_backend, "locate_engines", lambda bundle, precision, batch: engines)
    choice = choose_backend(open_bundle(products["pcb"]), "fp16")
    assert choice.name == "tensorrt" and "shared backbone b.engine" in choice.reason and "h.engine" in choice.reason


def test_a_changed_head_is_refused_before_anything_is_built(products, device_dir, tmp_path, capsys) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(products["pcb"], copy)
    (copy / "head.onnx").write_bytes((products["cap"] / "head.onnx").read_bytes())
    assert daad(["build", "--bundle", str(copy)]) == 2
    err = capsys.readouterr().err
    assert f"{copy / 'head.onnx'}" in err and "does not match" in err


@pytest.mark.skipif(HAVE_TENSORRT, reason="checks the message shown where TensorRT is missing")
def test_building_the_backbone_without_tensorrt_names_the_extra(backbone_part, device_dir, capsys) -> None:
    assert daad(["build", "--backbone", str(backbone_part)]) == 2
    assert "daad-edge[tensorrt]" in capsys.readouterr().err
    assert not device_dir.exists()


def test_building_from_a_folder_that_is_no_part_says_how_to_make_one(tmp_path, device_dir, capsys) -> None:
    assert daad(["build", "--backbone", str(tmp_path)]) == 2
    assert "daad export --backbone" in capsys.readouterr().err


# --- TensorRT (skipped where TensorRT and pycuda are absent; not run in CI) ---


@pytest.mark.tensorrt
def test_the_backbone_is_built_once_and_each_product_builds_its_head(products, device_dir) -> None:
    from engines.engine_builder import build_bundle_engines

    first = build_bundle_engines(products["pcb"], "fp16")
    built = first.backbone.stat().st_mtime_ns
    second = build_bundle_engines(products["cap"], "fp16")
    assert second.backbone == first.backbone and first.backbone.stat().st_mtime_ns == built
    assert first.backbone.parent == device_dir / "backbones"
    assert second.head.parent == products["cap"] / "engines" and "_fp32_" in second.head.name


@pytest.mark.tensorrt
def test_backbone_and_head_score_as_the_whole_model_and_share_the_backbone(products, device_dir) -> None:
    from engines.engine_builder import build_bundle_engines
    from export.parity import synthetic_frames
    from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
    from runtime.backends.trt_engines import ENGINES

    pcb, cap = (open_bundle(path) for path in products.values())
    split = build_bundle_engines(pcb, "fp32", batch=2)
    build_bundle_engines(cap, "fp32", batch=2)
    whole = build_bundle_engines(pcb, "fp32", batch=2, whole=True)
    frames = synthetic_frames(*pcb.preprocess.shape, count=2, seed=3)
    with OnnxRuntimeBackend(pcb) as reference:
        expected = reference.infer(frames)
    with tensorrt_backend.TensorRTBackend(pcb, "fp32", 2, engines=whole) as fused:
        one = fused.infer(frames)
    with tensorrt_backend.TensorRTBackend(pcb, "fp32", 2) as first, tensorrt_backend.TensorRTBackend(cap, "fp32", 2) as second:
        assert first.engines == split and ENGINES.holders()[split.backbone.resolve()] == 2
        two = first.infer(frames)
        second.close()
        assert ENGINES.holders()[split.backbone.resolve()] == 1
        assert np.isfinite(first.infer(frames).scores).all()  # the other product's close left it running
        assert {"backbone", "head", "compute"} <= set(two.timings)
    assert split.backbone.resolve() not in ENGINES.holders()
    for result in (one, two):
        np.testing.assert_allclose(result.scores, expected.scores, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(result.anomaly_maps, expected.anomaly_maps, rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(HAVE_TENSORRT, reason="checks the message shown where TensorRT is missing")
def test_teaching_for_a_tensorrt_line_without_tensorrt_is_refused_before_any_work(backbone_part, tmp_path, capsys):
    out, good = tmp_path / "product", tmp_path / "good"
    good.mkdir()
    args = ["teach", "--backbone", str(backbone_part), "--good", str(good), "--out", str(out),
            "--backend", "tensorrt", "--precision", "fp16"]  # fmt: skip
    assert daad(args) == 2
    assert "daad-edge[tensorrt]" in capsys.readouterr().err and not out.exists()


@pytest.mark.tensorrt
def test_teaching_on_a_device_with_the_backbone_engine_builds_the_head_and_calibrates_on_tensorrt(
    backbone_part, device_dir, tmp_path
) -> None:
    from engines.engine_builder import build_backbone_engine
    from runtime.backends import choose_backend
    from runtime.threshold import check_binding, read_threshold

    good = write_product(tmp_path / "data", "pcb", SynthConfig(image_size=64, train=20, test_good=1, test_defect=1))
    out = tmp_path / "products" / "pcb"
    args = ["teach", "--backbone", backbone_part, "--good", good, "--out", out, "--holdout", "0.5",
            "--memory-size", "60", "--no-progress", "--precision", "fp16"]  # fmt: skip
    assert daad([str(arg) for arg in args]) == 2  # no backbone engine yet: auto cannot run fp16 on ONNX Runtime
    build_backbone_engine(backbone_part, "fp16")
    assert daad([str(arg) for arg in args]) == 0
    bundle = open_bundle(out)
    check_binding(read_threshold(bundle), bundle, "tensorrt", "fp16")  # what `daad run --precision fp16` will use
    assert choose_backend(bundle, "fp16").name == "tensorrt"


def test_teaching_at_reduced_precision_needs_the_backbone_engine_and_says_so_first(backbone_part, tmp_path, capsys):
    good = tmp_path / "good"
    good.mkdir()
    args = ["teach", "--backbone", str(backbone_part), "--good", str(good), "--out", str(tmp_path / "out"),
            "--precision", "fp16"]  # fmt: skip
    assert daad(args) == 2
    err = capsys.readouterr().err
    assert ("daad-edge[tensorrt]" in err or "daad build --backbone" in err) and not (tmp_path / "out").exists()
