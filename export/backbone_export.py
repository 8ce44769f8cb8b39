"""`daad export --backbone`: the frozen backbone as a bundle part (backbone.onnx + backbone.json)
that `daad teach` builds products on without PyTorch.

The graph is PatchFeatures (train/features/patch_features.py) traced alone: uint8 frames in, the
N x D x h x w patch features out, the exact features `daad train --model patchcore` fits its
memory on. It passes the same TensorRT-readiness check as a bundle, and ONNX Runtime's features
are compared with PyTorch's before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from export.onnx_export import DEFAULT_OPSET, exporter_versions, trace_frames_graph, written_opset
from export.onnx_stats import flops_per_image
from export.parity import synthetic_frames
from export.trt_support import assert_tensorrt_ready
from patchmemory.backbone_part import BACKBONE_FILE, FEATURES_NAME, BackbonePart, write_backbone_part
from runtime.backends.onnxruntime_backend import open_session
from runtime.errors import DaadError
from train.features.patch_features import FeatureConfig, FeatureConfigError, PatchFeatures, feature_preprocess

# Max feature error of ONNX Runtime against PyTorch, as a fraction of the features' std: the
# distances the memory measures are differences of features, so that is the scale that matters.
FEATURE_TOLERANCE = 1e-4


@dataclass
class BackboneExport:
    part: BackbonePart
    max_feature_error: float  # max |ORT - PyTorch| / std of the PyTorch features, on synthetic frames


def export_backbone(out: Path, config: FeatureConfig, height: int, width: int, channels: int,
                    opset: int = DEFAULT_OPSET) -> BackboneExport:  # fmt: skip
    """Write `out`/backbone.onnx and backbone.json; raise DaadError if a check fails (nothing written)."""
    preprocess = feature_preprocess(height, width, channels)
    try:
        module = PatchFeatures(config, preprocess)
    except FeatureConfigError as exc:
        raise DaadError(f"{exc}: choose another --image-size") from exc
    proto = trace_frames_graph(module, preprocess, (FEATURES_NAME,), opset, batch=None)
    assert_tensorrt_ready(proto, source=f"the backbone graph exported for {out / BACKBONE_FILE}")
    data = proto.SerializeToString()
    error = _feature_error(module, data, synthetic_frames(height, width, channels, count=4))
    if not error <= FEATURE_TOLERANCE:
        raise DaadError(f"the backbone graph's features differ from PyTorch's by {error:.2e} of their std "
                        f"(at most {FEATURE_TOLERANCE:.0e}); nothing was written to {out}")  # fmt: skip
    stride = config.stride
    part = BackbonePart(
        onnx_sha256="",
        preprocess=preprocess.to_dict(),
        features={"backbone": config.backbone, "levels": list(config.levels), "aggregation": config.aggregation},
        stride=stride,
        grid=[height // stride, width // stride],
        feature_dim=module.channels,
        parameters=sum(p.numel() for p in module.parameters()),
        flops_per_image=flops_per_image(proto),
        opset=written_opset(proto),
        exporter=exporter_versions(),
    )
    write_backbone_part(out, data, part)
    return BackboneExport(part, error)


def _feature_error(module: PatchFeatures, onnx_bytes: bytes, frames: np.ndarray) -> float:
    with torch.inference_mode():
        reference = module(torch.from_numpy(frames)).numpy()
    session, _ = open_session(onnx_bytes, fix="export the backbone again")
    candidate = session.run([FEATURES_NAME], {session.get_inputs()[0].name: frames})[0]
    return float(np.abs(candidate - reference).max() / max(float(reference.std()), 1e-12))
