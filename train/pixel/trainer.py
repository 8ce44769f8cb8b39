"""The training loop: good images in, RUN/checkpoint.pt out, one epoch at a time.

Read top to bottom: build (or resume) the model and optimisers, load data, turn the budget of
optimiser steps into whole epochs, then per epoch a shuffled pass of generator steps (and
discriminator steps for daad+), standardise the score terms, validate, checkpoint. Same seed, same numbers on the CPU: the model is initialised
from `seed` and each epoch shuffles with its own generator seeded from (seed, epoch), so a
resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runtime.backends.batches import infer_batches
from runtime.dataset import ImageSet, has_test_split
from runtime.errors import DaadError
from runtime.optional import require
from runtime.preprocess import PreprocessConfig
from train.checkpoint import load_checkpoint, save_checkpoint
from train.config import TrainConfig
from train.fitting import (CHECKPOINT_FILE, TrainResult, batches, load_split, load_training_images, resolve_device,
                           training_meta)
from train.pixel.config import ModelConfig
from train.pixel.losses import discriminator_loss, generator_loss
from train.metrics import image_auroc
from train.pixel.model import AnomalyModel, build_model
from train.torch_backend import TorchBackend

@dataclass
class Run:
    """Everything one training run carries from epoch to epoch, and writes into its checkpoint."""

    model: AnomalyModel
    model_config: ModelConfig
    train_config: TrainConfig
    preprocess: PreprocessConfig
    optimiser: torch.optim.Optimizer
    disc_optimiser: torch.optim.Optimizer | None  # daad+ only
    epoch: int = 0  # epochs finished
    epochs: int = 0  # the budget in whole epochs, once the training set's size is known
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainData:
    """The good training images, and the test split when it can give a validation AUROC."""

    train: ImageSet
    test: ImageSet | None
    test_labels: list[int]


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

    The budget is `train_config.steps` rounded up to whole epochs (or `train_config.epochs`).
    With `resume`, the configs come from the existing checkpoint (only the budget may grow, and
    the validation interval change) and training continues after its last finished epoch.
    """
    data_root, checkpoint_path = Path(data_root), Path(out_dir) / CHECKPOINT_FILE
    device = resolve_device(train_config.device)
    if resume:
        run = resume_run(checkpoint_path, train_config, device)
    else:
        run = start_run(model_config, train_config, preprocess, device)
    data = load_data(data_root, run.preprocess, progress)
    run.epochs = run.train_config.epochs_for(len(data.train.images))
    if run.epoch >= run.epochs:
        raise DaadError(
            f"{checkpoint_path} already finished {run.epoch} epoch(s), its whole budget of "
            f"{run.train_config.budget}: pass a larger --epochs or --steps to continue"
        )
    meta = training_meta(data_root, data.train)

    bar = progress_bar(run, run.train_config.steps_per_epoch(len(data.train.images)), progress)
    for epoch in range(run.epoch, run.epochs):
        started = time.perf_counter()
        set_learning_rates(run, epoch)
        record: dict[str, Any] = {"epoch": epoch + 1, **train_epoch(run, data.train.images, epoch, bar)}
        run.epoch = epoch + 1
        record.update(end_of_epoch(run, data, bar))
        record["seconds"] = time.perf_counter() - started
        run.history.append(record)
        save_run(checkpoint_path, run, meta)
    bar.close()
    return TrainResult(checkpoint_path, run.history)


def start_run(model_config: ModelConfig, train_config: TrainConfig, preprocess: PreprocessConfig, device: torch.device) -> Run:
    """A fresh model, initialised from the seed, and its optimisers."""
    torch.manual_seed(train_config.seed)
    model = build_model(model_config, preprocess).to(device)
    return Run(model, model_config, train_config, preprocess, *make_optimisers(model, train_config))


def resume_run(checkpoint_path: Path, train_config: TrainConfig, device: torch.device) -> Run:
    """The run saved in `checkpoint_path` with its own configs, optimiser states and history;
    only the budget (steps or epochs) and the validation interval come from `train_config`."""
    loaded = load_checkpoint(checkpoint_path, device=str(device))
    budget = TrainConfig.from_dict({
        **loaded.train_config.to_dict(),
        "steps": train_config.steps, "epochs": train_config.epochs, "validate_every": train_config.validate_every,
    })  # fmt: skip
    optimiser, disc_optimiser = make_optimisers(loaded.model, budget)
    if "optimiser" in loaded.state:
        optimiser.load_state_dict(loaded.state["optimiser"])
    if disc_optimiser is not None and "disc_optimiser" in loaded.state:
        disc_optimiser.load_state_dict(loaded.state["disc_optimiser"])
    run = Run(loaded.model, loaded.model_config, budget, loaded.preprocess, optimiser, disc_optimiser)
    run.epoch, run.history = int(loaded.state.get("epoch", 0)), list(loaded.meta.get("history", []))
    return run


def make_optimisers(model: AnomalyModel, train_config: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
    """Adam on the generator; for daad+ a second Adam on the discriminator (GAN betas)."""
    optimiser = torch.optim.Adam(model.generator_parameters(), lr=train_config.lr)
    if model.discriminator is None:
        return optimiser, None
    return optimiser, torch.optim.Adam(model.discriminator.parameters(), lr=train_config.discriminator_lr, betas=(0.5, 0.999))


def load_data(data_root: Path, preprocess: PreprocessConfig, progress: bool) -> TrainData:
    train_set = load_training_images(data_root, preprocess, progress)
    test_set = load_split(data_root, "test", preprocess, progress) if has_test_split(data_root) else None
    test_labels = [s.label for s in test_set.samples] if test_set else []
    if not 0 < sum(test_labels) < len(test_labels):  # AUROC needs good and defective images
        return TrainData(train_set, None, [])
    return TrainData(train_set, test_set, test_labels)


def set_learning_rates(run: Run, epoch: int) -> None:
    """Both optimisers' rates for `epoch` from the schedule (also right after --resume)."""
    factor = run.train_config.lr_factor(epoch, run.epochs)
    for group in run.optimiser.param_groups:
        group["lr"] = run.train_config.lr * factor
    for group in run.disc_optimiser.param_groups if run.disc_optimiser is not None else []:
        group["lr"] = run.train_config.discriminator_lr * factor


def train_step(run: Run, frames: torch.Tensor) -> dict[str, float]:
    """One generator step (reconstruction, entropy, adversarial and alignment terms), then for
    daad+ one discriminator step on the same batch; returns the loss terms."""
    output = run.model(frames)
    loss, terms = generator_loss(output, run.model_config)
    run.optimiser.zero_grad(set_to_none=True)
    loss.backward()
    run.optimiser.step()
    if run.disc_optimiser is not None:
        _, real_logit = run.model.discriminator(output.normalised)
        _, fake_logit = run.model.discriminator(output.reconstruction.detach())
        disc_loss = discriminator_loss(real_logit, fake_logit)
        run.disc_optimiser.zero_grad(set_to_none=True)
        disc_loss.backward()
        run.disc_optimiser.step()
        terms["disc"] = disc_loss.item()
    return terms


def train_epoch(run: Run, images: np.ndarray, epoch: int, bar: Any) -> dict[str, float]:
    """One shuffled pass over the training images; the mean of each loss term.

    The order comes from its own generator seeded by (seed, epoch), so a resumed run sees the
    batches an uninterrupted one would."""
    config = run.train_config
    device = next(run.model.parameters()).device
    run.model.train()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(config.seed * 100003 + epoch))
    sums: dict[str, float] = {}
    steps = 0
    for frames in batches(images, config.batch_size, device, order.numpy()):
        if len(frames) >= 2:  # BatchNorm cannot train on a single frame
            terms = train_step(run, frames)
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value
            steps += 1
            bar.set_postfix({"epoch": epoch + 1, **{k: f"{v:.4f}" for k, v in terms.items()}}, refresh=False)
        bar.update(1)
    return {k: v / max(steps, 1) for k, v in sums.items()}


def end_of_epoch(run: Run, data: TrainData, bar: Any) -> dict[str, float]:
    """Refit the score's constants on the training images (when validating and at the end;
    mid-run checkpoints keep the last fitted ones, --resume refits) and validate."""
    run.model.eval()
    last = run.epoch == run.epochs
    every = run.train_config.validate_every
    validate = data.test is not None and every and (run.epoch % every == 0 or last)
    if validate or last:
        run.model.fit_score_stats(batches(data.train.images, 32, next(run.model.parameters()).device))
    if not validate:
        return {}
    backend = TorchBackend(run.model, device=next(run.model.parameters()).device)
    scores = infer_batches(backend, data.test.images, 32, keep_maps=False).scores
    auroc = image_auroc(data.test_labels, scores)
    bar.write(f"epoch {run.epoch}: validation image AUROC {auroc:.3f}", file=sys.stderr)
    return {"val_image_auroc": auroc}


def save_run(checkpoint_path: Path, run: Run, meta: dict[str, Any]) -> None:
    """The model, configs, optimiser states, epoch and history: everything --resume needs."""
    optimisers = {"optimiser": run.optimiser.state_dict()}
    if run.disc_optimiser is not None:
        optimisers["disc_optimiser"] = run.disc_optimiser.state_dict()
    extra = {"epoch": run.epoch, "budget_epochs": run.epochs, **optimisers, "meta": {**meta, "history": run.history}}
    save_checkpoint(checkpoint_path, run.model, run.model_config, run.preprocess, run.train_config, extra=extra)


def progress_bar(run: Run, steps_per_epoch: int, progress: bool) -> Any:
    tqdm = require("tqdm", "progress bars").tqdm
    total = (run.epochs - run.epoch) * steps_per_epoch
    return tqdm(total=total, desc=f"train {run.model_config.kind}", unit="step", file=sys.stderr, disable=not progress)
