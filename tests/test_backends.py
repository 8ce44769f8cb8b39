"""Backends: the real tiny ONNX bundle in real ONNX Runtime; TensorRT where it is installed."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from tiny_bundle import grey_frame

from runtime.backends import choose_backend, open_backend
from runtime.backends import tensorrt_backend
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend, resolve_providers
from runtime.backends.engine_cache import EngineSet
from runtime.bundle import open_bundle
from runtime.errors import DaadError, MissingDependency
from runtime.preprocess import prepare_batch

TENSORRT_INSTALLED = importlib.util.find_spec("tensorrt") is not None


def reference_scores(batch: np.ndarray) -> np.ndarray:
    """What tiny_bundle's graph computes, in numpy."""
    deviation = np.abs(batch.astype(np.float32) / 255.0 - 0.5).mean(axis=3)
    return deviation.reshape(len(batch), -1).max(axis=1)


@pytest.fixture
def bundle(tiny_bundle):
    return open_bundle(tiny_bundle)


def test_onnxruntime_scores_match_the_graph_and_time_compute(bundle) -> None:
    frames = [grey_frame(32, 32), grey_frame(32, 32, blob=250), grey_frame(32, 32, blob=10)]
    batch = prepare_batch(frames, bundle.preprocess)
    with OnnxRuntimeBackend(bundle, threads=1) as backend:
        result = backend.infer(batch)
    np.testing.assert_allclose(result.scores, reference_scores(batch), rtol=1e-5)
    assert result.scores[1] > 0.4 and result.scores[0] < 0.01
    assert result.anomaly_maps.shape == (3, 1, 32, 32)
    assert set(result.timings) == {"compute"} and result.timings["compute"] > 0


def test_onnxruntime_sets_intra_op_threads(bundle) -> None:
    backend = OnnxRuntimeBackend(bundle, threads=1)
    assert backend._session.get_session_options().intra_op_num_threads == 1
    assert backend.providers == ["CPUExecutionProvider"]


def test_onnxruntime_rejects_a_batch_not_from_preprocess(bundle) -> None:
    backend = OnnxRuntimeBackend(bundle)
    with pytest.raises(ValueError, match="uint8 N x 32 x 32 x 3"):
        backend.infer(np.zeros((1, 16, 16, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="float32"):
        backend.infer(np.zeros((1, 32, 32, 3), dtype=np.float32))


def test_onnxruntime_refuses_reduced_precision_and_names_tensorrt(bundle) -> None:
    with pytest.raises(DaadError, match="--backend tensorrt"):
        OnnxRuntimeBackend(bundle, precision="fp16")


def test_providers_are_resolved_with_cpu_fallback_or_refused() -> None:
    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(["cuda"], available) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(None, available) == ["CPUExecutionProvider"]
    with pytest.raises(DaadError, match="TensorrtExecutionProvider.*available: CPUExecutionProvider"):
        resolve_providers(["tensorrt"], ["CPUExecutionProvider"])


def test_open_backend_validates_names(bundle) -> None:
    with pytest.raises(DaadError, match="unknown backend 'openvino'"):
        open_backend(bundle, "openvino")
    with pytest.raises(DaadError, match="unknown precision 'fp8'"):
        open_backend(bundle, "onnxruntime", precision="fp8")


@pytest.mark.skipif(TENSORRT_INSTALLED, reason="checks the fallback where TensorRT is absent")
def test_auto_falls_back_to_onnxruntime_and_says_why(bundle) -> None:
    with open_backend(bundle, "auto") as backend:
        assert backend.name == "onnxruntime"
        assert "not installed" in backend.choice.reason


def test_auto_without_a_matching_engine_picks_onnxruntime_and_names_daad_build(bundle, monkeypatch) -> None:
    monkeypatch.setattr(tensorrt_backend, "import_tensorrt", lambda: (None, None))
    monkeypatch.setattr(tensorrt_backend, "locate_engines", lambda bundle, precision, batch: None)
    choice = choose_backend(bundle, "fp32")
    assert choice.name == "onnxruntime" and "daad build" in choice.reason


def test_auto_with_a_matching_engine_picks_tensorrt(bundle, monkeypatch, tmp_path) -> None:
    engine = tmp_path / "model.engine"
    monkeypatch.setattr(tensorrt_backend, "import_tensorrt", lambda: (None, None))
    monkeypatch.setattr(tensorrt_backend, "locate_engines", lambda bundle, precision, batch: EngineSet(whole=engine))
    assert choose_backend(bundle, "fp16").name == "tensorrt"


@pytest.mark.skipif(TENSORRT_INSTALLED, reason="checks the message where TensorRT is absent")
def test_tensorrt_backend_imports_without_tensorrt_and_names_the_extra(bundle) -> None:
    with pytest.raises(MissingDependency, match=r"daad-edge\[tensorrt\]"):
        tensorrt_backend.TensorRTBackend(bundle)


def test_build_command_names_calibration_data_for_int8(bundle) -> None:
    assert tensorrt_backend.build_command(bundle, "fp16", 1).endswith("--precision fp16 --batch 1")
    assert "--calib-data" in tensorrt_backend.build_command(bundle, "int8", 4)


@pytest.fixture
def engine_bundle(bundle):
    from engines.engine_builder import build_engine

    build_engine(bundle, precision="fp32", batch=2)
    return bundle


@pytest.mark.tensorrt
def test_tensorrt_matches_onnxruntime_at_every_batch_up_to_the_engines(engine_bundle) -> None:
    batch = prepare_batch([grey_frame(32, 32), grey_frame(32, 32, blob=250)], engine_bundle.preprocess)
    expected = OnnxRuntimeBackend(engine_bundle).infer(batch)
    with tensorrt_backend.TensorRTBackend(engine_bundle, batch=2) as backend:
        assert (backend.max_batch, backend.input_shape) == (2, (32, 32, 3))
        for _ in range(2):  # the buffers are reused call after call
            result = backend.infer(batch)
        single = backend.infer(batch[1:])
        with pytest.raises(ValueError, match="1..2 frames.*daad build"):
            backend.infer(np.concatenate([batch, batch]))
    np.testing.assert_allclose(result.scores, expected.scores, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result.anomaly_maps, expected.anomaly_maps, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(single.scores, expected.scores[1:], rtol=1e-4, atol=1e-5)
    assert set(result.timings) == {"h2d", "compute", "d2h"}


@pytest.mark.tensorrt
def test_tensorrt_close_is_deterministic_and_idempotent(engine_bundle) -> None:
    backend = tensorrt_backend.TensorRTBackend(engine_bundle, batch=2)
    with backend:
        backend.infer(prepare_batch([grey_frame(32, 32)], engine_bundle.preprocess))
    assert backend._chain.stages == [] and backend._chain._cuda_context is None
    backend.close()
