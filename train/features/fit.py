"""Fitting a feature memory: one pass of the frozen backbone over the good images, then the
memory chosen from their patches. No gradient, no epochs: minutes, not hours.

No test-split metric is computed here: nothing in the fit may look at the defects.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runtime.optional import require
from runtime.preprocess import PreprocessConfig
from train.checkpoint import save_checkpoint
from train.config import TrainConfig
from train.fitting import CHECKPOINT_FILE, TrainResult, batches


def patch_rows(features: torch.Tensor) -> np.ndarray:
    """N x D x h x w features -> (N h w) x D float32 rows, image by image, row-major."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).cpu().numpy()


def extract_features(model: Any, images: np.ndarray, train_config: TrainConfig, progress: bool) -> torch.Tensor:
    """Every good image's patch features, N x D x h x w, a batch at a time with a progress bar."""
    tqdm = require("tqdm", "progress bars").tqdm
    device = next(model.buffers()).device
    chunks = []
    with torch.inference_mode(), tqdm(total=len(images), desc="features", unit="image", file=sys.stderr,
                                      disable=not progress) as bar:  # fmt: skip
        for frames in batches(images, train_config.batch_size, device):
            chunks.append(model.patch_features(frames).cpu())
            bar.update(len(frames))
    return torch.cat(chunks)


def save_fit(out_dir: Path, model: Any, config: Any, train_config: TrainConfig, preprocess: PreprocessConfig,
             meta: dict[str, Any], record: dict[str, Any], summary: str) -> TrainResult:  # fmt: skip
    checkpoint = Path(out_dir) / CHECKPOINT_FILE
    save_checkpoint(checkpoint, model, config, preprocess, train_config, extra={"meta": {**meta, "history": [record]}})
    return TrainResult(checkpoint, [record], summary=f"{summary}: {checkpoint}")
