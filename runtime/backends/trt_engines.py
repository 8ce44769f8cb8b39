"""TensorRT engines loaded once per process, and one execution context with its buffers per user.

Products taught from one backbone part run the same backbone engine (runtime.backends.engine_cache).
A line that holds several of them open (the product on the line, the one a roll back returns
to, one loaded for a changeover) deserialises that engine once: `SharedEngines` counts who holds
it and drops it when the last one lets go. Execution contexts are not shared: each backend makes
its own from the engine, so the loop and a changeover's test frame never run one context from two
threads. Every call here runs with the device's CUDA context current (TensorRTBackend makes it so).

`EngineChain` runs engines one after another on one stream. Name-based I/O of TensorRT 8.5 to 10.x: num_io_tensors, get_tensor_name/mode/dtype,
get_tensor_profile_shape, set_input_shape, get_tensor_shape, set_tensor_address.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from runtime.backends.shared import Lease, SharedPool
from runtime.errors import BundleError, DaadError
from runtime.optional import require


def import_tensorrt() -> tuple[Any, Any]:
    """(tensorrt, pycuda.driver), or MissingDependency naming the [tensorrt] extra."""
    trt = require("tensorrt", "the TensorRT backend")
    cuda = require("pycuda.driver", "the TensorRT backend")
    return trt, cuda


@dataclass
class TensorBuffer:
    """One I/O tensor's page-locked host buffer and device buffer, both for the largest batch."""

    name: str
    host: np.ndarray  # pycuda page-locked array, max batch x tensor shape
    device: Any  # pycuda DeviceAllocation of the same size

    def free(self) -> None:
        self.device.free()
        self.host.base.free()


@dataclass
class LoadedEngine:
    """A deserialised engine with the runtime and logger it came from, released in that order."""

    logger: Any
    runtime: Any
    engine: Any

    def release(self) -> None:
        """The engine before its runtime, the runtime before its logger: TensorRT's own order of destruction."""
        self.engine = None
        self.runtime = None
        self.logger = None


# The deserialised engines of this process by file, dropped after their last holder.
ENGINES: SharedPool[Path, LoadedEngine] = SharedPool(dropped=lambda path, loaded: loaded.release())


def deserialise(trt: Any, path: Path, rebuild: str) -> LoadedEngine:
    """An engine file loaded; an engine TensorRT cannot load names the command that rebuilds it."""
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
    if engine is None:
        raise BundleError(f"TensorRT cannot load {path} (built by another TensorRT version or GPU, or corrupt): "
                          f"rebuild it here with `{rebuild}`.")  # fmt: skip
    return LoadedEngine(logger, runtime, engine)


@dataclass
class Stage:
    """One engine run by one execution context: its single input, its outputs, their buffers."""

    role: str  # "model", or "backbone" / "head" of a taught product
    path: Path
    engine: Any
    context: Any
    input_name: str
    output_names: list[str]
    item_shape: tuple[int, ...]  # the input's shape without the batch
    max_batch: int
    buffers: dict[str, TensorBuffer] = field(default_factory=dict)  # those this stage allocated

    def set_batch(self, count: int, rebuild: str) -> None:
        if not self.context.set_input_shape(self.input_name, (count, *self.item_shape)):
            raise DaadError(f"{self.path} does not accept a batch of {count}: rebuild it with `{rebuild}`")

    def free(self) -> None:
        for buffer in self.buffers.values():
            buffer.free()
        self.buffers, self.context, self.engine = {}, None, None


def open_stage(trt: Any, cuda: Any, role: str, path: Path, engine: Any, given: dict[str, TensorBuffer]) -> Stage:
    """An execution context of `engine` with a buffer per tensor; an input named like a tensor in
    `given` (the backbone's features, for the head) is read straight from that device buffer."""
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [name for name in names if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT]
    if len(inputs) != 1:
        raise BundleError(f"{path} has inputs {inputs}; a daad engine has exactly one")
    largest = tuple(int(size) for size in engine.get_tensor_profile_shape(inputs[0], 0)[2])  # (min, opt, max)[max]
    stage = Stage(role, Path(path), engine, context, inputs[0], [name for name in names if name != inputs[0]],
                  largest[1:], largest[0])  # fmt: skip
    try:
        if not context.set_input_shape(stage.input_name, largest):  # outputs take their largest shapes: buffer sizes
            raise BundleError(f"{path} refuses its own largest input shape {list(largest)}: rebuild it")
        for name in names:
            shape = tuple(context.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            if name in given:
                _check_handed(given[name], name, shape, dtype, path)
                buffer = given[name]
            else:
                host = cuda.pagelocked_empty(shape, dtype)
                buffer = stage.buffers[name] = TensorBuffer(name, host, cuda.mem_alloc(host.nbytes))
            context.set_tensor_address(name, int(buffer.device))
    except BaseException:
        stage.free()  # what it allocated so far: the chain never holds a stage that failed
        raise
    return stage


def _check_handed(buffer: TensorBuffer, name: str, shape: tuple, dtype: np.dtype, path: Path) -> None:
    """The head must read the backbone's features as the backbone writes them: same item shape and type."""
    if buffer.host.dtype != dtype or tuple(buffer.host.shape[1:]) != tuple(shape[1:]):
        raise BundleError(f"{path} takes {name!r} as {dtype} {list(shape[1:])}, but the backbone engine gives "
                          f"{buffer.host.dtype} {list(buffer.host.shape[1:])}: the engines belong to different parts; "
                          "rebuild them with `daad build --bundle BUNDLE`")  # fmt: skip


class EngineChain:
    """Engines run one after another on one stream, each reading what the one before wrote on the device.

    One engine for an exported bundle; the shared backbone then a product's head for a taught one;
    the backbone alone for `daad teach`'s features. Copy in, `execute_async_v3` per engine, copy
    out the last engine's outputs, timed by CUDA events. The device's context is current only
    during each call, so one thread may open a chain and another run and close it.
    """

    def __init__(self, chain: list[tuple[str, Path]], rebuild: str, device: int = 0) -> None:
        trt, cuda = import_tensorrt()
        self._cuda, self.rebuild = cuda, rebuild
        self.stages: list[Stage] = []
        self._held: list[Lease[Path, LoadedEngine]] = []
        self._buffers: dict[str, TensorBuffer] = {}
        self._stream = None
        with cuda_errors(device):
            cuda.init()
            self._cuda_context = cuda.Device(device).retain_primary_context()
        try:
            with self.current():
                for role, path in chain:
                    held = ENGINES.lease(Path(path).resolve(), lambda: deserialise(trt, path, rebuild))
                    self._held.append(held)
                    stage = open_stage(trt, cuda, role, path, held.value.engine, self._buffers)
                    self.stages.append(stage)
                    self._buffers |= stage.buffers
                self._stream = cuda.Stream()
                self._events = [cuda.Event() for _ in range(len(self.stages) + 3)]
        except BaseException:
            self.close()
            raise
        first, last = self.stages[0], self.stages[-1]
        self.path, self.input_name, self.output_names = last.path, first.input_name, last.output_names
        self.max_batch, self.item_shape = min(stage.max_batch for stage in self.stages), first.item_shape

    @contextmanager
    def current(self) -> Iterator[None]:
        """The device's context current in the calling thread for the duration of one call."""
        self._cuda_context.push()
        try:
            yield
        finally:
            self._cuda_context.pop()

    def run(self, batch: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """(the last engine's outputs for these `len(batch)` items, copied; seconds per stage)."""
        count = len(batch)
        cuda, stream, events = self._cuda, self._stream, self._events
        first = self._buffers[self.input_name]
        np.copyto(first.host[:count], batch, casting="safe")
        with self.current():
            events[0].record(stream)
            cuda.memcpy_htod_async(first.device, first.host[:count], stream)
            events[1].record(stream)
            for index, stage in enumerate(self.stages):
                stage.set_batch(count, self.rebuild)
                stage.context.execute_async_v3(stream.handle)
                events[2 + index].record(stream)
            for name in self.output_names:
                cuda.memcpy_dtoh_async(self._buffers[name].host[:count], self._buffers[name].device, stream)
            events[-1].record(stream)
            stream.synchronize()
            timings = self._timings()
        return {name: np.array(self._buffers[name].host[:count]) for name in self.output_names}, timings

    def _timings(self) -> dict[str, float]:
        """Seconds of h2d, compute (every engine), d2h, and of each engine where there are several."""
        events = self._events
        seconds = {"h2d": events[1].time_since(events[0]) / 1000.0,
                   "compute": events[-2].time_since(events[1]) / 1000.0,
                   "d2h": events[-1].time_since(events[-2]) / 1000.0}  # fmt: skip
        if len(self.stages) > 1:
            for index, stage in enumerate(self.stages):
                seconds[stage.role] = events[2 + index].time_since(events[1 + index]) / 1000.0
        return seconds

    def close(self) -> None:
        """Free in reverse order of creation; safe to call twice and after a failed __init__."""
        if getattr(self, "_cuda_context", None) is None:
            return
        with self.current():  # TensorRT's and pycuda's objects are released while their context is current
            if self._stream is not None:
                self._stream.synchronize()
            for stage in reversed(self.stages):
                stage.free()  # its context before the engine it came from
            for held in reversed(self._held):
                held.release()
            self.stages, self._held, self._buffers, self._events, self._stream = [], [], {}, [], None
        self._cuda_context.detach()
        self._cuda_context = None


@contextmanager
def cuda_errors(device: int) -> Iterator[None]:
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
