"""A taught bundle run as its two part graphs: the shared backbone, then the product's memory head.

model.onnx is one graph, so a device that loads it per product loads the same backbone once per
product, and on TensorRT builds it into every product's engine. The parts model.json lists
(`parts`: backbone.onnx and head.onnx, written by `daad teach`) let it keep one backbone for every
product taught from that part and load only the small head per product. This is that scheme on
ONNX Runtime, what `open_backend` opens for a taught bundle: the backbone session is lent by
runtime/backends/backbone_lease.py (loaded by the first product that opens it, shared by every
open product taught from the same part), the head is this product's own session, and the features
pass from one to the other in host memory. It scores what model.onnx scores (the same nodes, split
at `features`); what the split costs in latency is measured by
`python -m experiments.teach --latency` (docs/TEACH.md).
"""

from __future__ import annotations

import time

import numpy as np

from runtime.backends.backbone_lease import lease_backbone
from runtime.backends.base import InferenceResult
from runtime.backends.onnxruntime_backend import open_session
from runtime.bundle import Bundle, checked_parts
from runtime.errors import DaadError

REMAKE = "teach the product again with `daad teach`"


class SplitOnnxRuntimeBackend:
    """The shared backbone session (frames -> features), then this product's head.onnx (features -> score, map)."""

    name = "onnxruntime"

    def __init__(self, bundle: Bundle, precision: str = "fp32", threads: int | None = None,
                 providers: list[str] | None = None) -> None:  # fmt: skip
        if precision != "fp32":
            raise DaadError(f"ONNX Runtime runs {bundle.root}'s parts at fp32 only, not {precision}")
        self.precision = precision
        paths = checked_parts(bundle)
        self.graphs = f"{paths['backbone'].name} + {paths['head'].name}"
        self.backbone = lease_backbone(paths["backbone"], bundle.metadata.parts["backbone"]["sha256"], threads,
                                       providers, REMAKE)  # fmt: skip
        try:
            self._head, self.providers = open_session(paths["head"], threads, list(self.backbone.key.providers),
                                                      fix=REMAKE)  # fmt: skip
        except BaseException:
            self.backbone.release()
            raise
        self._frames = self.backbone.value.get_inputs()[0].name
        self._features = self._head.get_inputs()[0].name
        self.input_shape = tuple(bundle.preprocess.shape)

    def infer(self, frames: np.ndarray) -> InferenceResult:
        """uint8 N x H x W x C -> scores N and anomaly maps N x 1 x H x W, timed per part."""
        if frames.dtype != np.uint8 or frames.ndim != 4 or tuple(frames.shape[1:]) != self.input_shape:
            raise ValueError(f"expected uint8 N x {' x '.join(map(str, self.input_shape))} frames from "
                             f"runtime.preprocess, got {frames.dtype} {frames.shape}")  # fmt: skip
        start = time.perf_counter()
        (features,) = self.backbone.value.run([self._features], {self._frames: frames})
        middle = time.perf_counter()
        scores, maps = self._head.run(["score", "anomaly_map"], {self._features: features})
        end = time.perf_counter()
        return InferenceResult(
            scores=np.asarray(scores, dtype=np.float32),
            anomaly_maps=np.asarray(maps, dtype=np.float32),
            timings={"backbone": middle - start, "head": end - middle, "compute": end - start},
        )

    def close(self) -> None:
        """Give the backbone back (the last product to close drops it) and drop the head."""
        self.backbone.release()
        self._head = None

    def __enter__(self) -> "SplitOnnxRuntimeBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
