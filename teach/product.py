"""A taught product's bundle: the memory head on the backbone part, written as an ordinary bundle.

    BUNDLE/model.onnx     backbone + head fused: what every verb, tool and engine build reads
    BUNDLE/model.json     as `daad export` writes it (kind patchcore), plus `parts`
    BUNDLE/backbone.onnx  the backbone part, as it came (with backbone.json: the bundle is a part too)
    BUNDLE/head.onnx      this product's memory head alone: features -> score, anomaly_map

The two part graphs let a device keep one backbone engine for every product and build only the
small head per product (docs/TEACH.md); model.onnx stays the one graph of the bundle contract.
Files are written atomically, the graphs first and model.json last, so a reader never finds a
model.json that describes graphs that are not there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from patchmemory.backbone_part import BACKBONE_FILE, FEATURES_NAME, BackbonePart, write_backbone_part
from patchmemory.coreset import DEFAULT_MEMORY_SIZE
from patchmemory.head import DEFAULT_MAP_SIGMA, MEMORY_INITIALIZER, HeadConfig, build_head, fuse, head_flops, score_definition
from runtime.atomic import atomic_write_bytes
from runtime.backends.onnxruntime_backend import open_session
from runtime.bundle import (
    INPUT_NAME,
    METADATA_FILE,
    MODEL_FILE,
    BundleMetadata,
    file_sha256,
    package_version,
    read_metadata,
    write_metadata,
)
from runtime.errors import BundleError
from runtime.optional import require

HEAD_FILE = "head.onnx"
TAUGHT_BY = "daad teach"


@dataclass(frozen=True)
class ProductSettings:
    """What the product's memory is made of: its size, the map's smoothing, the coreset's seed."""

    memory_size: int = DEFAULT_MEMORY_SIZE
    map_sigma: float = DEFAULT_MAP_SIGMA
    seed: int = 0

    def model_config(self, part: BackbonePart) -> dict[str, Any]:
        """model.json's model_config: the dict PatchCoreConfig.to_dict writes for the same product."""
        return {"kind": "patchcore", "features": dict(part.features), "memory_size": self.memory_size,
                "map_sigma": self.map_sigma}  # fmt: skip


@dataclass
class ProductGraphs:
    backbone: bytes  # backbone.onnx as the part holds it
    head: Any  # onnx.ModelProto
    model: Any  # onnx.ModelProto: backbone and head fused


def product_graphs(part_folder: Path, part: BackbonePart, memory: np.ndarray, map_sigma: float) -> ProductGraphs:
    """The head for `memory` and the fused model.onnx, on the part's own opset and IR version."""
    onnx = require("onnx", "writing the memory head")
    backbone_bytes = (Path(part_folder) / BACKBONE_FILE).read_bytes()
    backbone = onnx.load_from_string(backbone_bytes)
    head = build_head(memory, HeadConfig.of_part(part, map_sigma), part.opset, backbone.ir_version)
    return ProductGraphs(backbone_bytes, head, fuse(backbone, head))


def head_scores(head: Any, rows: np.ndarray, part: BackbonePart, batch_size: int) -> np.ndarray:
    """Scores of patch rows (image by image, as BackboneRunner.rows gives them) through the head alone."""
    h, w = part.grid
    features = rows.reshape(-1, h, w, part.feature_dim).transpose(0, 3, 1, 2)
    session, _ = open_session(head.SerializeToString(), fix="teach the product again")
    batches = range(0, len(features), batch_size)
    feed = [{FEATURES_NAME: np.ascontiguousarray(features[start : start + batch_size])} for start in batches]
    return np.concatenate([session.run(["score"], inputs)[0] for inputs in feed])


# The fused graph runs the head's very nodes after the backbone's, in the same runtime: its scores
# may differ from the head's own by rounding only (1e-6 of the score was seen). More means the
# fusion or the files went wrong, and the threshold would be set on a graph that is not the product.
ASSEMBLY_TOLERANCE = 1e-4


def check_assembly(head: np.ndarray, fused: np.ndarray, model: Path, refuse: bool = True) -> float:
    """Refuse a model.onnx that does not score the held-out parts as its own head did; the error seen.

    `refuse=False` where the bundle scored on TensorRT: its kernels (and fp16/int8) differ from ONNX
    Runtime's by more than rounding, and the threshold is set on the engines' own scores anyway."""
    error = float(np.max(np.abs(fused - head)) / max(float(np.max(np.abs(head))), 1e-12)) if head.size else 0.0
    if refuse and not error <= ASSEMBLY_TOLERANCE:
        raise BundleError(f"{model} scores the held-out parts {error:.1e} (relative) away from its own memory head "
                          f"(at most {ASSEMBLY_TOLERANCE:.0e}): no threshold was written; teach the product again")  # fmt: skip
    return error


def check_replaceable(out: Path) -> None:
    """Refuse to write over a bundle that `daad teach` did not make (an exported product is not ours to replace)."""
    if not (Path(out) / METADATA_FILE).is_file():
        return
    try:
        metadata = read_metadata(out)
    except BundleError as exc:
        raise BundleError(f"{out} holds a bundle that cannot be read ({exc}); teach into a new folder") from exc
    if metadata.training.get("taught_by") != TAUGHT_BY:
        raise BundleError(f"{out} holds a bundle made by `daad export` ({metadata.model_kind}): teaching would replace "
                          "its model; choose a new folder for --out")  # fmt: skip


def write_product(out: Path, part: BackbonePart, graphs: ProductGraphs, settings: ProductSettings,
                  training: dict[str, Any], score_stats: dict[str, Any]) -> BundleMetadata:  # fmt: skip
    """The part graphs, model.onnx, then model.json, each atomically."""
    out = Path(out)
    write_backbone_part(out, graphs.backbone, BackbonePart(**part.to_dict()))
    atomic_write_bytes(out / HEAD_FILE, graphs.head.SerializeToString())
    atomic_write_bytes(out / MODEL_FILE, graphs.model.SerializeToString())
    preprocess = part.preprocess_config
    memory = graphs.head.graph.initializer[0]
    rows, dim = int(memory.dims[1]), int(memory.dims[0])
    config = settings.model_config(part)
    onnx = require("onnx", "writing the memory head")
    metadata = BundleMetadata(
        onnx_sha256=file_sha256(out / MODEL_FILE),
        preprocess=preprocess.to_dict(),
        model_kind="patchcore",
        model_config=config,
        input_name=INPUT_NAME,
        input_shape=["batch", *preprocess.shape],
        channel_order=preprocess.channel_order,
        score_definition=score_definition(config),
        opset=part.opset,
        training=training,
        model_stats={
            "parameters": part.parameters + rows * dim,
            "flops_per_image": part.flops_per_image + head_flops(HeadConfig.of_part(part, settings.map_sigma), rows),
            "memory_banks": {"patches": {"initializer": MEMORY_INITIALIZER, "slots": rows, "dim": dim,
                                         "rows": "transposed"}},  # fmt: skip
        },
        score_stats=score_stats,
        package_version=package_version(),
        exporter={"exporter": f"{TAUGHT_BY} (onnx.helper, onnx.compose)", "onnx": onnx.__version__,
                  "onnxruntime": package_version("onnxruntime"), "backbone_part": part.exporter},  # fmt: skip
        parts={"backbone": {"file": BACKBONE_FILE, "sha256": file_sha256(out / BACKBONE_FILE)},
               "head": {"file": HEAD_FILE, "sha256": file_sha256(out / HEAD_FILE)}},  # fmt: skip
    )
    write_metadata(out, metadata)
    return metadata
