"""Where TensorRT engines live in a bundle, and which one may be loaded.

An engine is only valid for the model.onnx, TensorRT version and GPU it was built with, so all
three are in its file name and in a JSON sidecar next to it:

    engines/<onnx sha256[:16]>_trt<version>_<gpu slug>_<precision>_b<max batch>.engine
    engines/<same stem>.json    {onnx_sha256, tensorrt_version, gpu_name, precision, batch, engine_sha256}

`find_engine` returns an engine only when its name and sidecar match the bundle, this TensorRT
and this GPU and its bytes match the sidecar's sha256; anything else is stale and never loaded.
`daad build` writes here; the TensorRT backend reads through here. No tensorrt import at module
level, so this runs (and is tested) anywhere.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from runtime.atomic import atomic_write_json
from runtime.backends.base import PRECISIONS
from runtime.bundle import Bundle, file_sha256
from runtime.optional import require

ENGINE_SUFFIX = ".engine"


@dataclass(frozen=True)
class EngineRecord:
    """The sidecar: what an engine was built from and for."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    precision: str
    batch: int
    engine_sha256: str = ""
    built: str = ""
    build_seconds: float = 0.0


def slug(text: str) -> str:
    """'NVIDIA Jetson AGX Orin' -> 'nvidia-jetson-agx-orin' (safe in any file system)."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.") or "unknown"


def engine_path(bundle: Bundle, trt_version: str, gpu_name: str, precision: str, batch: int) -> Path:
    """The one file name an engine for this model, TensorRT, GPU, precision and max batch has."""
    if batch < 1:
        raise ValueError(f"batch must be positive, got {batch}")
    return bundle.engines_dir / f"{_stem(bundle, trt_version, gpu_name, precision)}_b{batch}{ENGINE_SUFFIX}"


def _stem(bundle: Bundle, trt_version: str, gpu_name: str, precision: str) -> str:
    """An engine's file name up to its max batch."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return f"{bundle.sha256[:16]}_trt{slug(trt_version)}_{slug(gpu_name)}_{precision}"


def sidecar_path(engine: Path) -> Path:
    return engine.with_suffix(".json")


def write_sidecar(engine: Path, record: EngineRecord) -> Path:
    return atomic_write_json(sidecar_path(engine), asdict(record))


def read_sidecar(engine: Path) -> EngineRecord | None:
    """The sidecar of `engine`, or None when it is missing or unreadable."""
    try:
        data = json.loads(sidecar_path(engine).read_text(encoding="utf-8"))
        return EngineRecord(**{key: data[key] for key in EngineRecord.__dataclass_fields__ if key in data})
    except (OSError, ValueError, TypeError):
        return None


def find_engine(
    bundle: Bundle, precision: str, batch: int, trt_version: str | None = None, gpu_name: str | None = None
) -> Path | None:
    """The engine built for this bundle, TensorRT version and GPU, or None (then `daad build`).

    `trt_version` and `gpu_name` default to the installed TensorRT and GPU 0.
    """
    trt_version = trt_version or tensorrt_version()
    gpu_name = gpu_name or current_gpu_name()
    path = engine_path(bundle, trt_version, gpu_name, precision, batch)
    expected = EngineRecord(bundle.sha256, trt_version, gpu_name, precision, batch)
    record = read_sidecar(path)
    if not path.is_file() or record is None:
        return None
    if _identity(record) != _identity(expected):
        return None
    if record.engine_sha256 != file_sha256(path):  # truncated or overwritten since it was built
        return None
    return path


def engine_for_batch(
    bundle: Bundle, precision: str, batch: int, trt_version: str | None = None, gpu_name: str | None = None
) -> Path | None:
    """An engine that takes `batch` frames: the one built for that batch, else the valid one built
    for the smallest larger batch (every profile `daad build` writes starts at 1 frame), or None.

    For the backend only: `daad build` asks `find_engine`, so it still builds the batch it is asked for.
    """
    trt_version = trt_version or tensorrt_version()
    gpu_name = gpu_name or current_gpu_name()
    exact = find_engine(bundle, precision, batch, trt_version, gpu_name)
    if exact is not None or not bundle.engines_dir.is_dir():
        return exact
    stem = _stem(bundle, trt_version, gpu_name, precision)
    built = sorted(int(match.group(1)) for path in bundle.engines_dir.glob(f"{stem}_b*{ENGINE_SUFFIX}")
                   if (match := re.fullmatch(rf"{re.escape(stem)}_b(\d+){re.escape(ENGINE_SUFFIX)}", path.name)))
    for larger in (size for size in built if size > batch):
        found = find_engine(bundle, precision, larger, trt_version, gpu_name)
        if found is not None:
            return found
    return None


def _identity(record: EngineRecord) -> tuple[str, str, str, str, int]:
    return (record.onnx_sha256, record.tensorrt_version, record.gpu_name, record.precision, record.batch)


def stale_engines(bundle: Bundle) -> list[Path]:
    """Engines in the bundle built from another model.onnx: never loaded, safe to delete."""
    if not bundle.engines_dir.is_dir():
        return []
    return sorted(p for p in bundle.engines_dir.glob(f"*{ENGINE_SUFFIX}") if not p.name.startswith(bundle.sha256[:16]))


def tensorrt_version() -> str:
    return str(require("tensorrt", "TensorRT engines").__version__)


def current_gpu_name(device: int = 0) -> str:
    """The CUDA device's name, as TensorRT engines are tied to it (via pycuda, the runtime's CUDA binding)."""
    cuda = require("pycuda.driver", "TensorRT engines")
    cuda.init()
    return str(cuda.Device(device).name())
