"""TensorRT backend: the bundle's prebuilt engine, with its buffers allocated once and one stream.

In the manner of TensorRT's samples/python/common_runtime.py: the engine and its execution
context are loaded once; every input and output tensor gets one page-locked host buffer and one
device buffer, named after the tensor and sized for the largest batch the engine's optimisation
profile takes; `infer` is copy in, `execute_async_v3`, copy out on one stream, timed by CUDA
events; `close` (or leaving the `with` block) frees everything in reverse order. The device's
context is made current for each call and released after it, so one thread may open a backend
and another use and close it (a product changeover loads the next product beside the running
loop, runtime/line/products.py). Written against
the name-based I/O API that TensorRT 8.5 to 10.x share (num_io_tensors, get_tensor_name/mode/
dtype, get_tensor_profile_shape, set_input_shape, set_tensor_address, execute_async_v3).

The runtime never builds engines (a build takes minutes and belongs to `daad build`); a missing
engine is an error that names the command to run.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from runtime.backends.base import InferenceResult
from runtime.bundle import Bundle, check_model_io
from runtime.errors import BundleError, DaadError
from runtime.optional import require


def import_tensorrt() -> tuple[Any, Any]:
    """(tensorrt, pycuda.driver), or MissingDependency naming the [tensorrt] extra."""
    trt = require("tensorrt", "the TensorRT backend")
    cuda = require("pycuda.driver", "the TensorRT backend")
    return trt, cuda


def build_command(bundle: Bundle, precision: str, batch: int) -> str:
    """The exact `daad build` line that makes the engine this backend looks for."""
    calibration = " --calib-data GOOD_IMAGES_DIR" if precision == "int8" else ""
    return f"daad build --bundle {bundle.root} --precision {precision} --batch {batch}{calibration}"


def locate_engine(bundle: Bundle, precision: str, batch: int) -> Path | None:
    """The engine engine_cache files for this bundle, precision, this GPU and TensorRT that takes
    `batch` frames (built for it, or for a larger batch)."""
    from runtime.backends.engine_cache import engine_for_batch

    return engine_for_batch(bundle, precision, batch)


@dataclass
class TensorBuffer:
    """One I/O tensor's page-locked host buffer and device buffer, both for the largest batch."""

    name: str
    host: np.ndarray  # pycuda page-locked array, max batch x tensor shape
    device: Any  # pycuda DeviceAllocation of the same size

    def free(self) -> None:
        self.device.free()
        self.host.base.free()


class TensorRTBackend:
    """Runs one deserialised engine; use as a context manager so GPU memory is freed on exit."""

    name = "tensorrt"

    def __init__(self, bundle: Bundle, precision: str = "fp32", batch: int = 1, device: int = 0) -> None:
        trt, cuda = import_tensorrt()
        self._trt, self._cuda = trt, cuda
        self.precision = precision
        with _cuda_errors(device):
            self.engine_path = locate_engine(bundle, precision, batch)
        if self.engine_path is None:
            raise BundleError(
                f"no TensorRT engine for precision {precision}, batch {batch} on this GPU and TensorRT version "
                f"in {bundle.engines_dir}: build it on this device with `{build_command(bundle, precision, batch)}`."
            )
        self._rebuild = build_command(bundle, precision, batch)
        with _cuda_errors(device):
            cuda.init()
            self._cuda_context = cuda.Device(device).retain_primary_context()
        self._buffers: dict[str, TensorBuffer] = {}
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
        trt, cuda = self._trt, self._cuda
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(Path(self.engine_path).read_bytes())
        if self._engine is None:
            raise BundleError(
                f"TensorRT cannot load {self.engine_path} (built by another TensorRT version or GPU, or "
                f"corrupt): rebuild it here with `{self._rebuild}`."
            )
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise BundleError(f"{self.engine_path} has inputs {inputs}; a daad engine has exactly one (frames).")
        self.input_name, self.output_names = inputs[0], [n for n in names if n not in inputs]
        largest = tuple(self._engine.get_tensor_profile_shape(self.input_name, 0)[2])  # (min, opt, max)[max]
        self.max_batch, self.input_shape = int(largest[0]), largest[1:]  # H, W, C
        check_model_io(bundle, Path(self.engine_path), self.input_name, largest, self.output_names)
        self._set_batch(self.max_batch)  # the outputs take their largest shapes, to size their buffers
        for name in names:
            shape = tuple(self._context.get_tensor_shape(name))
            host = cuda.pagelocked_empty(shape, np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))))
            self._buffers[name] = TensorBuffer(name, host, cuda.mem_alloc(host.nbytes))
            self._context.set_tensor_address(name, int(self._buffers[name].device))
        self._stream = cuda.Stream()
        self._events = {key: cuda.Event() for key in ("start", "h2d", "compute", "d2h")}

    def _set_batch(self, count: int) -> None:
        if not self._context.set_input_shape(self.input_name, (count, *self.input_shape)):
            raise DaadError(f"{self.engine_path} does not accept a batch of {count}: rebuild it with `{self._rebuild}`")

    def infer(self, frames: np.ndarray) -> InferenceResult:
        """uint8 N x H x W x C (N up to the engine's max batch) -> scores N and maps N x 1 x H x W."""
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
            self._set_batch(count)
            events["start"].record(stream)
            cuda.memcpy_htod_async(frames_in.device, frames_in.host[:count], stream)
            events["h2d"].record(stream)
            self._context.execute_async_v3(stream.handle)
            events["compute"].record(stream)
            for name in self.output_names:
                cuda.memcpy_dtoh_async(self._buffers[name].host[:count], self._buffers[name].device, stream)
            events["d2h"].record(stream)
            stream.synchronize()
            timings = {
                "h2d": events["h2d"].time_since(events["start"]) / 1000.0,
                "compute": events["compute"].time_since(events["h2d"]) / 1000.0,
                "d2h": events["d2h"].time_since(events["compute"]) / 1000.0,
            }
        return InferenceResult(
            scores=np.array(self._buffers["score"].host[:count], dtype=np.float32),
            anomaly_maps=np.array(self._buffers["anomaly_map"].host[:count], dtype=np.float32),
            timings=timings,
        )

    def close(self) -> None:
        """Free in reverse order of creation; safe to call twice and after a failed __init__."""
        if getattr(self, "_cuda_context", None) is None:
            return
        with self._current():  # TensorRT's and pycuda's objects are released while their context is current
            if getattr(self, "_stream", None) is not None:
                self._stream.synchronize()
            for buffer in self._buffers.values():
                buffer.free()
            self._buffers, self._events = {}, {}
            self._stream = self._context = self._engine = self._runtime = None
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
