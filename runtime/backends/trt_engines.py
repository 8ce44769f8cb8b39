"""TensorRT engines loaded once per process, and one execution context with its buffers per user.

Products taught from one backbone part run the same backbone engine (runtime.backends.engine_cache).
A line that holds several of them open (the product on the line, the one a roll back returns
to, one loaded for a changeover) deserialises that engine once: `SharedEngines` counts who holds
it and drops it when the last one lets go. Execution contexts are not shared: each backend makes
its own from the engine, so the loop and a changeover's test frame never run one context from two
threads. Every call here runs with the device's CUDA context current (TensorRTBackend makes it so).

Name-based I/O of TensorRT 8.5 to 10.x: num_io_tensors, get_tensor_name/mode/dtype,
get_tensor_profile_shape, set_input_shape, get_tensor_shape, set_tensor_address.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

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
class _Held:
    engine: Any
    runtime: Any
    users: int = 0


class SharedEngines:
    """Deserialised engines by file, each loaded by its first user and dropped after its last."""

    def __init__(self) -> None:
        self._held: dict[Path, _Held] = {}
        self._lock = threading.Lock()

    def acquire(self, path: Path, load: Callable[[Path], tuple[Any, Any]]) -> Any:
        """The engine of `path`; `load(path)` -> (engine, runtime) runs only when no one holds it."""
        path = Path(path).resolve()
        with self._lock:
            held = self._held.get(path)
            if held is None:
                held = self._held[path] = _Held(*load(path))
            held.users += 1
            return held.engine

    def release(self, path: Path) -> None:
        path = Path(path).resolve()
        with self._lock:
            held = self._held.get(path)
            if held is None:
                return
            held.users -= 1
            if held.users <= 0:
                del self._held[path]  # the engine, then its runtime, go with their last reference

    def users(self, path: Path) -> int:
        """How many open backends hold the engine of `path` (0: not loaded)."""
        with self._lock:
            held = self._held.get(Path(path).resolve())
            return 0 if held is None else held.users


SHARED = SharedEngines()


def deserialise(trt: Any, path: Path, rebuild: str) -> tuple[Any, Any]:
    """(engine, runtime) of an engine file; an engine TensorRT cannot load names the command that rebuilds it."""
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
    if engine is None:
        raise BundleError(f"TensorRT cannot load {path} (built by another TensorRT version or GPU, or corrupt): "
                          f"rebuild it here with `{rebuild}`.")  # fmt: skip
    return engine, runtime


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
    if not context.set_input_shape(stage.input_name, largest):  # outputs take their largest shapes, to size buffers
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
    return stage


def _check_handed(buffer: TensorBuffer, name: str, shape: tuple, dtype: np.dtype, path: Path) -> None:
    """The head must read the backbone's features as the backbone writes them: same item shape and type."""
    if buffer.host.dtype != dtype or tuple(buffer.host.shape[1:]) != tuple(shape[1:]):
        raise BundleError(f"{path} takes {name!r} as {dtype} {list(shape[1:])}, but the backbone engine gives "
                          f"{buffer.host.dtype} {list(buffer.host.shape[1:])}: the engines belong to different parts; "
                          "rebuild them with `daad build --bundle BUNDLE`")  # fmt: skip
