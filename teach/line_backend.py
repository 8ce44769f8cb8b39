"""The backend a taught product is calibrated on: the one the line will score it with.

A threshold is bound to the backend and precision that measured it (runtime.threshold.check_binding),
so a product calibrated on ONNX Runtime would be refused by a line on TensorRT. On a device whose
backbone part has its TensorRT engine (`daad build --backbone PART`, once per device), the line
runs a taught product as that shared engine plus the product's own memory head engine; teaching
there builds the head engine (seconds) and calibrates through both. Elsewhere, ONNX Runtime.
The backbone engine is never built here: it takes minutes, once per device, and belongs to
`daad build`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from patchmemory.backbone_part import BACKBONE_FILE, BackbonePart
from runtime.backends.base import Backend
from runtime.backends.engine_cache import backbone_source, engine_for_batch, part_sources, read_sidecar
from runtime.backends.options import BackendOptions
from runtime.backends.tensorrt_backend import import_tensorrt
from runtime.bundle import Bundle
from runtime.errors import DaadError


def line_engine(onnx_path: Path, sha256: str, options: BackendOptions, part_folder: Path) -> Path | None:
    """The device's TensorRT engine of this backbone at the line's precision, which the line will run
    (and teaching computes its features on); None where the line will run ONNX Runtime (asked for,
    or `auto` at fp32 without TensorRT, a GPU or the engine). --backend tensorrt, or fp16/int8
    (TensorRT only), without it is refused, before any work."""
    if options.backend == "onnxruntime":
        return None
    asked = "--backend tensorrt" if options.backend == "tensorrt" else None
    asked = asked or (f"--precision {options.precision}" if options.precision != "fp32" else None)  # TensorRT only
    try:
        import_tensorrt()
        engine = engine_for_batch(backbone_source(onnx_path, sha256), options.precision, 1)
    except DaadError:  # TensorRT not installed, or its engine cache unreadable
        if asked:
            raise
        return None
    except Exception as exc:  # no GPU or driver: as choose_backend, the CPU path still works
        if asked:
            raise DaadError(f"{asked} cannot reach the GPU ({exc}): check the NVIDIA driver, or teach with "
                            "--backend onnxruntime --precision fp32") from exc  # fmt: skip
        return None
    if engine is None and asked:
        raise DaadError(f"{asked} needs this device's {options.precision} engine of the backbone part {part_folder}: "
                        f"build it once with `daad build --backbone {part_folder} --precision {options.precision}` "
                        "(minutes), or teach with --backend onnxruntime --precision fp32")  # fmt: skip
    return engine


def features_engine(options: BackendOptions, part_folder: Path, part: BackbonePart) -> Path | None:
    """Before any fitting: the engine the features come from (None: ONNX Runtime), or the refusal."""
    return line_engine(Path(part_folder) / BACKBONE_FILE, part.onnx_sha256, options, part_folder)


def open_line_backend(bundle: Bundle, options: BackendOptions) -> Backend:
    """TensorRT, with the product's head engine built first, when the backbone engine is on this device
    (--backend auto or tensorrt); else ONNX Runtime. What `daad run --backend auto` will then pick."""
    backbone, _ = part_sources(bundle)
    engine = line_engine(backbone.onnx_path, backbone.sha256, options, bundle.root)
    if engine is None:
        return replace(options, backend="onnxruntime").open(bundle)
    from engines.engine_builder import build_head_engine

    record = read_sidecar(engine)
    batch = record.batch if record is not None else 1
    build_head_engine(bundle, batch)
    return replace(options, backend="tensorrt", batch=batch).open(bundle)
