"""What every family's fit shares: the run folder's checkpoint, the device, the good images.

A pixel family trains by gradient steps (train/pixel/trainer.py), a feature family fits in one
pass over the good images (train/features/fit.py); both read their data and write their run
folder the same way, through here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from runtime.dataset import ImageSet, find_samples, load_images, summarize
from runtime.errors import DaadError
from runtime.images import read_image
from runtime.preprocess import PreprocessConfig

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class TrainResult:
    checkpoint: Path
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch (a fit: one)
    summary: str = ""  # one line for the command line: what was trained or fitted

    @property
    def final_auroc(self) -> float | None:
        return self.history[-1].get("val_image_auroc") if self.history else None


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise DaadError("--device cuda was asked for but PyTorch sees no CUDA GPU: use --device cpu")
    return torch.device(name)


def batches(images: np.ndarray, batch_size: int, device: torch.device, order: np.ndarray | None = None) -> Iterator[torch.Tensor]:
    """uint8 N x H x W x C numpy -> uint8 tensors of `batch_size` frames, in `order` if given."""
    order = np.arange(len(images)) if order is None else order
    for start in range(0, len(order), batch_size):
        yield torch.from_numpy(images[order[start : start + batch_size]]).to(device)


def detect_channels(root: str | Path) -> int:
    """1 when the first training image is stored grey (a mono camera), else 3."""
    for sample in find_samples(Path(root), "train"):
        image = read_image(sample.path)
        if image is not None:
            return 1 if image.ndim == 2 or image.shape[2] == 1 else 3
    raise DaadError(f"no readable training image under {root}: check the data set folder")


def load_split(root: Path, split: str, preprocess: PreprocessConfig, progress: bool) -> ImageSet:
    return load_images(find_samples(root, split), preprocess, progress=progress)


def load_training_images(root: Path, preprocess: PreprocessConfig, progress: bool) -> ImageSet:
    """The good training images of `root`; fewer than 2 usable ones is an error every family shares."""
    train_set = load_split(root, "train", preprocess, progress)
    if len(train_set.images) < 2:
        raise DaadError(f"{root} has {len(train_set.images)} usable training image(s): at least 2 are needed")
    return train_set


def training_meta(root: Path, train_set: ImageSet) -> dict[str, Any]:
    """What a checkpoint records of the data it was fitted on."""
    return {"data": summarize(root), "skipped_images": [str(p) for p in train_set.skipped],
            "grey_images": [str(p) for p in train_set.grey]}  # fmt: skip
