"""uint8 frames -> patch features: the frozen backbone's levels, locally averaged, side by side.

Each patch feature describes a neighbourhood, not a pixel: every chosen level is averaged over
`aggregation` x `aggregation` positions (PatchCore's local aggregation), upsampled to the finest
chosen level and concatenated. The frame's colour order is folded into the first convolution
(BGR frames: its input channels reversed; grey frames: summed, which equals feeding the grey
image three times), so the graph reads the camera's frames as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from runtime.preprocess import PreprocessConfig
from train.features.backbone import LEVEL_STAGES, PADDINGS, WEIGHTS, load_backbone

# EfficientNet-Lite was trained on (RGB - 127) / 128 (TensorFlow's lite preprocessing): one value
# for every channel, so grey frames need no per-channel statistics.
LITE_MEAN = 127.0 / 255.0
LITE_STD = 128.0 / 255.0


class FeatureConfigError(ValueError):
    pass


@dataclass(frozen=True)
class FeatureConfig:
    """Which backbone, which of its levels ("s4", "s8", "s16": strides), how wide the averaging,
    and how its stride-2 convolutions pad ("symmetric": k // 2, the default, chosen on the proxy of
    drawn defects for its image AUROC; "same": TensorFlow's, as the weights were trained, which
    localises better and detects worse: docs/RESULTS.md, "Padding")."""

    backbone: str = "lite0"
    levels: tuple[str, ...] = ("s8", "s16")
    aggregation: int = 3
    padding: str = "symmetric"

    def __post_init__(self) -> None:
        if self.backbone not in WEIGHTS:
            raise FeatureConfigError(f"backbone must be one of {', '.join(WEIGHTS)}, got {self.backbone!r}")
        unknown = [level for level in self.levels if level not in LEVEL_STAGES]
        if not self.levels or unknown:
            raise FeatureConfigError(f"levels must be some of {', '.join(LEVEL_STAGES)}, got {list(self.levels)}")
        object.__setattr__(self, "levels", tuple(sorted(set(self.levels), key=list(LEVEL_STAGES).index)))
        if self.aggregation < 1 or self.aggregation % 2 == 0:
            raise FeatureConfigError(f"aggregation must be a positive odd window, got {self.aggregation}")
        if self.padding not in PADDINGS:
            raise FeatureConfigError(f"padding must be one of {', '.join(PADDINGS)}, got {self.padding!r}")

    @property
    def stride(self) -> int:
        """Input pixels per patch: the finest chosen level's stride."""
        return int(self.levels[0][1:])

    @property
    def deepest_stride(self) -> int:
        return int(self.levels[-1][1:])


def with_feature_config(data: dict[str, Any]) -> dict[str, Any]:
    """A family config dict with its "features" section (a plain dict in files) as a FeatureConfig."""
    values = dict(data)
    if isinstance(values.get("features"), dict):
        features = dict(values["features"])
        if "levels" in features:
            features["levels"] = tuple(features["levels"])
        values["features"] = FeatureConfig(**features)
    return values


def feature_preprocess(height: int, width: int, channels: int) -> PreprocessConfig:
    """The input a feature family owns: the backbone's own normalisation, any colour order."""
    return PreprocessConfig(height=height, width=width, channels=channels,
                            mean=(LITE_MEAN,) * channels, std=(LITE_STD,) * channels)  # fmt: skip


class PatchFeatures(nn.Module):
    """uint8 N x H x W x C -> float N x D x h x w, h = H / stride (no gradient, frozen)."""

    def __init__(self, config: FeatureConfig, preprocess: PreprocessConfig) -> None:
        super().__init__()
        if preprocess.height % config.deepest_stride or preprocess.width % config.deepest_stride:
            raise FeatureConfigError(
                f"image size {preprocess.height}x{preprocess.width} must be a multiple of {config.deepest_stride} "
                f"(the stride of level {config.levels[-1]})"
            )
        self.config = config
        self.backbone = load_backbone(config.backbone, config.levels[-1], padding=config.padding)
        stem = self.backbone.stem[1]
        weight = stem.weight.detach().flip(1) if preprocess.channels == 3 else stem.weight.detach().sum(1, keepdim=True)
        self.backbone.stem[1] = nn.Conv2d(preprocess.channels, stem.out_channels, 3, 2, stem.padding, bias=False)
        self.backbone.stem[1].weight = nn.Parameter(weight, requires_grad=False)
        self.register_buffer("mean", torch.tensor(preprocess.mean).reshape(1, 1, 1, -1), persistent=False)
        self.register_buffer("std", torch.tensor(preprocess.std).reshape(1, 1, 1, -1), persistent=False)
        self.stages = [LEVEL_STAGES[level] for level in config.levels]
        self.channels = sum(self.backbone.channels[stage] for stage in self.stages)
        self.eval()

    def train(self, mode: bool = True) -> "PatchFeatures":
        return super().train(False)  # frozen: batch norm keeps the pretrained statistics

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = ((frames.float() / 255.0 - self.mean) / self.std).permute(0, 3, 1, 2)
        outputs = self.backbone(x)
        window = self.config.aggregation
        levels = [F.avg_pool2d(outputs[s], window, 1, window // 2, count_include_pad=False) for s in self.stages]
        levels = [levels[0]] + [
            F.interpolate(level, scale_factor=int(name[1:]) // self.config.stride, mode="bilinear", align_corners=False)
            for name, level in zip(self.config.levels[1:], levels[1:])
        ]
        return torch.cat(levels, dim=1)
