"""Open an inference backend by name: `onnxruntime`, `tensorrt`, or `auto` (the best usable one).

Backend modules import their heavy packages only when opened, so this package imports anywhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from runtime.backends.base import PRECISIONS, Backend, InferenceResult
from runtime.bundle import MODEL_FILE, Bundle, has_parts
from runtime.errors import DaadError, MissingDependency

BACKENDS = ("auto", "onnxruntime", "tensorrt")

log = logging.getLogger(__name__)

__all__ = ["BACKENDS", "PRECISIONS", "Backend", "BackendChoice", "InferenceResult", "choose_backend", "open_backend"]


@dataclass(frozen=True)
class BackendChoice:
    """Which backend `auto` resolved to, and why, and the graphs it runs, so the log and the summary can say it."""

    name: str
    reason: str
    graphs: str = MODEL_FILE  # or a taught bundle's parts on ONNX Runtime: "backbone.onnx + head.onnx"


def choose_backend(bundle: Bundle, precision: str = "fp32", batch: int = 1) -> BackendChoice:
    """TensorRT when it is importable and the bundle's engines are built for this GPU; else ONNX Runtime."""
    from runtime.backends.tensorrt_backend import import_tensorrt, locate_engines

    try:
        import_tensorrt()
    except MissingDependency:
        return BackendChoice("onnxruntime", "tensorrt/pycuda are not installed")
    try:
        engines = locate_engines(bundle, precision, batch)
    except Exception as exc:  # no GPU, driver or engine-cache trouble: the CPU path still works
        return BackendChoice("onnxruntime", f"cannot look up a TensorRT engine ({exc})")
    if engines is None:
        return BackendChoice(
            "onnxruntime", f"no {precision} TensorRT engine for {bundle.root} on this GPU (run `daad build`)"
        )
    if engines.split:
        return BackendChoice("tensorrt", f"TensorRT engines of the shared backbone {engines.backbone.name} and the "
                                         f"memory head {engines.head.name} match this GPU and TensorRT")  # fmt: skip
    return BackendChoice("tensorrt", f"TensorRT engine {engines.whole.name} matches this GPU and TensorRT")


def open_backend(
    bundle: Bundle,
    name: str = "auto",
    precision: str = "fp32",
    threads: int | None = None,
    providers: list[str] | None = None,
    batch: int = 1,
) -> Backend:
    """Load `bundle` into the named backend; `auto` logs which one it picked and why.

    threads/providers apply to ONNX Runtime (intra-op threads; e.g. ["cuda"] or ["tensorrt"]
    execution providers); batch to TensorRT (the largest batch the engine must take).
    A bundle taught by `daad teach` runs as its backbone and head parts, the backbone shared with
    every open product taught from the same part: on ONNX Runtime one session (split_backend.py),
    on TensorRT one engine (trt_engines.py); every other bundle runs model.onnx. The chosen backend's `choice` attribute holds the BackendChoice.
    """
    if name not in BACKENDS:
        raise DaadError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise DaadError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    choice = choose_backend(bundle, precision, batch) if name == "auto" else BackendChoice(name, "asked for")
    log.info("backend: %s (%s)", choice.name, choice.reason)
    if choice.name == "tensorrt":
        from runtime.backends.tensorrt_backend import TensorRTBackend

        backend: Backend = TensorRTBackend(bundle, precision=precision, batch=batch)
    else:
        from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
        from runtime.backends.split_backend import SplitOnnxRuntimeBackend

        opener = SplitOnnxRuntimeBackend if has_parts(bundle.metadata) else OnnxRuntimeBackend
        backend = opener(bundle, precision=precision, threads=threads, providers=providers)
    choice = replace(choice, graphs=backend.graphs)  # type: ignore[attr-defined]
    backend.choice = choice  # type: ignore[attr-defined]
    return backend
