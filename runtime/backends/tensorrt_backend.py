"""TensorRT backend: the bundle's prebuilt engines, their buffers allocated once, on one stream.

An exported bundle runs one engine of its model.onnx. A taught bundle (`daad teach`) runs two in
a chain when both are built: its backbone part's engine, shared by every product taught from it
(loaded once per process, runtime.backends.trt_engines), then its own memory head's engine, which
reads the features straight from the backbone's device buffer (no copy through the host). The
line's product changeover therefore loads a new product's head, never the backbone again.

In the manner of TensorRT's samples/python/common_runtime.py: every engine gets its own execution
context; every tensor one page-locked host buffer and one device buffer, sized for the largest
batch its optimisation profile takes; `infer` is copy in, `execute_async_v3` per engine, copy out
on one stream, timed by CUDA events (trt_engines.EngineChain); `close` (or leaving the `with`
block) frees everything in reverse order. The device's context is made current for each call
and released after it, so one thread may open a backend and another use and close it (a product
changeover loads the next product beside the running loop, runtime/line/products.py). Written
against the name-based I/O API that TensorRT 8.5 to 10.x share (trt_engines says which calls).

The runtime never builds engines (a build takes minutes and belongs to `daad build`); a missing
engine is an error that names the command to run.
"""

from __future__ import annotations

import numpy as np

from runtime.backends.base import InferenceResult
from runtime.backends.engine_cache import EngineSet
from runtime.backends.trt_engines import EngineChain, cuda_errors, import_tensorrt
from runtime.bundle import Bundle, check_model_io
from runtime.errors import BundleError

__all__ = ["TensorRTBackend", "build_command", "import_tensorrt", "locate_engines"]


def build_command(bundle: Bundle, precision: str, batch: int) -> str:
    """The exact `daad build` line that makes the engines this backend looks for."""
    calibration = " --calib-data GOOD_IMAGES_DIR" if precision == "int8" else ""
    return f"daad build --bundle {bundle.root} --precision {precision} --batch {batch}{calibration}"


def locate_engines(bundle: Bundle, precision: str, batch: int) -> EngineSet | None:
    """The engines engine_cache finds for this bundle, precision, GPU and TensorRT that take `batch`
    frames: a taught bundle's backbone and head, else its whole model.onnx; None when not built."""
    from runtime.backends.engine_cache import engines_for

    return engines_for(bundle, precision, batch)


class TensorRTBackend:
    """Runs a bundle's engines; use as a context manager so GPU memory is freed on exit."""

    name = "tensorrt"

    def __init__(self, bundle: Bundle, precision: str = "fp32", batch: int = 1, device: int = 0,
                 engines: EngineSet | None = None) -> None:  # fmt: skip
        import_tensorrt()
        self.precision = precision
        self._rebuild = build_command(bundle, precision, batch)
        if engines is None:
            with cuda_errors(device):
                engines = locate_engines(bundle, precision, batch)
        if engines is None:
            raise BundleError(
                f"no TensorRT engine for precision {precision}, batch {batch} on this GPU and TensorRT version "
                f"for {bundle.root}: build it on this device with `{self._rebuild}`."
            )
        self.engines = engines
        self.graphs = " + ".join(path.name for path in engines.files)  # what `daad run` says it runs
        chain = [("backbone", engines.backbone), ("head", engines.head)] if engines.split else [("model", engines.whole)]
        self._chain = EngineChain(chain, self._rebuild, device)
        self.engine_path, self.max_batch, self.input_shape = self._chain.path, self._chain.max_batch, self._chain.item_shape
        try:
            check_model_io(bundle, self.engine_path, self._chain.input_name, (self.max_batch, *self.input_shape),
                           self._chain.output_names)  # fmt: skip
        except BaseException:
            self.close()
            raise

    def infer(self, frames: np.ndarray) -> InferenceResult:
        """uint8 N x H x W x C (N up to the engines' max batch) -> scores N and maps N x 1 x H x W."""
        count = int(frames.shape[0]) if frames.ndim == 4 else 0
        if frames.ndim != 4 or tuple(frames.shape[1:]) != self.input_shape or not 0 < count <= self.max_batch:
            raise ValueError(
                f"{self.engine_path} takes 1..{self.max_batch} frames of {self.input_shape} from runtime.preprocess, "
                f"got {frames.shape}; for larger batches rebuild it: `{self._rebuild}` with a larger --batch"
            )
        outputs, timings = self._chain.run(frames)
        return InferenceResult(scores=outputs["score"].astype(np.float32, copy=False),
                               anomaly_maps=outputs["anomaly_map"].astype(np.float32, copy=False), timings=timings)  # fmt: skip

    def close(self) -> None:
        """Free the engines' contexts and buffers (and the shared backbone when no other product holds it)."""
        self._chain.close()

    def __enter__(self) -> "TensorRTBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
