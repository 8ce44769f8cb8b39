"""The backbone part: a frozen backbone as its own graph (frames -> patch features) and what
`daad teach` must know of it, in backbone.json beside backbone.onnx.

Made once, where PyTorch is (`daad export --backbone lite0 --image-size HxW --out DIR`), and
carried to the device; every product taught from it shares it, and a taught bundle carries a
copy, so a bundle is also a backbone part for the next product.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runtime.atomic import atomic_write_bytes, atomic_write_json
from runtime.bundle import file_sha256
from runtime.errors import BundleError
from runtime.preprocess import PreprocessConfig

PART_FORMAT_VERSION = 1
BACKBONE_FILE = "backbone.onnx"
BACKBONE_METADATA = "backbone.json"
FEATURES_NAME = "features"  # the backbone's output and the memory head's input
MAKE_ONE = "make one where PyTorch is with `daad export --backbone lite0 --image-size HxW --out DIR`"


@dataclass
class BackbonePart:
    """backbone.json: the graph's input (a bundle's frames) and its N x D x h x w features."""

    onnx_sha256: str
    preprocess: dict[str, Any]
    features: dict[str, Any]  # FeatureConfig as a dict: backbone, levels, aggregation
    stride: int  # input pixels per patch
    grid: list[int]  # h, w
    feature_dim: int  # D
    parameters: int = 0  # of the backbone graph, for model.json's model_stats
    flops_per_image: int = 0  # 2 x MACs of its Conv/MatMul/Gemm nodes (export.onnx_stats)
    opset: int = 17
    format_version: int = PART_FORMAT_VERSION
    exporter: dict[str, Any] = field(default_factory=dict)

    @property
    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.preprocess)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_backbone_part(folder: str | Path, onnx_bytes: bytes, part: BackbonePart) -> Path:
    """backbone.onnx, then backbone.json (each atomic): a reader never sees a json without its graph."""
    folder = Path(folder)
    atomic_write_bytes(folder / BACKBONE_FILE, onnx_bytes)
    part.onnx_sha256 = file_sha256(folder / BACKBONE_FILE)
    return atomic_write_json(folder / BACKBONE_METADATA, part.to_dict())


def read_backbone_part(folder: str | Path) -> BackbonePart:
    """The verified backbone part in `folder` (a part folder, or a bundle taught from one)."""
    folder = Path(folder)
    path = folder / BACKBONE_METADATA
    if not folder.is_dir():
        raise BundleError(f"backbone part {folder} does not exist: {MAKE_ONE}, or fix the path")
    if not path.is_file():
        raise BundleError(f"{path} is missing: {folder} is not a backbone part; {MAKE_ONE}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format_version") != PART_FORMAT_VERSION:
            raise BundleError(f"{path} has format version {data.get('format_version')!r}, this daad-edge reads "
                              f"{PART_FORMAT_VERSION}: {MAKE_ONE} with this version")  # fmt: skip
        part = BackbonePart(**{key: data[key] for key in BackbonePart.__dataclass_fields__ if key in data})
        PreprocessConfig.from_dict(part.preprocess)  # an impossible size or colour is refused now, not at a frame
    except BundleError:
        raise
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BundleError(f"{path} is corrupt ({exc}): {MAKE_ONE}") from exc
    onnx_path = folder / BACKBONE_FILE
    if not onnx_path.is_file():
        raise BundleError(f"{onnx_path} is missing beside {path}: copy the whole part folder, or {MAKE_ONE}")
    if file_sha256(onnx_path) != part.onnx_sha256:
        raise BundleError(f"{onnx_path} does not match {path} (sha256 differs): the file was changed or copied "
                          f"from another part; copy the whole part folder again, or {MAKE_ONE}")  # fmt: skip
    return part
