"""PyTorch model -> ONNX graph that scores uint8 frames, at the opset that was asked for.

The exported graph is `model.score` and nothing else: uint8 N x H x W x C in, `score` (N) and
`anomaly_map` (N x 1 x H x W) out; cast, scaling, normalisation, memory addressing and (for
daad+) the discriminator features run inside it. Memory banks are parameters, so they become
initializers holding the trained values; the row normalisation of the cosine runs on those
constants in the graph (TensorRT folds it at build time).

torch 2.13's default (dynamo) exporter writes opset 18, and asked for 17 it can stay at 18
without failing. TensorRT 8.5/8.6 (JetPack 5.1/6.0) stop at 17, so this uses the TorchScript
exporter (`dynamo=False`), which writes the requested opset, and checks what was written.
"""

from __future__ import annotations

import io
import warnings

import onnx
import torch
from torch import nn

from export.constant_pads import fold_pad_amounts
from runtime.bundle import INPUT_NAME, OUTPUT_NAMES
from runtime.errors import DaadError
from runtime.preprocess import PreprocessConfig

DEFAULT_OPSET = 17
EXPORTER = "torch.onnx.export(dynamo=False)"  # the TorchScript-based exporter


class ScoringGraph(nn.Module):
    """What model.onnx computes: the model's one score definition on uint8 frames."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        score, anomaly_map = self.model.score(frames)
        return score, anomaly_map


def export_onnx(
    model: nn.Module, preprocess: PreprocessConfig, opset: int = DEFAULT_OPSET, batch: int | None = None
) -> onnx.ModelProto:
    """Trace `model.score` into an ONNX model; `batch` None means a dynamic batch axis."""
    return trace_frames_graph(ScoringGraph(model), preprocess, OUTPUT_NAMES, opset, batch)


def trace_frames_graph(
    graph: nn.Module, preprocess: PreprocessConfig, output_names: tuple[str, ...], opset: int, batch: int | None
) -> onnx.ModelProto:
    """Trace any module of uint8 `frames` (the scoring graph, or a backbone part) at `opset`."""
    if batch is not None and batch < 1:
        raise DaadError(f"--batch must be 'dynamic' or a positive integer, got {batch}")
    graph = graph.eval()
    # Two frames when dynamic, so the tracer cannot specialise anything on a batch of one.
    example = torch.zeros((batch or 2, *preprocess.shape), dtype=torch.uint8)
    dynamic_axes = None if batch else {name: {0: "batch"} for name in (INPUT_NAME, *output_names)}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*will be removed.*")
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1.*")  # fold_pad_amounts does it
        try:
            _trace(graph, example, buffer, opset, output_names, dynamic_axes)
        except torch.onnx.errors.OnnxExporterError as exc:
            raise DaadError(
                f"the model cannot be exported to ONNX opset {opset}: {str(exc).splitlines()[0]} "
                "(see docs/EXPORT.md for the ops TensorRT accepts)"
            ) from exc
    proto = fold_pad_amounts(onnx.load_from_string(buffer.getvalue()))
    written = written_opset(proto)
    if written != opset:
        raise DaadError(
            f"asked for ONNX opset {opset}, but the exporter wrote opset {written} (TensorRT 8.5/8.6 parse up "
            "to 17): export with --opset 17, the default, or with a torch version whose exporter honours the opset."
        )
    return proto


def _trace(graph: nn.Module, example: torch.Tensor, buffer: io.BytesIO, opset: int, output_names: tuple[str, ...],
           dynamic_axes: dict | None) -> None:  # fmt: skip
    with torch.no_grad():
        torch.onnx.export(
            graph,
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )


def written_opset(proto: onnx.ModelProto) -> int:
    """The default-domain opset the file actually declares (not what was requested)."""
    versions = [entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")]
    if len(versions) != 1:
        raise DaadError(f"the exported graph declares {len(versions)} default-domain opsets; expected one")
    return versions[0]


def exporter_versions() -> dict[str, str]:
    return {"exporter": EXPORTER, "torch": torch.__version__, "onnx": onnx.__version__}
