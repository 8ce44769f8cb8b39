"""The training loop: good images in, RUN/checkpoint.pt out, one epoch at a time.

Read top to bottom: load data, build (or resume) the model and optimisers, then per epoch a
shuffled pass of generator steps (and discriminator steps for daad+), standardise the score
terms, validate, checkpoint. Same seed, same numbers on the CPU: the model is initialised
from `seed` and each epoch shuffles with its own generator seeded from (seed, epoch), so a
resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from runtime.dataset import ImageSet, find_samples, has_test_split, load_images, summarize
from runtime.errors import DaadError
from runtime.images import read_image
from runtime.optional import require
from runtime.preprocess import PreprocessConfig
from train.checkpoint import load_checkpoint, save_checkpoint
from train.config import ModelConfig, TrainConfig
from train.losses import discriminator_loss, generator_loss
from train.metrics import image_auroc
from train.model import AnomalyModel, build_model

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class TrainResult:
    checkpoint: Path
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch

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


@torch.no_grad()
def score_images(model: AnomalyModel, images: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Scores N and maps N x 1 x H x W of uint8 images, through `model.score`."""
    device = next(model.parameters()).device
    scores, maps = [], []
    for frames in batches(images, batch_size, device):
        score, anomaly_map = model.score(frames)
        scores.append(score.cpu().numpy())
        maps.append(anomaly_map.cpu().numpy())
    return np.concatenate(scores), np.concatenate(maps)


def detect_channels(root: str | Path) -> int:
    """1 when the first training image is stored grey (a mono camera), else 3."""
    for sample in find_samples(Path(root), "train"):
        image = read_image(sample.path)
        if image is not None:
            return 1 if image.ndim == 2 or image.shape[2] == 1 else 3
    raise DaadError(f"no readable training image under {root}: check the data set folder")


def load_split(root: Path, split: str, preprocess: PreprocessConfig, progress: bool) -> ImageSet:
    return load_images(find_samples(root, split), preprocess, progress=progress)


def set_learning_rates(optimiser, disc_optimiser, train_config: TrainConfig, epoch: int) -> None:
    """Both optimisers' rates for `epoch` from the schedule (also right after --resume)."""
    factor = train_config.lr_factor(epoch)
    for group in optimiser.param_groups:
        group["lr"] = train_config.lr * factor
    for group in disc_optimiser.param_groups if disc_optimiser is not None else []:
        group["lr"] = train_config.discriminator_lr * factor


def train(
    data_root: str | Path,
    out_dir: str | Path,
    model_config: ModelConfig,
    train_config: TrainConfig,
    preprocess: PreprocessConfig,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train on `data_root`'s good training images; write `out_dir`/checkpoint.pt every epoch.

    With `resume`, the configs come from the existing checkpoint (only `train_config.epochs`
    may grow) and training continues after its last finished epoch.
    """
    data_root, out_dir = Path(data_root), Path(out_dir)
    checkpoint_path = out_dir / CHECKPOINT_FILE
    device = resolve_device(train_config.device)
    state: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    if resume:
        loaded = load_checkpoint(checkpoint_path, device=str(device))
        model, model_config, preprocess = loaded.model, loaded.model_config, loaded.preprocess
        train_config = TrainConfig.from_dict({**loaded.train_config.to_dict(), "epochs": train_config.epochs})
        state, history = loaded.state, list(loaded.meta.get("history", []))
    else:
        torch.manual_seed(train_config.seed)
        model = build_model(model_config, preprocess).to(device)

    train_set = load_split(data_root, "train", preprocess, progress)
    if len(train_set.images) < 2:
        raise DaadError(f"{data_root} has {len(train_set.images)} usable training image(s): at least 2 are needed")
    test_set = load_split(data_root, "test", preprocess, progress) if has_test_split(data_root) else None
    test_labels = [s.label for s in test_set.samples] if test_set else []
    can_validate = test_set is not None and 0 < sum(test_labels) < len(test_labels)

    optimiser = torch.optim.Adam(model.generator_parameters(), lr=train_config.lr)
    disc_optimiser = (
        torch.optim.Adam(model.discriminator.parameters(), lr=train_config.discriminator_lr, betas=(0.5, 0.999))
        if model.discriminator is not None
        else None
    )
    if "optimiser" in state:
        optimiser.load_state_dict(state["optimiser"])
    if disc_optimiser is not None and "disc_optimiser" in state:
        disc_optimiser.load_state_dict(state["disc_optimiser"])
    start_epoch = int(state.get("epoch", 0))
    if start_epoch >= train_config.epochs:
        raise DaadError(
            f"{checkpoint_path} already finished {start_epoch} epoch(s): pass a larger --epochs to continue"
        )

    steps_per_epoch = -(-len(train_set.images) // train_config.batch_size)
    tqdm = require("tqdm", "train", "progress bars").tqdm
    bar = tqdm(
        total=(train_config.epochs - start_epoch) * steps_per_epoch,
        desc=f"train {model_config.kind}",
        unit="step",
        file=sys.stderr,
        disable=not progress,
    )
    meta_base = {"data": summarize(data_root), "skipped_images": [str(p) for p in train_set.skipped]}
    for epoch in range(start_epoch, train_config.epochs):
        started = time.perf_counter()
        set_learning_rates(optimiser, disc_optimiser, train_config, epoch)
        model.train()
        order = torch.randperm(len(train_set.images), generator=torch.Generator().manual_seed(train_config.seed * 100003 + epoch))
        sums: dict[str, float] = {}
        steps = 0
        for frames in batches(train_set.images, train_config.batch_size, device, order.numpy()):
            if len(frames) < 2:  # BatchNorm cannot train on a single frame
                bar.update(1)
                continue
            output = model(frames)
            loss, terms = generator_loss(output, model_config)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if disc_optimiser is not None:
                _, real_logit = model.discriminator(output.normalised)
                _, fake_logit = model.discriminator(output.reconstruction.detach())
                disc_loss = discriminator_loss(real_logit, fake_logit)
                disc_optimiser.zero_grad(set_to_none=True)
                disc_loss.backward()
                disc_optimiser.step()
                terms["disc"] = disc_loss.item()
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value
            steps += 1
            bar.update(1)
            bar.set_postfix({"epoch": epoch + 1, **{k: f"{v:.4f}" for k, v in terms.items()}}, refresh=False)

        model.eval()
        record: dict[str, Any] = {"epoch": epoch + 1, **{k: v / max(steps, 1) for k, v in sums.items()}}
        last = epoch + 1 == train_config.epochs
        every = train_config.validate_every
        validate = can_validate and every and ((epoch + 1) % every == 0 or last)
        if validate or last:  # mid-run checkpoints keep the last fitted stats; --resume refits
            model.fit_score_stats(batches(train_set.images, 32, device))
        if validate:
            scores, _ = score_images(model, test_set.images)
            record["val_image_auroc"] = image_auroc(test_labels, scores)
            bar.write(f"epoch {epoch + 1}: validation image AUROC {record['val_image_auroc']:.3f}", file=sys.stderr)
        record["seconds"] = time.perf_counter() - started
        history.append(record)
        save_checkpoint(
            checkpoint_path,
            model,
            model_config,
            preprocess,
            train_config,
            extra={
                "epoch": epoch + 1,
                "optimiser": optimiser.state_dict(),
                **({"disc_optimiser": disc_optimiser.state_dict()} if disc_optimiser is not None else {}),
                "meta": {**meta_base, "history": history},
            },
        )
    bar.close()
    return TrainResult(checkpoint_path, history)
