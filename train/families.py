"""Model families behind one small interface: what `daad train`, checkpoints and export ask of a kind.

A family says how its kind is configured, built and fitted (gradient steps, or one pass over
the good images), which preprocessing it owns (a pretrained backbone brings its own
normalisation), and how its score reads in model.json. The model it builds scores uint8
frames with `score(frames) -> (score N, anomaly_map N x 1 x H x W)` and names the constants
export must find with `memory_banks()`. Nothing else is shared, so a new family is a folder
of its own plus one line in FAMILIES, and touches no other family.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from runtime.preprocess import PreprocessConfig
from train.config import ConfigError, TrainConfig
from train.evaluate import ReconstructFn
from train.fitting import TrainResult

# kind -> "module:attribute" of its family, imported only when that kind is used.
FAMILIES = {
    "patchcore": "train.features.family:PATCHCORE",
    "daad-f": "train.features.family:DAAD_F",
    "daad+": "train.pixel.family:PIXEL",
    "daad": "train.pixel.family:PIXEL",
    "memae": "train.pixel.family:PIXEL",
    "ae": "train.pixel.family:PIXEL",
}
KINDS = tuple(FAMILIES)
DEFAULT_KIND = "patchcore"

class ModelConfigLike(Protocol):
    kind: str

    def to_dict(self) -> dict[str, Any]: ...


class Family(Protocol):
    default_short_side: int  # input size when --image-size is not given
    trains_by_steps: bool  # gradient steps (--steps, --epochs, --lr apply), or one fitting pass

    def config_from_dict(self, data: dict[str, Any], saved: bool = False) -> ModelConfigLike:
        """The kind's config from a config file's "model" section (saved: from a checkpoint)."""

    def preprocess(self, height: int, width: int, channels: int) -> PreprocessConfig:
        """The input this family's models take (normalisation is the family's own)."""

    def build(self, config: ModelConfigLike, preprocess: PreprocessConfig) -> nn.Module:
        """An unfitted model: `score(frames)` and `memory_banks()`."""

    def fit(self, data_root: Path, out_dir: Path, config: ModelConfigLike, train_config: TrainConfig,
            preprocess: PreprocessConfig, resume: bool, progress: bool) -> TrainResult:  # fmt: skip
        """Fit on data_root's good training images; write out_dir/checkpoint.pt."""

    def reconstructor(self, model: nn.Module) -> ReconstructFn | None:
        """The model's reconstruction for eval grids, or None when it has none."""

    def score_definition(self, config: dict[str, Any]) -> str:
        """The score in words, for model.json."""


def family_for(kind: str) -> Family:
    """The family of `kind`; an unknown kind names the known ones."""
    if kind not in FAMILIES:
        raise ConfigError(f"model kind must be one of {', '.join(KINDS)}, got {kind!r}")
    module, attribute = FAMILIES[kind].split(":")
    return getattr(importlib.import_module(module), attribute)
