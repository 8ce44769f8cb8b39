"""The pixel families' model configuration (ae, memae, daad, daad+): plain dataclasses, stored
in checkpoints as plain dicts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from train.blockmemory import MemoryConfig
from train.config import ConfigError, known_keys

MODEL_KINDS = ("ae", "memae", "daad", "daad+")
SCALES = ("skip1", "skip2", "skip3", "bottleneck")  # 1/2, 1/4, 1/8, 1/16 of the input
MAP_NORMALISATIONS = ("none", "pixel")


def check_image_size(height: int, width: int) -> None:
    """The network halves its input four times, so each side must be a multiple of 16."""
    if height % 16 or width % 16:
        raise ConfigError(
            f"image size {height}x{width} must be a multiple of 16 (four 2x downsamplings), e.g. 128"
        )


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
        values = known_keys(cls, data)
        for key in ("widths", "discriminator_widths"):
            if key in values:
                values[key] = tuple(int(v) for v in values[key])
        if "memories" in values:
            values["memories"] = tuple(MemoryConfig(**known_keys(MemoryConfig, m)) for m in values["memories"])
        if "memae_memory" in values:
            values["memae_memory"] = MemoryConfig(**known_keys(MemoryConfig, values["memae_memory"]))
        return cls(**values)


