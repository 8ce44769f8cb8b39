"""A taught bundle run as its two part graphs: the shared backbone, then the product's memory head.

model.onnx is one graph, so on TensorRT every product would be one engine, rebuilt for minutes
whenever a product is taught. The parts model.json lists (`parts`: backbone.onnx and head.onnx,
written by `daad teach`) let a device keep one backbone session or engine for every product and
load only the small head per product. This is that scheme on ONNX Runtime: two sessions, the
features handed from one to the other in host memory, and `switch` to another product taught
from the same part loads its head alone. It scores what model.onnx scores (the
same nodes, split at `features`); what the split costs in latency is measured by
`python -m experiments.teach --latency` (docs/TEACH.md).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from runtime.backends.base import InferenceResult
from runtime.backends.onnxruntime_backend import open_session
from runtime.bundle import METADATA_FILE, Bundle, file_sha256
from runtime.errors import BundleError, DaadError

PART_ROLES = ("backbone", "head")
REMAKE = "teach the product again with `daad teach`"


class SplitOnnxRuntimeBackend:
    """Two InferenceSessions: backbone.onnx (frames -> features), head.onnx (features -> score, map)."""

    name = "onnxruntime"

    def __init__(self, bundle: Bundle, precision: str = "fp32", threads: int | None = None,
                 providers: list[str] | None = None) -> None:  # fmt: skip
        if precision != "fp32":
            raise DaadError(f"ONNX Runtime runs {bundle.root}'s parts at fp32 only, not {precision}")
        self.precision, self._threads = precision, threads
        paths = part_paths(bundle)
        self._backbone, self.providers = open_session(paths["backbone"], threads, providers, fix=REMAKE)
        self.backbone_sha256 = bundle.metadata.parts["backbone"]["sha256"]
        self._frames = self._backbone.get_inputs()[0].name
        self.switch(bundle)

    def switch(self, bundle: Bundle) -> None:
        """Score `bundle`'s product from now on, loading only its head: the backbone stays loaded.

        Only a product taught from the same backbone part (the same backbone.onnx, by sha256) can
        share it; another is refused, to be opened as a backend of its own."""
        paths = part_paths(bundle)
        if bundle.metadata.parts["backbone"]["sha256"] != self.backbone_sha256:
            raise BundleError(f"{paths['backbone']} is not the backbone this backend runs (sha256 differs): "
                              f"{bundle.root} was taught from another backbone part; open it on its own")  # fmt: skip
        self._head, _ = open_session(paths["head"], self._threads, self.providers, fix=REMAKE)
        self._features = self._head.get_inputs()[0].name
        self.input_shape = tuple(bundle.preprocess.shape)

    def infer(self, frames: np.ndarray) -> InferenceResult:
        """uint8 N x H x W x C -> scores N and anomaly maps N x 1 x H x W, timed per part."""
        if frames.dtype != np.uint8 or frames.ndim != 4 or tuple(frames.shape[1:]) != self.input_shape:
            raise ValueError(f"expected uint8 N x {' x '.join(map(str, self.input_shape))} frames from "
                             f"runtime.preprocess, got {frames.dtype} {frames.shape}")  # fmt: skip
        start = time.perf_counter()
        (features,) = self._backbone.run([self._features], {self._frames: frames})
        middle = time.perf_counter()
        scores, maps = self._head.run(["score", "anomaly_map"], {self._features: features})
        end = time.perf_counter()
        return InferenceResult(
            scores=np.asarray(scores, dtype=np.float32),
            anomaly_maps=np.asarray(maps, dtype=np.float32),
            timings={"backbone": middle - start, "head": end - middle, "compute": end - start},
        )

    def close(self) -> None:
        self._backbone = self._head = None

    def __enter__(self) -> "SplitOnnxRuntimeBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def part_paths(bundle: Bundle) -> dict[str, Path]:
    """role -> path of each part graph model.json lists, each checked against its sha256."""
    parts = bundle.metadata.parts
    where = bundle.root / METADATA_FILE
    if not all(role in parts for role in PART_ROLES):
        raise BundleError(f"{where} lists no backbone and head parts: only bundles taught by `daad teach` have them; "
                          "run this bundle's model.onnx instead")  # fmt: skip
    paths = {}
    for role in PART_ROLES:
        path = bundle.root / str(parts[role].get("file", ""))
        if not path.is_file() or file_sha256(path) != parts[role].get("sha256"):
            raise BundleError(f"{path} is missing or does not match {where} (sha256): the part was changed or "
                              f"copied from another bundle; {REMAKE}")  # fmt: skip
        paths[role] = path
    return paths
