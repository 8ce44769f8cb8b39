"""TensorRT backend: the bundle's prebuilt engine, run with explicit buffers, streams and events.

Written against the name-based I/O API that TensorRT 8.5 to 10.x share (num_io_tensors,
get_tensor_name/mode/shape/dtype, set_input_shape, set_tensor_address, execute_async_v3).
Everything is allocated once in __init__ and freed in close(): every host buffer is page-locked
and every buffer is named after its tensor. Two input slots let the host-to-device copy of the
next batch (on the copy stream) overlap inference of the current one (on the compute stream);
`submit` starts a batch and `collect` waits for it, `infer` is both. With `cuda_graph`, the
enqueue of each slot is captured once and replayed, which saves the launch cost of many small
kernels on a Jetson.

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
from runtime.bundle import Bundle
from runtime.errors import BundleError, DaadError
from runtime.optional import require

SLOTS = 2


def import_tensorrt() -> tuple[Any, Any]:
    """(tensorrt, pycuda.driver), or MissingDependency naming the [tensorrt] extra."""
    trt = require("tensorrt", "tensorrt", "the TensorRT backend")
    cuda = require("pycuda.driver", "tensorrt", "the TensorRT backend")
    return trt, cuda


def build_command(bundle: Bundle, precision: str, batch: int) -> str:
    """The exact `daad build` line that makes the engine this backend looks for."""
    calibration = " --calib-data GOOD_IMAGES_DIR" if precision == "int8" else ""
    return f"daad build --bundle {bundle.root} --precision {precision} --batch {batch}{calibration}"


def locate_engine(bundle: Bundle, precision: str, batch: int) -> Path | None:
    """The engine engine_cache files for this bundle, precision, batch, this GPU and TensorRT."""
    from runtime.backends.engine_cache import find_engine

    return find_engine(bundle, precision, batch)


@dataclass
class _Slot:
    """One in-flight batch: its own host buffers, device input and timing events."""

    host: dict[str, np.ndarray]  # tensor name -> page-locked host buffer
    device_input: Any  # pycuda DeviceAllocation for the input tensor
    events: dict[str, Any]  # h2d_start, h2d_end, compute_start, compute_end, d2h_end
    graph: Any = None  # instantiated CUDA graph of this slot's enqueue
    batch: int = 0
    pending: bool = False


class TensorRTBackend:
    """Runs one deserialised engine; use as a context manager so GPU memory is freed on exit."""

    name = "tensorrt"

    def __init__(
        self,
        bundle: Bundle,
        precision: str = "fp32",
        batch: int = 1,
        engine_path: Path | None = None,
        cuda_graph: bool = False,
        device: int = 0,
    ) -> None:
        trt, cuda = import_tensorrt()
        self._trt, self._cuda = trt, cuda
        self.precision, self.max_batch, self.cuda_graph = precision, batch, cuda_graph
        with _cuda_errors(device):
            self.engine_path = engine_path or locate_engine(bundle, precision, batch)
        if self.engine_path is None:
            raise BundleError(
                f"no TensorRT engine for precision {precision}, batch {batch} on this GPU and TensorRT version "
                f"in {bundle.engines_dir}: build it on this device with `{build_command(bundle, precision, batch)}`."
            )
        with _cuda_errors(device):
            cuda.init()
            self._cuda_context = cuda.Device(device).retain_primary_context()
        self._cuda_context.push()
        self._device_outputs: dict[str, Any] = {}
        self._slots: list[_Slot] = []
        try:
            self._load(bundle)
        except BaseException:
            self.close()
            raise

    def _load(self, bundle: Bundle) -> None:
        trt, cuda = self._trt, self._cuda
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(Path(self.engine_path).read_bytes())
        if self._engine is None:
            raise BundleError(
                f"TensorRT cannot load {self.engine_path} (built by another TensorRT version or GPU, or "
                f"corrupt): rebuild it here with `{build_command(bundle, self.precision, self.max_batch)}`."
            )
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise BundleError(f"{self.engine_path} has inputs {inputs}; a daad engine has exactly one (frames).")
        self.input_name, self.output_names = inputs[0], [n for n in names if n not in inputs]
        self.input_shape = tuple(self._engine.get_tensor_shape(self.input_name))[1:]  # H, W, C
        self._set_batch(self.max_batch)
        self.dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        shapes = {n: tuple(self._context.get_tensor_shape(n)) for n in names}
        for name in self.output_names:
            self._device_outputs[name] = cuda.mem_alloc(_nbytes(shapes[name], self.dtypes[name]))
            self._context.set_tensor_address(name, int(self._device_outputs[name]))
        self._copy_stream, self._compute_stream = cuda.Stream(), cuda.Stream()
        for _ in range(SLOTS):
            host = {n: cuda.pagelocked_empty(shapes[n], self.dtypes[n]) for n in names}
            events = {key: cuda.Event() for key in ("h2d_start", "h2d_end", "compute_start", "compute_end", "d2h_end")}
            self._slots.append(_Slot(host, cuda.mem_alloc(host[self.input_name].nbytes), events))
        self._next = 0

    def _set_batch(self, batch: int) -> None:
        """Shape the context for `batch` frames; captured graphs are for one shape, so drop them."""
        if not self._context.set_input_shape(self.input_name, (batch, *self.input_shape)):
            raise DaadError(
                f"{self.engine_path} does not accept a batch of {batch} (built for up to {self.max_batch}): "
                "rebuild it with a larger --batch."
            )
        self._batch = batch
        for slot in self._slots:
            slot.graph = None

    def submit(self, frames: np.ndarray) -> int:
        """Start a batch: copy it in on the copy stream, run it on the compute stream; returns a ticket."""
        count = int(frames.shape[0])
        if frames.ndim != 4 or tuple(frames.shape[1:]) != self.input_shape or not 0 < count <= self.max_batch:
            raise ValueError(
                f"expected 1..{self.max_batch} frames of {self.input_shape} from runtime.preprocess, got {frames.shape}"
            )
        ticket = self._next
        slot = self._slots[ticket]
        if slot.pending:
            self.collect(ticket)
        self._next = (ticket + 1) % SLOTS
        if count != self._batch:
            self._compute_stream.synchronize()
            self._set_batch(count)
        cuda, events = self._cuda, slot.events
        host_input = slot.host[self.input_name][:count]
        np.copyto(host_input, frames, casting="safe")
        events["h2d_start"].record(self._copy_stream)
        cuda.memcpy_htod_async(slot.device_input, host_input, self._copy_stream)
        events["h2d_end"].record(self._copy_stream)
        self._compute_stream.wait_for_event(events["h2d_end"])
        events["compute_start"].record(self._compute_stream)
        self._enqueue(slot)
        events["compute_end"].record(self._compute_stream)
        for name in self.output_names:
            cuda.memcpy_dtoh_async(slot.host[name], self._device_outputs[name], self._compute_stream)
        events["d2h_end"].record(self._compute_stream)
        slot.batch, slot.pending = count, True
        return ticket

    def _enqueue(self, slot: _Slot) -> None:
        self._context.set_tensor_address(self.input_name, int(slot.device_input))
        if not self.cuda_graph:
            self._context.execute_async_v3(self._compute_stream.handle)
            return
        if slot.graph is None:
            # One plain run first: TensorRT does its shape-dependent set-up outside the capture.
            self._context.execute_async_v3(self._compute_stream.handle)
            self._compute_stream.begin_capture()
            self._context.execute_async_v3(self._compute_stream.handle)
            slot.graph = self._compute_stream.end_capture().instantiate()
        slot.graph.launch(self._compute_stream)

    def collect(self, ticket: int) -> InferenceResult:
        """Wait for a submitted batch; its outputs are copied out of the page-locked buffers."""
        slot = self._slots[ticket]
        if not slot.pending:
            raise ValueError(f"ticket {ticket} has no batch in flight")
        events = slot.events
        events["d2h_end"].synchronize()
        slot.pending = False
        count = slot.batch
        seconds = {
            "h2d": events["h2d_end"].time_since(events["h2d_start"]) / 1000.0,
            "compute": events["compute_end"].time_since(events["compute_start"]) / 1000.0,
            "d2h": events["d2h_end"].time_since(events["compute_end"]) / 1000.0,
        }
        return InferenceResult(
            scores=np.array(slot.host["score"][:count], dtype=np.float32),
            anomaly_maps=np.array(slot.host["anomaly_map"][:count], dtype=np.float32),
            timings=seconds,
        )

    def infer(self, frames: np.ndarray) -> InferenceResult:
        return self.collect(self.submit(frames))

    def close(self) -> None:
        """Free in reverse order of creation; safe to call twice and after a failed __init__."""
        if getattr(self, "_cuda_context", None) is None:
            return
        for stream in (getattr(self, "_compute_stream", None), getattr(self, "_copy_stream", None)):
            if stream is not None:
                stream.synchronize()
        for slot in self._slots:
            slot.graph = None
            slot.device_input.free()
            for buffer in slot.host.values():
                buffer.base.free()
        for allocation in self._device_outputs.values():
            allocation.free()
        self._slots, self._device_outputs = [], {}
        self._context = self._engine = self._runtime = None
        self._copy_stream = self._compute_stream = None
        self._cuda_context.pop()
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


def _nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
