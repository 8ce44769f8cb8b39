"""Patch features of prepared frames through the backbone part, on the runtime's ONNX Runtime.

The same session settings as the ONNX Runtime backend (runtime.backends.onnxruntime_backend),
so features are computed as the line will compute them; a batch at a time, rows kept image by
image in row-major patch order, as train.features.fit.patch_rows lays them out.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from patchmemory.backbone_part import BACKBONE_FILE, BACKBONE_METADATA, FEATURES_NAME, MAKE_ONE, BackbonePart
from runtime.backends.onnxruntime_backend import open_session
from runtime.errors import BundleError
from runtime.optional import require


class BackboneRunner:
    """One ONNX Runtime session over a backbone part's backbone.onnx."""

    def __init__(self, folder: Path, part: BackbonePart, threads: int | None = None) -> None:
        self.path = Path(folder) / BACKBONE_FILE
        self.shape = (part.feature_dim, *part.grid)  # D, h, w as backbone.json gives them
        self._session, _ = open_session(self.path, threads, fix=MAKE_ONE)
        self._input = self._session.get_inputs()[0].name

    def rows(self, images: np.ndarray, batch_size: int, progress: bool) -> np.ndarray:
        """uint8 N x H x W x C -> float32 (N h w) x D patch rows."""
        tqdm = require("tqdm", "progress bars").tqdm
        chunks = []
        with tqdm(total=len(images), desc="features", unit="image", file=sys.stderr, disable=not progress) as bar:
            for start in range(0, len(images), batch_size):
                features = self._session.run([FEATURES_NAME], {self._input: images[start : start + batch_size]})[0]
                if tuple(features.shape[1:]) != self.shape:
                    raise BundleError(f"{self.path} gives features of {list(features.shape[1:])} where "
                                      f"{BACKBONE_METADATA} says {list(self.shape)}: the part's files do not belong "
                                      f"together; {MAKE_ONE}")  # fmt: skip
                chunks.append(features.transpose(0, 2, 3, 1).reshape(-1, features.shape[1]))
                bar.update(len(features))
        return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)

    def close(self) -> None:
        self._session = None
