"""The PyTorch model behind the runtime's Backend interface.

Evaluation of a checkpoint, export parity (ONNX Runtime against PyTorch) and `daad bench --backend torch`
need the PyTorch model to look like any other backend: uint8 N x H x W x C in, InferenceResult out.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from runtime.backends.base import InferenceResult
from runtime.errors import DataError


class TorchBackend:
    """Scores frames with `model.score` on the CPU (or the given device), in fp32."""

    name = "torch"
    precision = "fp32"

    def __init__(self, model: nn.Module, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> "TorchBackend":
        from train.checkpoint import load_checkpoint

        return cls(load_checkpoint(path, device=device).model, device=device)

    def infer(self, frames: np.ndarray) -> InferenceResult:
        if frames.dtype != np.uint8 or frames.ndim != 4:
            raise DataError(f"expected uint8 N x H x W x C frames from prepare_batch, got {frames.dtype} {frames.shape}")
        start = time.perf_counter()
        with torch.inference_mode():
            scores, maps = self.model.score(torch.from_numpy(np.ascontiguousarray(frames)).to(self.device))
            scores, maps = scores.float().cpu().numpy(), maps.float().cpu().numpy()
        return InferenceResult(scores=scores, anomaly_maps=maps, timings={"compute": time.perf_counter() - start})

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]

    def __enter__(self) -> "TorchBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
