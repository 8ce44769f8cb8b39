"""TensorRT backend: the bundle's prebuilt engines, their buffers allocated once, on one stream.

An exported bundle runs one engine of its model.onnx. A taught bundle (`daad teach`) runs two in
a chain when both are built: its backbone part's engine, shared by every product taught from it
(loaded once per process, runtime.backends.trt_engines), then its own memory head's engine, which
reads the features straight from the backbone's device buffer (no copy through the host). The
line's product changeover therefore loads a new product's head, never the backbone again.

In the manner of TensorRT's samples/python/common_runtime.py: every engine gets its own execution
context; every tensor one page-locked host buffer and one device buffer, sized for the largest
batch its optimisation profile takes; `infer` is copy in, `execute_async_v3` per engine, copy out
on one stream, timed by CUDA events; `close` (or leaving the `with` block) frees everything in
reverse order. The device's context is made current for each call and released after it, so one
thread may open a backend and another use and close it (a product changeover loads the next
product beside the running loop, runtime/line/products.py). Written against the name-based I/O
API that TensorRT 8.5 to 10.x share (trt_engines says which calls).

The runtime never builds engines (a build takes minutes and belongs to `daad build`); a missing
engine is an error that names the command to run.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from runtime.backends.base import InferenceResult
from runtime.backends.engine_cache import EngineSet
from runtime.backends.trt_engines import SHARED, Stage, TensorBuffer, deserialise, import_tensorrt, open_stage
from runtime.bundle import Bundle, check_model_io
from runtime.errors import BundleError, DaadError

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
        trt, cuda = import_tensorrt()
        self._trt, self._cuda = trt, cuda
        self.precision = precision
        self._rebuild = build_command(bundle, precision, batch)
        if engines is None:
            with _cuda_errors(device):
                engines = locate_engines(bundle, precision, batch)
        if engines is None:
            raise BundleError(
                f"no TensorRT engine for precision {precision}, batch {batch} on this GPU and TensorRT version "
                f"for {bundle.root}: build it on this device with `{self._rebuild}`."
            )
        self.engines = engines
        self.engine_path = engines.head if engines.split else engines.whole  # the product's own engine
        with _cuda_errors(device):
            cuda.init()
            self._cuda_context = cuda.Device(device).retain_primary_context()
        self._stages: list[Stage] = []
        self._held: list[Path] = []
        try:
            with self._current():
                self._load(bundle)
        except BaseException:
            self.close()
            raise

    @contextmanager
    def _current(self) -> Iterator[None]:
        """The device's context current in the calling thread for the duration of one call."""
        self._cuda_context.push()
        try:
            yield
        finally:
            self._cuda_context.pop()

    def _load(self, bundle: Bundle) -> None:
        chain = [("backbone", self.engines.backbone), ("head", self.engines.head)] if self.engines.split \
            else [("model", self.engines.whole)]  # fmt: skip
        handed: dict[str, TensorBuffer] = {}
        for role, path in chain:
            engine = SHARED.acquire(path, lambda file: deserialise(self._trt, file, self._rebuild))
            self._held.append(path)
            stage = open_stage(self._trt, self._cuda, role, path, engine, handed)
            self._stages.append(stage)
            handed |= stage.buffers
        first, last = self._stages[0], self._stages[-1]
        self.input_name, self.output_names = first.input_name, last.output_names
        self.max_batch, self.input_shape = min(stage.max_batch for stage in self._stages), first.item_shape  # H, W, C
        check_model_io(bundle, last.path, self.input_name, (self.max_batch, *self.input_shape), self.output_names)
        self._buffers = handed
        self._stream = self._cuda.Stream()
        self._events = [self._cuda.Event() for _ in range(len(self._stages) + 3)]

    def infer(self, frames: np.ndarray) -> InferenceResult:
        """uint8 N x H x W x C (N up to the engines' max batch) -> scores N and maps N x 1 x H x W."""
        count = int(frames.shape[0]) if frames.ndim == 4 else 0
        if frames.ndim != 4 or tuple(frames.shape[1:]) != self.input_shape or not 0 < count <= self.max_batch:
            raise ValueError(
                f"{self.engine_path} takes 1..{self.max_batch} frames of {self.input_shape} from runtime.preprocess, "
                f"got {frames.shape}; for larger batches rebuild it: `{self._rebuild}` with a larger --batch"
            )
        cuda, stream, events = self._cuda, self._stream, self._events
        frames_in = self._buffers[self.input_name]
        np.copyto(frames_in.host[:count], frames, casting="safe")
        with self._current():
            events[0].record(stream)
            cuda.memcpy_htod_async(frames_in.device, frames_in.host[:count], stream)
            events[1].record(stream)
            for index, stage in enumerate(self._stages):
                stage.set_batch(count, self._rebuild)
                stage.context.execute_async_v3(stream.handle)
                events[2 + index].record(stream)
            for name in self.output_names:
                cuda.memcpy_dtoh_async(self._buffers[name].host[:count], self._buffers[name].device, stream)
            events[-1].record(stream)
            stream.synchronize()
            timings = self._timings(events)
        return InferenceResult(
            scores=np.array(self._buffers["score"].host[:count], dtype=np.float32),
            anomaly_maps=np.array(self._buffers["anomaly_map"].host[:count], dtype=np.float32),
            timings=timings,
        )

    def _timings(self, events: list[Any]) -> dict[str, float]:
        """Seconds per stage: h2d, compute (all engines), d2h, and per engine of a taught product."""
        seconds = {"h2d": events[1].time_since(events[0]) / 1000.0,
                   "compute": events[-2].time_since(events[1]) / 1000.0,
                   "d2h": events[-1].time_since(events[-2]) / 1000.0}  # fmt: skip
        if len(self._stages) > 1:
            for index, stage in enumerate(self._stages):
                seconds[stage.role] = events[2 + index].time_since(events[1 + index]) / 1000.0
        return seconds

    def close(self) -> None:
        """Free in reverse order of creation; safe to call twice and after a failed __init__."""
        if getattr(self, "_cuda_context", None) is None:
            return
        with self._current():  # TensorRT's and pycuda's objects are released while their context is current
            if getattr(self, "_stream", None) is not None:
                self._stream.synchronize()
            for stage in reversed(self._stages):
                stage.free()  # its context before the engine it came from
            for path in reversed(self._held):
                SHARED.release(path)
            self._stages, self._held, self._buffers, self._events, self._stream = [], [], {}, [], None
        self._cuda_context.detach()
        self._cuda_context = None

    def __enter__(self) -> "TensorRTBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def _cuda_errors(device: int) -> Iterator[None]:
    """pycuda's errors when there is no GPU or driver -> a DaadError that says what to check."""
    try:
        yield
    except DaadError:
        raise
    except Exception as exc:
        raise DaadError(
            f"the TensorRT backend cannot use CUDA device {device} ({exc}): check the NVIDIA driver "
            "(nvidia-smi, or tegrastats on a Jetson), or run with --backend onnxruntime."
        ) from exc
