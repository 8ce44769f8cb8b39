"""Configuration every family shares: the fitting run (TrainConfig) and config files.

Checkpoints are read with `torch.load(weights_only=True)`, so configs travel as dicts of
primitives (`to_dict` / `from_dict`), never as pickled objects. A `--config` file (JSON or YAML)
holds the same dicts: `{"model": {...}, "train": {...}}`, any key may be left out. What a model
is (its architecture, its memory, its score) is its family's own config (train/families.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from runtime.errors import DaadError
from runtime.optional import require

LR_SCHEDULES = ("constant", "cosine")
DEFAULT_STEPS = 1000  # optimiser steps: the training loss settles by 375-630 (docs/RESULTS.md, "Training budget")


class ConfigError(DaadError):
    """A configuration file or value that cannot build a model."""


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation: Adam on the generator (and the discriminator for daad+).

    The budget is counted in optimiser steps, so a set of 50 images and one of 5000 both train
    about as far (docs/RESULTS.md, "Training budget"); it is rounded up to whole epochs, the unit
    of checkpoints and validation. `epochs` set instead fixes the epoch count, as before.
    """

    steps: int = DEFAULT_STEPS
    epochs: int | None = None  # a fixed number of epochs instead of `steps`
    batch_size: int = 16
    lr: float = 2e-3
    discriminator_lr: float = 2e-4
    seed: int = 0
    device: str = "cpu"
    validate_every: int = 1  # epochs between validation AUROCs (0: never)
    # "constant", or "cosine": lr * (1 + cos(pi * epoch / epochs)) / 2 per epoch for both
    # optimisers, a function of the epoch alone, so --resume needs no scheduler state (but a
    # resumed run with a larger budget follows the longer schedule from where it is).
    lr_schedule: str = "constant"

    def __post_init__(self) -> None:
        if self.steps < 1 or (self.epochs is not None and self.epochs < 1) or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(f"steps, epochs, batch_size and lr must be positive, got {self}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"device must be cpu or cuda, got {self.device!r}")

    def steps_per_epoch(self, images: int) -> int:
        return -(-images // self.batch_size)

    def epochs_for(self, images: int) -> int:
        """Whole epochs the budget buys on `images` training images."""
        if self.epochs is not None:
            return self.epochs
        return -(-self.steps // self.steps_per_epoch(images))

    @property
    def budget(self) -> str:
        """The budget in words, for tables and messages: "1500 steps" or "20 epochs"."""
        return f"{self.steps} steps" if self.epochs is None else f"{self.epochs} epochs"

    def lr_factor(self, epoch: int, epochs: int) -> float:
        """Multiplier of both learning rates during `epoch` (0-based) of `epochs`."""
        if self.lr_schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
        return 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return cls(**known_keys(cls, data))


def known_keys(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys: {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    return dict(data)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or YAML file -> {"model": {...}, "train": {...}} (either may be missing)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    if path.suffix.lower() in (".yaml", ".yml"):
        yaml = require("yaml", "YAML config files")
        parse, parse_errors = yaml.safe_load, (ValueError, yaml.YAMLError)
    else:
        parse, parse_errors = json.loads, (ValueError,)
    try:
        data = parse(text)
    except parse_errors as exc:
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:] or 'JSON'}: {exc}") from exc
    if not isinstance(data, dict) or set(data) - {"model", "train"}:
        raise ConfigError(f"config file {path} must be a mapping with 'model' and/or 'train' sections")
    return data


def with_overrides(config: Any, **overrides: Any) -> Any:
    """`replace` that ignores None values, for command-line flags left unset."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
