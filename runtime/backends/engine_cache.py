"""Where TensorRT engines live, and which one may be loaded.

An engine is only valid for the ONNX graph, TensorRT version and GPU it was built with, so all
three are in its file name and in a JSON sidecar next to it:

    <folder>/<onnx sha256[:16]>_trt<version>_<gpu slug>_<precision>_b<max batch>.engine
    <folder>/<same stem>.json    {onnx_sha256, tensorrt_version, gpu_name, precision, batch, engine_sha256}

The graph is an EngineSource: a bundle's model.onnx (engines in BUNDLE/engines), or the two parts
of a bundle `daad teach` made. A taught product's memory head is built into BUNDLE/engines too,
always at fp32 (it is tiny, and its nearest-neighbour search is what reduced precision breaks);
its backbone part, the same graph for every product taught from it, is built once per device
into the device's engine folder (DEVICE_ENGINE_DIR_VARIABLE, default ~/.cache/daad-edge/engines),
so a new product needs only its head built, in seconds, and never the backbone again.

`find_engine` returns an engine only when its name and sidecar match the graph, this TensorRT
and this GPU and its bytes match the sidecar's sha256; anything else is stale and never loaded.
`daad build` writes here; the TensorRT backends read through here. No tensorrt import at module
level, so this runs (and is tested) anywhere.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from runtime.atomic import atomic_write_json
from runtime.backends.base import PRECISIONS
from runtime.bundle import Bundle, file_sha256, has_parts, listed_parts
from runtime.optional import require

ENGINE_SUFFIX = ".engine"
DEVICE_ENGINE_DIR_VARIABLE = "DAAD_ENGINE_DIR"
HEAD_PRECISION = "fp32"  # a memory head is built at fp32 whatever precision its backbone runs at


@dataclass(frozen=True)
class EngineSource:
    """One ONNX graph engines are built from, and the folder its engines are kept in."""

    onnx_path: Path
    sha256: str  # of the ONNX file, as model.json records it
    folder: Path
    role: str = "model"  # model, backbone or head: what messages call it


@dataclass(frozen=True)
class EngineSet:
    """The engines one bundle runs on: its whole model.onnx, or its backbone part and memory head."""

    whole: Path | None = None
    backbone: Path | None = None
    head: Path | None = None

    @property
    def split(self) -> bool:
        return self.whole is None

    @property
    def files(self) -> list[Path]:
        return [path for path in (self.whole, self.backbone, self.head) if path is not None]


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


def model_source(bundle: Bundle) -> EngineSource:
    """The bundle's model.onnx, whose engines live in BUNDLE/engines."""
    return EngineSource(bundle.onnx_path, bundle.sha256, bundle.engines_dir)


def part_sources(bundle: Bundle) -> tuple[EngineSource, EngineSource] | None:
    """(backbone, head) of a bundle `daad teach` made, as model.json's `parts` lists them; None for others."""
    if not has_parts(bundle.metadata):
        return None
    (backbone, backbone_sha256), (head, head_sha256) = listed_parts(bundle).values()
    return backbone_source(backbone, backbone_sha256), EngineSource(head, head_sha256, bundle.engines_dir, "head")


def backbone_source(onnx_path: Path, sha256: str) -> EngineSource:
    """A backbone part's graph: its engines are the device's, shared by every bundle taught from it."""
    return EngineSource(Path(onnx_path), sha256, device_engine_dir() / "backbones", "backbone")


def device_engine_dir() -> Path:
    """Engines shared by every bundle on this device: $DAAD_ENGINE_DIR, else the user's cache folder."""
    chosen = os.environ.get(DEVICE_ENGINE_DIR_VARIABLE)
    if chosen:
        return Path(chosen).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "daad-edge" / "engines"


def _source(target: Bundle | EngineSource) -> EngineSource:
    return target if isinstance(target, EngineSource) else model_source(target)


def slug(text: str) -> str:
    """'NVIDIA Jetson AGX Orin' -> 'nvidia-jetson-agx-orin' (safe in any file system)."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.") or "unknown"


def engine_path(target: Bundle | EngineSource, trt_version: str, gpu_name: str, precision: str, batch: int) -> Path:
    """The one file name an engine for this graph, TensorRT, GPU, precision and max batch has."""
    if batch < 1:
        raise ValueError(f"batch must be positive, got {batch}")
    source = _source(target)
    return source.folder / f"{_stem(source, trt_version, gpu_name, precision)}_b{batch}{ENGINE_SUFFIX}"


def _stem(source: EngineSource, trt_version: str, gpu_name: str, precision: str) -> str:
    """An engine's file name up to its max batch."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return f"{source.sha256[:16]}_trt{slug(trt_version)}_{slug(gpu_name)}_{precision}"


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
    target: Bundle | EngineSource, precision: str, batch: int, trt_version: str | None = None, gpu_name: str | None = None
) -> Path | None:
    """The engine built for this graph, TensorRT version and GPU, or None (then `daad build`).

    `trt_version` and `gpu_name` default to the installed TensorRT and GPU 0.
    """
    source = _source(target)
    trt_version = trt_version or tensorrt_version()
    gpu_name = gpu_name or current_gpu_name()
    path = engine_path(source, trt_version, gpu_name, precision, batch)
    expected = EngineRecord(source.sha256, trt_version, gpu_name, precision, batch)
    record = read_sidecar(path)
    if not path.is_file() or record is None:
        return None
    if _identity(record) != _identity(expected):
        return None
    if record.engine_sha256 != file_sha256(path):  # truncated or overwritten since it was built
        return None
    return path


def engine_for_batch(
    target: Bundle | EngineSource, precision: str, batch: int, trt_version: str | None = None, gpu_name: str | None = None
) -> Path | None:
    """An engine that takes `batch` frames: the one built for that batch, else the valid one built
    for the smallest larger batch (every profile `daad build` writes starts at 1 frame), or None.

    For the backend only: `daad build` asks `find_engine`, so it still builds the batch it is asked for.
    """
    source = _source(target)
    trt_version = trt_version or tensorrt_version()
    gpu_name = gpu_name or current_gpu_name()
    exact = find_engine(source, precision, batch, trt_version, gpu_name)
    if exact is not None or not source.folder.is_dir():
        return exact
    stem = _stem(source, trt_version, gpu_name, precision)
    built = sorted(int(match.group(1)) for path in source.folder.glob(f"{stem}_b*{ENGINE_SUFFIX}")
                   if (match := re.fullmatch(rf"{re.escape(stem)}_b(\d+){re.escape(ENGINE_SUFFIX)}", path.name)))
    for larger in (size for size in built if size > batch):
        found = find_engine(source, precision, larger, trt_version, gpu_name)
        if found is not None:
            return found
    return None


def engines_for(
    bundle: Bundle, precision: str, batch: int, trt_version: str | None = None, gpu_name: str | None = None
) -> EngineSet | None:
    """What the bundle runs on here: a taught bundle's backbone and head engines when both are built,
    else an engine of the whole model.onnx; None when neither is (then `daad build`)."""
    trt_version = trt_version or tensorrt_version()
    gpu_name = gpu_name or current_gpu_name()
    parts = part_sources(bundle)
    if parts is not None:
        backbone = engine_for_batch(parts[0], precision, batch, trt_version, gpu_name)
        head = engine_for_batch(parts[1], HEAD_PRECISION, batch, trt_version, gpu_name)
        if backbone is not None and head is not None:
            return EngineSet(backbone=backbone, head=head)
    whole = engine_for_batch(bundle, precision, batch, trt_version, gpu_name)
    return None if whole is None else EngineSet(whole=whole)


def _identity(record: EngineRecord) -> tuple[str, str, str, str, int]:
    return (record.onnx_sha256, record.tensorrt_version, record.gpu_name, record.precision, record.batch)


def stale_engines(bundle: Bundle) -> list[Path]:
    """Engines in BUNDLE/engines built from a graph the bundle no longer has: never loaded, safe to delete."""
    if not bundle.engines_dir.is_dir():
        return []
    parts = part_sources(bundle)
    current = tuple(sha[:16] for sha in [bundle.sha256, *([parts[1].sha256] if parts else [])])
    return sorted(p for p in bundle.engines_dir.glob(f"*{ENGINE_SUFFIX}") if not p.name.startswith(current))


def tensorrt_version() -> str:
    return str(require("tensorrt", "TensorRT engines").__version__)


def current_gpu_name(device: int = 0) -> str:
    """The CUDA device's name, as TensorRT engines are tied to it (via pycuda, the runtime's CUDA binding)."""
    cuda = require("pycuda.driver", "TensorRT engines")
    cuda.init()
    return str(cuda.Device(device).name())
