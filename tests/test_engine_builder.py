"""Engine naming and lookup (real, everywhere) and engine builds (TensorRT, skipped without it)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from runtime.bundle import open_bundle
from runtime.backends.engine_cache import (
    EngineRecord,
    EngineSet,
    engine_for_batch,
    engine_path,
    find_engine,
    read_sidecar,
    slug,
    stale_engines,
    write_sidecar,
)
from runtime.errors import DaadError, MissingDependency

ROOT = Path(__file__).resolve().parents[1]
TRT = "10.3.0"
GPU = "NVIDIA Jetson AGX Orin"
HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def _fake_engine(target, precision="fp16", batch=4, data=b"serialized engine", **changes) -> Path:
    """An engine file and sidecar as `daad build` writes them (bytes are opaque to the cache);
    `target` is a bundle or an EngineSource (a taught bundle's backbone or head)."""
    import hashlib

    path = engine_path(target, TRT, GPU, precision, batch)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    record = EngineRecord(target.sha256, TRT, GPU, precision, batch, hashlib.sha256(data).hexdigest())
    write_sidecar(path, replace(record, **changes))
    return path


def test_engine_name_carries_model_tensorrt_gpu_precision_and_batch(tiny_bundle) -> None:
    bundle = open_bundle(tiny_bundle)
    path = engine_path(bundle, TRT, GPU, "int8", 8)
    assert path.parent == tiny_bundle / "engines"
    assert path.name == f"{bundle.sha256[:16]}_trt10.3.0_nvidia-jetson-agx-orin_int8_b8.engine"
    assert slug("Orin (nvgpu) / 32GB") == "orin-nvgpu-32gb"
    with pytest.raises(ValueError, match="precision"):
        engine_path(bundle, TRT, GPU, "fp8", 1)


def test_matching_engine_is_found_and_others_are_not(tiny_bundle) -> None:
    bundle = open_bundle(tiny_bundle)
    assert find_engine(bundle, "fp16", 4, trt_version=TRT, gpu_name=GPU) is None
    path = _fake_engine(bundle)
    assert find_engine(bundle, "fp16", 4, trt_version=TRT, gpu_name=GPU) == path
    assert read_sidecar(path).gpu_name == GPU
    assert find_engine(bundle, "fp16", 4, trt_version="8.6.2", gpu_name=GPU) is None
    assert find_engine(bundle, "fp16", 4, trt_version=TRT, gpu_name="NVIDIA Jetson Xavier NX") is None
    assert find_engine(bundle, "fp32", 4, trt_version=TRT, gpu_name=GPU) is None
    assert find_engine(bundle, "fp16", 1, trt_version=TRT, gpu_name=GPU) is None


def test_backend_takes_an_engine_built_for_a_larger_batch_the_builder_does_not(tiny_bundle) -> None:
    bundle = open_bundle(tiny_bundle)
    eight = _fake_engine(bundle, batch=8)
    assert engine_for_batch(bundle, "fp16", 1, trt_version=TRT, gpu_name=GPU) == eight  # its profile starts at 1
    assert engine_for_batch(bundle, "fp16", 8, trt_version=TRT, gpu_name=GPU) == eight
    assert engine_for_batch(bundle, "fp16", 16, trt_version=TRT, gpu_name=GPU) is None
    assert engine_for_batch(bundle, "fp32", 1, trt_version=TRT, gpu_name=GPU) is None
    assert find_engine(bundle, "fp16", 1, trt_version=TRT, gpu_name=GPU) is None  # daad build --batch 1 still builds
    two = _fake_engine(bundle, batch=2)
    one = _fake_engine(bundle, batch=1)
    assert engine_for_batch(bundle, "fp16", 1, trt_version=TRT, gpu_name=GPU) == one  # the exact one first
    assert engine_for_batch(bundle, "fp16", 2, trt_version=TRT, gpu_name=GPU) == two
    two.write_bytes(b"truncated")  # a damaged engine is skipped for the next larger valid one
    assert engine_for_batch(bundle, "fp16", 2, trt_version=TRT, gpu_name=GPU) == eight


@pytest.mark.parametrize(
    "damage",
    ["truncated engine", "sidecar of another model", "sidecar of another gpu", "no sidecar", "corrupt sidecar"],
)
def test_stale_or_damaged_engine_is_never_returned(tiny_bundle, damage) -> None:
    bundle = open_bundle(tiny_bundle)
    changes = {"sidecar of another model": {"onnx_sha256": "0" * 64}, "sidecar of another gpu": {"gpu_name": "x"}}
    path = _fake_engine(bundle, **changes.get(damage, {}))
    if damage == "truncated engine":
        path.write_bytes(path.read_bytes()[:5])
    elif damage == "no sidecar":
        path.with_suffix(".json").unlink()
    elif damage == "corrupt sidecar":
        path.with_suffix(".json").write_text("{")
    assert find_engine(bundle, "fp16", 4, trt_version=TRT, gpu_name=GPU) is None


def test_engines_of_a_previous_export_are_listed_as_stale(tiny_bundle) -> None:
    bundle = open_bundle(tiny_bundle)
    current = _fake_engine(bundle)
    old = bundle.engines_dir / f"{'f' * 16}_trt{TRT}_{slug(GPU)}_fp16_b4.engine"
    old.write_bytes(b"old")
    assert stale_engines(bundle) == [old] and current not in stale_engines(bundle)


def test_int8_without_calibration_data_is_refused_before_anything_else(tiny_bundle) -> None:
    from engines.engine_builder import build_engine

    with pytest.raises(DaadError, match="int8 needs calibration images.*--calib-data.*never built"):
        build_engine(tiny_bundle, "int8", calib_data=None)
    with pytest.raises(DaadError, match="--precision must be one of"):
        build_engine(tiny_bundle, "fp8")


@pytest.mark.skipif(HAVE_TENSORRT, reason="checks the message shown where TensorRT is missing")
def test_build_without_tensorrt_names_the_extra_and_the_hardware(tiny_bundle, capsys) -> None:
    from engines.engine_builder import build_engine
    from runtime.cli import main

    with pytest.raises(MissingDependency, match=r"daad-edge\[tensorrt\].*") as error:
        build_engine(tiny_bundle, "fp16")
    assert "NVIDIA GPU" in str(error.value) and "Jetson with JetPack" in str(error.value)
    assert main(["build", "--bundle", str(tiny_bundle), "--precision", "fp32"]) == 2
    assert "daad-edge[tensorrt]" in capsys.readouterr().err


def test_builder_and_calibration_import_without_torch() -> None:
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "import engines.engine_builder, engines.build_cli, engines.int8_data, runtime.backends.engine_cache\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# --- TensorRT (skipped where TensorRT and pycuda are absent; not run in CI) ---

FP32_TOLERANCE = 1e-3  # max relative score error of a TensorRT fp32 engine against ONNX Runtime
FP16_TOLERANCE = 2e-2


@pytest.fixture
def model_bundle(tmp_path):
    """A real exported daad bundle (torch is present wherever TensorRT tests run on a workstation)."""
    from export.bundle_export import export_bundle
    from test_export import PREPROCESS, tiny_config, trained_one_step

    export_bundle(trained_one_step("daad"), PREPROCESS, tmp_path / "bundle", "daad", tiny_config("daad").to_dict())
    return open_bundle(tmp_path / "bundle")


def _relative_error(scores: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(scores - reference) / np.maximum(np.abs(reference), 1e-3 * np.abs(reference).max())))


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision, tolerance", [("fp32", FP32_TOLERANCE), ("fp16", FP16_TOLERANCE)])
def test_engine_scores_match_onnxruntime(model_bundle, precision, tolerance) -> None:
    from engines.engine_builder import build_engine
    from export.parity import synthetic_frames
    from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
    from runtime.backends.tensorrt_backend import TensorRTBackend

    engine = build_engine(model_bundle, precision, batch=4)
    frames = synthetic_frames(32, 32, 3, count=4, seed=5)
    with OnnxRuntimeBackend(model_bundle) as reference:
        expected = reference.infer(frames)
    with TensorRTBackend(model_bundle, precision, 4, engines=EngineSet(whole=engine)) as candidate:
        actual = candidate.infer(frames)
    assert _relative_error(actual.scores, expected.scores) <= tolerance


@pytest.mark.tensorrt
def test_matching_engine_is_reused_and_a_stale_one_rebuilt(model_bundle) -> None:
    from engines.engine_builder import build_engine

    engine = build_engine(model_bundle, "fp32", batch=2)
    built = engine.stat().st_mtime_ns
    assert build_engine(model_bundle, "fp32", batch=2) == engine and engine.stat().st_mtime_ns == built
    assert any(model_bundle.engines_dir.glob("timing_*.cache"))
    engine.write_bytes(engine.read_bytes()[:100])  # damaged: must not be loaded, so it is rebuilt
    assert build_engine(model_bundle, "fp32", batch=2) == engine and engine.stat().st_size > 100
