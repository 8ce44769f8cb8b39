"""Patch features of prepared frames through the backbone part, on the runtime's backend.

On a device where the backbone part has its TensorRT engine (the one the line will run), the
features come from that engine, so the memory holds what the line computes; elsewhere from ONNX
Runtime with the ONNX Runtime backend's session settings. A batch at a time, rows kept image by
image in row-major patch order, as train.features.fit.patch_rows lays them out.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import numpy as np

from patchmemory.backbone_part import BACKBONE_FILE, BACKBONE_METADATA, FEATURES_NAME, MAKE_ONE, BackbonePart
from runtime.backends.onnxruntime_backend import open_session
from runtime.errors import BundleError
from runtime.optional import require


class BackboneRunner:
    """The backbone part's features: an ONNX Runtime session, or (`engine`) its TensorRT engine here."""

    def __init__(self, folder: Path, part: BackbonePart, threads: int | None = None, engine: Path | None = None) -> None:
        self.path = Path(folder) / BACKBONE_FILE
        self.shape = (part.feature_dim, *part.grid)  # D, h, w as backbone.json gives them
        self._close: Callable[[], None]
        if engine is not None:
            from runtime.backends.trt_engines import EngineChain

            chain = EngineChain([("backbone", engine)], f"daad build --backbone {folder}")
            self.name, self.path, self.max_batch = "tensorrt", engine, chain.max_batch
            self._features = lambda batch: chain.run(batch)[0][FEATURES_NAME]
            self._close = chain.close
        else:
            session, _ = open_session(self.path, threads, fix=MAKE_ONE)
            frames = session.get_inputs()[0].name
            self.name, self.max_batch = "onnxruntime", None
            self._features = lambda batch: session.run([FEATURES_NAME], {frames: batch})[0]
            self._close = lambda: None

    def rows(self, images: np.ndarray, batch_size: int, progress: bool) -> np.ndarray:
        """uint8 N x H x W x C -> float32 (N h w) x D patch rows."""
        tqdm = require("tqdm", "progress bars").tqdm
        batch_size = min(batch_size, self.max_batch or batch_size)
        chunks = []
        with tqdm(total=len(images), desc="features", unit="image", file=sys.stderr, disable=not progress) as bar:
            for start in range(0, len(images), batch_size):
                features = self._features(images[start : start + batch_size])
                if tuple(features.shape[1:]) != self.shape:
                    raise BundleError(f"{self.path} gives features of {list(features.shape[1:])} where "
                                      f"{BACKBONE_METADATA} says {list(self.shape)}: the part's files do not belong "
                                      f"together; {MAKE_ONE}")  # fmt: skip
                chunks.append(features.transpose(0, 2, 3, 1).reshape(-1, features.shape[1]))
                bar.update(len(features))
        return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)

    def close(self) -> None:
        self._close()
