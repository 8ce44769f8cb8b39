"""Bundle -> TensorRT engines, built on the device that will run them.

A bundle `daad export` wrote is one engine of its model.onnx. A bundle `daad teach` wrote is two:
its backbone part, built once per device and shared by every product taught from it, and its
small memory head, always at fp32 (runtime.backends.engine_cache says where each is kept). So the
minutes of a backbone build are spent once per device, and a new product costs a head build.

Torch-free (a Jetson has no PyTorch); tensorrt and pycuda are imported only when a build
starts. Written against the name-based API shared by TensorRT 8.5 to 10.x: ONNX parser,
`set_memory_pool_limit`, an optimisation profile for the graph's one input,
`build_serialized_network`. A matching engine is reused, never rebuilt.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from engines.int8_data import CalibrationSet, calibration_cache_path, load_calibration_set
from patchmemory.backbone_part import BACKBONE_FILE, read_backbone_part
from runtime.atomic import atomic_write_bytes
from runtime.bundle import Bundle, checked_parts, open_bundle
from runtime.backends.engine_cache import (
    HEAD_PRECISION,
    PRECISIONS,
    EngineRecord,
    EngineSet,
    EngineSource,
    backbone_source,
    current_gpu_name,
    engine_path,
    find_engine,
    model_source,
    part_sources,
    slug,
    write_sidecar,
)
from runtime.errors import DaadError
from runtime.optional import require
from runtime.preprocess import PreprocessConfig

HARDWARE = "an NVIDIA GPU, or a Jetson with JetPack (which ships TensorRT)"
DEFAULT_WORKSPACE_MB = 1024


def build_engine(
    bundle: Bundle | Path,
    precision: str = "fp32",
    calib_data: Path | None = None,
    batch: int = 1,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
) -> Path:
    """Build (or reuse) the engine of the bundle's whole model.onnx for this precision and max batch on this GPU."""
    bundle = _opened(bundle)
    _check_request(precision, calib_data, batch, workspace_mb)
    return _build_source(model_source(bundle), precision, batch, workspace_mb, calib_data, bundle.preprocess)


def build_bundle_engines(
    bundle: Bundle | Path,
    precision: str = "fp32",
    calib_data: Path | None = None,
    batch: int = 1,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    whole: bool = False,
) -> EngineSet:
    """The engines the bundle runs on: a taught bundle's backbone (shared by the device) and head, or
    the whole model.onnx (any other bundle, or `whole`); each reused when already built."""
    bundle = _opened(bundle)
    parts = part_sources(bundle)
    if parts is None or whole:
        return EngineSet(whole=build_engine(bundle, precision, calib_data, batch, workspace_mb))
    _check_request(precision, calib_data, batch, workspace_mb)
    checked_parts(bundle)  # before a build reads them
    backbone, head = parts
    return EngineSet(backbone=_build_source(backbone, precision, batch, workspace_mb, calib_data, bundle.preprocess),
                     head=_build_source(head, HEAD_PRECISION, batch, workspace_mb))  # fmt: skip


def build_backbone_engine(
    part_folder: Path,
    precision: str = "fp32",
    calib_data: Path | None = None,
    batch: int = 1,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
) -> Path:
    """The device's engine of a backbone part (before any product is taught from it), or the one already built."""
    _check_request(precision, calib_data, batch, workspace_mb)
    part = read_backbone_part(part_folder)  # checks backbone.onnx against backbone.json's sha256
    source = backbone_source(Path(part_folder) / BACKBONE_FILE, part.onnx_sha256)
    return _build_source(source, precision, batch, workspace_mb, calib_data, part.preprocess_config)


def build_head_engine(bundle: Bundle | Path, batch: int = 1, workspace_mb: int = DEFAULT_WORKSPACE_MB) -> Path:
    """A taught product's memory head engine alone (fp32; seconds), for the backbone engine already on the device."""
    bundle = _opened(bundle)
    parts = part_sources(bundle)
    if parts is None:
        raise DaadError(f"{bundle.root} was not taught by `daad teach`: it has no memory head to build")
    _check_request(HEAD_PRECISION, None, batch, workspace_mb)
    checked_parts(bundle)
    return _build_source(parts[1], HEAD_PRECISION, batch, workspace_mb)


def _opened(bundle: Bundle | Path) -> Bundle:
    return bundle if isinstance(bundle, Bundle) else open_bundle(bundle)


def _check_request(precision: str, calib_data: Path | None, batch: int, workspace_mb: int) -> None:
    """Refuse an impossible build before TensorRT is even imported."""
    if precision not in PRECISIONS:
        raise DaadError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and calib_data is None:
        raise DaadError(
            "int8 needs calibration images: pass --calib-data DIR with good parts of this product "
            "(a folder of images or an MVTec AD data set, whose train/good is used). Uncalibrated INT8 is never built."
        )
    if calib_data is not None and precision != "int8":
        warnings.warn(f"--calib-data is used by int8 only; ignored for {precision}", stacklevel=3)
    if batch < 1 or workspace_mb < 1:
        raise DaadError(f"--batch and --workspace-mb must be positive, got {batch} and {workspace_mb}")


def _build_source(source: EngineSource, precision: str, batch: int, workspace_mb: int,
                  calib_data: Path | None = None, preprocess: PreprocessConfig | None = None) -> Path:  # fmt: skip
    """The engine of one graph: the matching one already built, or a new one with its sidecar (int8:
    calibrated on `calib_data` prepared as `preprocess` frames, read only when a build is needed)."""
    trt = require("tensorrt", f"building TensorRT engines; needs {HARDWARE}")
    gpu_name = current_gpu_name()
    existing = find_engine(source, precision, batch, trt_version=trt.__version__, gpu_name=gpu_name)
    if existing is not None:
        return existing
    target = engine_path(source, trt.__version__, gpu_name, precision, batch)
    calibration = None
    if precision == "int8" and calib_data is not None and preprocess is not None:
        calibration = load_calibration_set(calib_data, preprocess, batch)
    how_long = "seconds" if source.role == "head" else "minutes; it is built once and reused"
    print(f"building the {precision} TensorRT engine of {source.onnx_path} (batch up to {batch}); this takes "
          f"{how_long} ...", flush=True)  # fmt: skip
    started = time.perf_counter()
    timing = timing_cache_path(source.folder, trt.__version__, gpu_name)
    engine = _build(trt, source, precision, batch, workspace_mb, target, timing, calibration)
    atomic_write_bytes(target, engine)
    write_sidecar(
        target,
        EngineRecord(
            onnx_sha256=source.sha256,
            tensorrt_version=trt.__version__,
            gpu_name=gpu_name,
            precision=precision,
            batch=batch,
            engine_sha256=hashlib.sha256(engine).hexdigest(),
            built=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            build_seconds=round(time.perf_counter() - started, 1),
        ),
    )
    return target


def _build(
    trt: ModuleType,
    source: EngineSource,
    precision: str,
    batch: int,
    workspace_mb: int,
    target: Path,
    timing_path: Path,
    calibration: CalibrationSet | None,
) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(source.onnx_path.read_bytes()):
        errors = "\n  ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise DaadError(f"TensorRT {trt.__version__} cannot parse {source.onnx_path}:\n  {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    profile = builder.create_optimization_profile()
    name, item = _input_of(network, source, batch)
    profile.set_shape(name, (1, *item), (batch, *item), (batch, *item))
    config.add_optimization_profile(profile)
    timing_cache = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing_cache, False)
    if precision in ("fp16", "int8"):
        _set_reduced_precision(trt, builder, config, network, precision)
    context = None
    if calibration is not None:
        config.set_calibration_profile(profile)
        calibrator, context = _entropy_calibrator(trt, calibration, calibration_cache_path(target))
        config.int8_calibrator = calibrator
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if context is not None:
            context.pop()
    if serialized is None:
        raise DaadError(f"TensorRT {trt.__version__} failed to build {target.name}; its log above says why")
    atomic_write_bytes(timing_path, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def _input_of(network: Any, source: EngineSource, batch: int) -> tuple[str, tuple[int, ...]]:
    """The graph's one input: its name and the shape of one item (a frame, or one frame's features)."""
    if network.num_inputs != 1:
        raise DaadError(f"{source.onnx_path} has {network.num_inputs} inputs; a daad graph has exactly one")
    tensor = network.get_input(0)
    shape = [int(size) for size in tensor.shape]
    if shape[0] not in (-1, batch):
        raise DaadError(f"{source.onnx_path} was exported with a fixed batch of {shape[0]}: build with --batch {shape[0]}")
    if any(size < 1 for size in shape[1:]):
        raise DaadError(f"{source.onnx_path} takes {tensor.name!r} of shape {shape}: only the batch may be dynamic; "
                        "export or teach it again")  # fmt: skip
    return tensor.name, tuple(shape[1:])


def timing_cache_path(folder: Path, trt_version: str, gpu_name: str) -> Path:
    """Kernel timings measured by earlier builds on this GPU and TensorRT; they make rebuilds fast."""
    return Path(folder) / f"timing_trt{slug(trt_version)}_{slug(gpu_name)}.cache"


def _network_flags(trt: ModuleType) -> int:
    """EXPLICIT_BATCH is required before TensorRT 10 and deprecated (always on) from 10."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    if flag is None or int(trt.__version__.split(".")[0]) >= 10:
        return 0
    return 1 << int(flag)


def _set_reduced_precision(trt: ModuleType, builder: Any, config: Any, network: Any, precision: str) -> None:
    """FP16/INT8 kernels where they are safe; memory searches, softmax, reductions and roots stay in fp32.

    The cosine addressing (row norms: ReduceSum + Sqrt) and the softmax over memory slots are
    where fp16 loses the ranking of near-equal similarities; patchcore's nearest-neighbour
    search (|q|^2 - 2 q.m + |m|^2: a MatMul, then ReduceMin) cancels terms of ~2500 to find
    distances of ~15. Those layers (softmax, reduce, unary, matrix multiply) are pinned to fp32;
    the backbone's convolutions are what fp16 and INT8 speed up.
    """
    flag = getattr(trt.BuilderFlag, precision.upper(), None)
    if flag is None:  # TensorRT 11 removed weakly-typed precision flags
        raise DaadError(f"TensorRT {trt.__version__} has no {precision} builder flag; daad build supports TensorRT 8.5-10.x")
    # Deprecated from 10.5, so absent means "assume fast".
    if precision == "fp16" and not getattr(builder, "platform_has_fast_fp16", True):
        warnings.warn("this GPU has no fast fp16: the fp16 engine may be no faster than fp32", stacklevel=3)
    config.set_flag(flag)
    constraint = next(
        getattr(trt.BuilderFlag, name)
        for name in ("PREFER_PRECISION_CONSTRAINTS", "OBEY_PRECISION_CONSTRAINTS", "STRICT_TYPES")
        if hasattr(trt.BuilderFlag, name)
    )
    config.set_flag(constraint)
    pinned = {trt.LayerType.SOFTMAX, trt.LayerType.REDUCE, trt.LayerType.UNARY, trt.LayerType.MATRIX_MULTIPLY}
    if hasattr(trt.LayerType, "NORMALIZATION"):  # TensorRT >= 8.6
        pinned.add(trt.LayerType.NORMALIZATION)
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if layer.type in pinned and all(output.dtype == trt.float32 for output in outputs):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)


def _entropy_calibrator(trt: ModuleType, calibration: CalibrationSet, cache: Path) -> tuple[Any, Any]:
    """An IInt8EntropyCalibrator2 over `calibration`'s uint8 batches, with its cache file at `cache`."""
    cuda = require("pycuda.driver", f"INT8 calibration; needs {HARDWARE}")
    cuda.init()
    context = cuda.Device(0).retain_primary_context()
    context.push()

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = calibration.batches()
            self._device_input = cuda.mem_alloc(calibration.images[: calibration.batch].nbytes)

        def get_batch_size(self) -> int:
            return calibration.batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self._batches, None)
            if batch is None:
                return None
            cuda.memcpy_htod(self._device_input, batch)
            return [int(self._device_input)]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data: Any) -> None:
            atomic_write_bytes(cache, bytes(data))

    return EntropyCalibrator(), context

