"""Model and training configuration: plain dataclasses, stored in checkpoints as plain dicts.

Checkpoints are read with `torch.load(weights_only=True)`, so configs travel as dicts of
primitives (`to_dict` / `from_dict`), never as pickled objects. A `--config` file (JSON or YAML)
holds the same dicts: `{"model": {...}, "train": {...}}`, any key may be left out.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from runtime.errors import DaadError
from runtime.optional import require

MODEL_KINDS = ("ae", "memae", "daad", "daad+")
SCALES = ("skip1", "skip2", "skip3", "bottleneck")  # 1/2, 1/4, 1/8, 1/16 of the input
MAP_NORMALISATIONS = ("none", "pixel")
LR_SCHEDULES = ("constant", "cosine")
DEFAULT_STEPS = 1000  # optimiser steps: the training loss settles by 375-630 (docs/RESULTS.md, "Training budget")


class ConfigError(DaadError):
    """A configuration file or value that cannot build a model."""


def check_image_size(height: int, width: int) -> None:
    """The network halves its input four times, so each side must be a multiple of 16."""
    if height % 16 or width % 16:
        raise ConfigError(
            f"image size {height}x{width} must be a multiple of 16 (four 2x downsamplings), e.g. 128"
        )


@dataclass(frozen=True)
class MemoryConfig:
    """One block-wise memory: blocks of block_h x block_w x block_c, a bank of `slots` rows.

    block_c = 0 means all channels of the feature map (the paper's r_c = C).
    shrink_threshold = 0 turns MemAE's hard shrinkage off.
    """

    block_h: int = 4
    block_w: int = 4
    block_c: int = 0
    slots: int = 200
    temperature: float = 0.1
    shrink_threshold: float = 0.0

    def __post_init__(self) -> None:
        if min(self.block_h, self.block_w) < 1 or self.block_c < 0 or self.slots < 1:
            raise ConfigError(f"memory block and slots must be positive, got {self}")
        if self.temperature <= 0:
            raise ConfigError(f"memory temperature must be positive, got {self.temperature}")
        if not 0.0 <= self.shrink_threshold < 1.0:
            raise ConfigError(f"shrink_threshold must be in [0, 1), got {self.shrink_threshold}")


def _default_memories() -> tuple[MemoryConfig, ...]:
    """Granularity 16 (each block covers 16 x 16 input pixels) at N x D = 16384 per memory:
    the best block size measured in docs/RESULTS.md; slots = 16384 / D."""
    return (
        MemoryConfig(block_h=8, block_w=8, slots=32),
        MemoryConfig(block_h=4, block_w=4, slots=64),
        MemoryConfig(block_h=2, block_w=2, slots=128),
        MemoryConfig(block_h=1, block_w=1, slots=256),
    )


@dataclass(frozen=True)
class ModelConfig:
    """One network, four kinds: which memories exist and whether a discriminator scores too.

    ae: encoder-decoder, no skips, no memory. memae: `memae_memory` (per pixel) at the bottleneck.
    daad: a memory on each of the four skip paths (`memories`, shallow to deep).
    daad+: daad plus a discriminator; score = gamma * R + (1 - gamma) * L on standardised terms.
    """

    kind: str = "daad+"
    widths: tuple[int, int, int, int] = (8, 16, 32, 64)
    memories: tuple[MemoryConfig, ...] = field(default_factory=_default_memories)
    memae_memory: MemoryConfig = field(
        default_factory=lambda: MemoryConfig(block_h=1, block_w=1, slots=500, temperature=1.0, shrink_threshold=0.0025)
    )
    discriminator_widths: tuple[int, int, int, int] = (8, 16, 32, 32)
    l_rec: float = 1.0
    l_adv: float = 0.01
    l_ali: float = 0.1
    entropy_weight: float = 0.0002
    gamma: float = 1.0  # measured best (docs/RESULTS.md); L still shapes training through l_ali
    diff_sigma: float = 2.0  # Gaussian low-pass of x - x_hat before squaring (0: off), input pixels
    map_sigma: float = 1.0  # Gaussian smoothing of the squared-error map, input pixels
    score_reduction: str = "max"  # R = max or mean of the smoothed map
    # "pixel": (map - mean) / std per pixel, both fitted on the good training images, so structure
    # every part reconstructs badly (a logo, a hole) no longer dominates R (measured in
    # docs/RESULTS-scoring.md); "none": the raw map, as in checkpoints from before this field.
    map_normalisation: str = "pixel"

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ConfigError(f"model kind must be one of {', '.join(MODEL_KINDS)}, got {self.kind!r}")
        if len(self.widths) != 4 or min(self.widths) < 1:
            raise ConfigError(f"widths needs four positive channel counts, got {self.widths}")
        if len(self.memories) != 4:
            raise ConfigError(f"memories needs one entry per scale ({', '.join(SCALES)}), got {len(self.memories)}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ConfigError(f"gamma must be in [0, 1], got {self.gamma}")
        if self.diff_sigma < 0 or self.map_sigma < 0:
            raise ConfigError(f"diff_sigma and map_sigma must be >= 0, got {self.diff_sigma}, {self.map_sigma}")
        if self.score_reduction not in ("max", "mean"):
            raise ConfigError(f"score_reduction must be 'max' or 'mean', got {self.score_reduction!r}")
        if self.map_normalisation not in MAP_NORMALISATIONS:
            raise ConfigError(
                f"map_normalisation must be one of {', '.join(MAP_NORMALISATIONS)}, got {self.map_normalisation!r}"
            )

    @property
    def has_discriminator(self) -> bool:
        return self.kind == "daad+"

    @property
    def uses_skips(self) -> bool:
        return self.kind in ("daad", "daad+")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["widths"] = list(self.widths)
        data["discriminator_widths"] = list(self.discriminator_widths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        values = _known(cls, data)
        for key in ("widths", "discriminator_widths"):
            if key in values:
                values[key] = tuple(int(v) for v in values[key])
        if "memories" in values:
            values["memories"] = tuple(MemoryConfig(**_known(MemoryConfig, m)) for m in values["memories"])
        if "memae_memory" in values:
            values["memae_memory"] = MemoryConfig(**_known(MemoryConfig, values["memae_memory"]))
        return cls(**values)


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
        return cls(**_known(cls, data))


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
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
