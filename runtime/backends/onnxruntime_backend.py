"""ONNX Runtime backend: the embedded default, on the CPU unless a GPU provider is asked for.

The bundle's model.onnx takes the prepared uint8 frames directly (cast and normalisation are in
the graph), so `infer` is one `session.run` and its only timed stage is `compute`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends.base import InferenceResult
from runtime.bundle import MODEL_FILE, Bundle, check_model_io
from runtime.errors import DaadError
from runtime.optional import require

# Short names a user types -> ONNX Runtime execution provider names.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def resolve_providers(asked: list[str] | None, available: list[str]) -> list[str]:
    """Asked short names (or full provider names) -> provider list, CPU always last as fallback."""
    names = [PROVIDERS.get(item.lower(), item) for item in (asked or ["cpu"])]
    missing = [name for name in names if name not in available]
    if missing:
        raise DaadError(
            f"ONNX Runtime execution provider(s) {', '.join(missing)} are not available here "
            f"(available: {', '.join(available)}): install onnxruntime-gpu for CUDA/TensorRT, "
            "or leave --providers out to run on the CPU."
        )
    return names + ([] if "CPUExecutionProvider" in names else ["CPUExecutionProvider"])


def open_session(
    path: Path | bytes, threads: int | None = None, providers: list[str] | None = None, fix: str = "re-export the bundle with `daad export`"
) -> tuple[Any, list[str]]:
    """(InferenceSession over the graph at `path` (or serialised, before it is written), its
    providers), with every backend's settings.

    One sequential inter-op thread (a scoring graph is a chain), `threads` intra-op threads; a
    graph ONNX Runtime cannot load is an error naming the file and `fix`."""
    ort = require("onnxruntime", "the ONNX Runtime backend")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    names = resolve_providers(providers, ort.get_available_providers())
    try:
        return ort.InferenceSession(path if isinstance(path, bytes) else str(path), options, providers=names), names
    except Exception as exc:  # ORT raises its own exception types for unloadable models
        where = "the graph being written" if isinstance(path, bytes) else path
        raise DaadError(f"ONNX Runtime cannot load {where} ({exc}): {fix}.") from exc


class OnnxRuntimeBackend:
    """One InferenceSession over the bundle's model.onnx."""

    name = "onnxruntime"
    graphs = MODEL_FILE

    def __init__(
        self,
        bundle: Bundle,
        precision: str = "fp32",
        threads: int | None = None,
        providers: list[str] | None = None,
    ) -> None:
        if precision != "fp32":
            raise DaadError(
                f"ONNX Runtime runs {bundle.onnx_path} at fp32 only, not {precision}: "
                f"use --backend tensorrt for {precision} (after `daad build --bundle {bundle.root} "
                f"--precision {precision}`), or --precision fp32."
            )
        self.precision = precision
        self._session, self.providers = open_session(bundle.onnx_path, threads, providers)
        model_input = self._session.get_inputs()[0]
        self.input_name = model_input.name
        self.output_names = [output.name for output in self._session.get_outputs()]
        check_model_io(bundle, bundle.onnx_path, self.input_name, tuple(model_input.shape), self.output_names)
        self.input_shape = tuple(bundle.preprocess.shape)

    def infer(self, frames: np.ndarray) -> InferenceResult:
        """uint8 N x H x W x C -> scores N and anomaly maps N x 1 x H x W."""
        if frames.dtype != np.uint8 or frames.ndim != 4 or tuple(frames.shape[1:]) != self.input_shape:
            raise ValueError(
                f"expected uint8 N x {' x '.join(map(str, self.input_shape))} frames from runtime.preprocess, "
                f"got {frames.dtype} {frames.shape}"
            )
        start = time.perf_counter()
        outputs = dict(zip(self.output_names, self._session.run(self.output_names, {self.input_name: frames})))
        compute = time.perf_counter() - start
        return InferenceResult(
            scores=np.asarray(outputs["score"], dtype=np.float32),
            anomaly_maps=np.asarray(outputs["anomaly_map"], dtype=np.float32),
            timings={"compute": compute},
        )

    def close(self) -> None:
        self._session = None

    def __enter__(self) -> "OnnxRuntimeBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
