"""Checkpoint -> bundle: model.onnx, checked and compared with PyTorch, then model.json.

Everything is exported and checked in a staging folder first; only a graph that TensorRT would
parse and that matches PyTorch reaches the bundle, model.onnx first, model.json last, each by
atomic rename. A failed export leaves the bundle folder as it was.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from export.onnx_export import DEFAULT_OPSET, export_onnx, exporter_versions, written_opset
from export.onnx_stats import flops_per_image, locate_memory_banks
from export.parity import ParityReport, measure_parity, synthetic_frames
from export.trt_support import assert_tensorrt_ready
from runtime.atomic import STALE_TEMP_S, atomic_write_bytes, is_temp_file_name
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.bundle import MODEL_FILE, Bundle, BundleMetadata, file_sha256, package_version, write_metadata
from runtime.errors import DaadError
from runtime.preprocess import PreprocessConfig
from train.families import family_for
from train.torch_backend import TorchBackend


STAGING_PREFIX = ".export-"  # tempfile adds 8 characters of [a-z0-9_]
_STAGING_NAME = re.compile(r"^" + re.escape(STAGING_PREFIX) + r"[a-z0-9_]{8}$")


def remove_stale_staging(folder: Path, older_than_s: float = STALE_TEMP_S) -> list[Path]:
    """Delete the staging folders killed exports left in `folder` (beside their bundle); return them.

    Only folders named as export names them, not touched for `older_than_s` (an export in flight,
    here or in another process, keeps its own), and holding nothing but what export stages there
    (model.onnx and its temp files): a folder of the user's that happens to match is left alone.
    """
    removed = []
    for path in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        if not _STAGING_NAME.match(path.name) or path.is_symlink() or not path.is_dir():
            continue
        try:
            entries = list(path.iterdir())
            newest = max([path.stat().st_mtime] + [entry.lstat().st_mtime for entry in entries])
            if newest > time.time() - older_than_s or not all(_staged(entry) for entry in entries):
                continue
            shutil.rmtree(path)
        except OSError:  # gone meanwhile, or not ours to remove: leave it
            continue
        removed.append(path)
    return removed


def _staged(entry: Path) -> bool:
    """A file export writes into its staging folder: model.onnx, or a temp file of its write."""
    return entry.is_file() and not entry.is_symlink() and (entry.name == MODEL_FILE or is_temp_file_name(entry.name))


@dataclass
class ParityImages:
    """The frames parity runs on, their labels when known (0 good, 1 defective), and whence."""

    frames: np.ndarray
    labels: np.ndarray | None
    source: str


@dataclass
class ExportResult:
    root: Path
    metadata: BundleMetadata
    parity: ParityReport


def export_bundle(
    model: nn.Module,
    preprocess: PreprocessConfig,
    out: Path,
    model_kind: str,
    model_config: dict[str, Any],
    training: dict[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
    batch: int | None = None,
    parity_images: ParityImages | None = None,
) -> ExportResult:
    """Export `model.score` to `out`/model.onnx + model.json; raise DaadError if any check fails."""
    model = model.eval()
    proto = export_onnx(model, preprocess, opset=opset, batch=batch)
    assert_tensorrt_ready(proto, source=f"the graph exported for {out / MODEL_FILE}")
    banks = {name: bank.detach().cpu().numpy() for name, bank in model.memory_banks().items()}
    data = proto.SerializeToString()
    draft = BundleMetadata(
        onnx_sha256="",
        preprocess=preprocess.to_dict(),
        model_kind=model_kind,
        model_config=model_config,
        input_shape=[batch or "batch", *preprocess.shape],
        channel_order=preprocess.channel_order,
        score_definition=family_for(model_kind).score_definition(model_config),
        opset=written_opset(proto),
        training=training or {},
        model_stats={
            "parameters": sum(p.numel() for p in model.parameters()),
            "flops_per_image": flops_per_image(proto),
            "memory_banks": locate_memory_banks(proto, banks),
        },
        package_version=package_version(),
        exporter={**exporter_versions(), "onnxruntime": package_version("onnxruntime")},
    )
    images = parity_images or ParityImages(synthetic_frames(*preprocess.shape), None, "synthetic frames")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=STAGING_PREFIX, dir=out.parent) as staging:
        atomic_write_bytes(Path(staging) / MODEL_FILE, data)
        report = _parity(model, Bundle(Path(staging), draft), images, batch)
    draft.parity = report.to_dict()
    draft.score_stats = report.candidate_scores  # what runtime.threshold checks a threshold against
    if not report.passed:
        raise DaadError(f"the exported graph does not match PyTorch; nothing was written to {out}.\n{report.summary()}")
    atomic_write_bytes(out / MODEL_FILE, data)
    draft.onnx_sha256 = file_sha256(out / MODEL_FILE)
    write_metadata(out, draft)
    return ExportResult(root=out, metadata=draft, parity=report)


def _parity(model: nn.Module, staged: Bundle, images: ParityImages, batch: int | None) -> ParityReport:
    frames, labels = images.frames, images.labels
    if batch is not None:  # a fixed-batch graph takes exactly `batch` frames per call
        usable = max(batch, len(frames) // batch * batch)
        keep = np.resize(np.arange(len(frames)), usable)
        frames, labels = frames[keep], (labels[keep] if labels is not None else None)
    with TorchBackend(model) as reference, OnnxRuntimeBackend(staged) as candidate:
        return measure_parity(reference, candidate, frames, labels, source=images.source, batch=batch or 8)
