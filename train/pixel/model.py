"""The network behind ae, memae, daad and daad+, and THE definition of its anomaly score.

A U-Net of ConvBNReLU blocks with four 2x downsamplings. daad puts a block-wise memory on each
skip path (1/2, 1/4, 1/8 and the 1/16 bottleneck); encoder and decoder meet only through the
memories. ae keeps the same encoder/decoder without skips or memory; memae adds MemAE's
per-pixel memory at the bottleneck. daad+ adds a discriminator whose feature distance joins
the score.

The model takes what `runtime.preprocess.prepare_batch` returns (uint8 N x H x W x C) and does
cast, scaling, normalisation and NCHW itself, so training, export and the runtime agree.
`score` is the one score definition: eval, export and calibration all go through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from runtime.preprocess import PreprocessConfig
from train.blur import GaussianBlur
from train.pixel.config import SCALES, ModelConfig, check_image_size
from train.pixel.discriminator import Discriminator, feature_distance
from train.blockmemory import BlockMemory, entropy

# "pixel" normalisation: the per-pixel std is floored at this fraction of the residual map's
# overall std (docs/RESULTS-scoring.md, issue 11: 0.5 keeps synthetic image AUROC and ends the
# blow-up on plain background, where good parts barely vary).
MAP_STD_FLOOR = 0.5


@dataclass
class ModelOutput:
    """What one training forward pass produces; the losses read from here."""

    normalised: torch.Tensor  # the input, N x C x H x W, after (x/255 - mean) / std
    reconstruction: torch.Tensor  # same space and shape
    attention: dict[str, torch.Tensor] = field(default_factory=dict)  # memory name -> weights
    entropy: torch.Tensor | None = None  # summed over memories; None without memory
    real_features: torch.Tensor | None = None  # f_D(x), daad+ only
    fake_features: torch.Tensor | None = None  # f_D(x_hat)
    fake_logit: torch.Tensor | None = None  # D(x_hat), for the adversarial loss


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class AnomalyModel(nn.Module):
    """uint8 frames in; reconstruction (forward) or anomaly score and map (score) out."""

    def __init__(self, config: ModelConfig, preprocess: PreprocessConfig) -> None:
        super().__init__()
        check_image_size(preprocess.height, preprocess.width)
        self.config = config
        self.preprocess = preprocess
        channels, widths = preprocess.channels, config.widths
        self.register_buffer("mean", torch.tensor(preprocess.mean).reshape(1, 1, 1, -1), persistent=False)
        self.register_buffer("std", torch.tensor(preprocess.std).reshape(1, 1, 1, -1), persistent=False)

        encoder_in = (channels, *widths[:3])
        self.encoder = nn.ModuleList(
            nn.Sequential(conv_bn_relu(cin, cout, stride=2), conv_bn_relu(cout, cout))
            for cin, cout in zip(encoder_in, widths)
        )
        self.memories = nn.ModuleDict()
        for index, name in enumerate(SCALES):
            memory = self._memory_config(index)
            if memory is not None:
                scale = 2 ** (index + 1)
                size = (widths[index], preprocess.height // scale, preprocess.width // scale)
                self.memories[name] = BlockMemory(memory, *size)
        # Decoder stage i takes the upsampled deeper feature (+ the memory output of skip i).
        self.decoder = nn.ModuleList(
            nn.Sequential(
                conv_bn_relu(widths[i + 1] + (widths[i] if config.uses_skips else 0), widths[i]),
                conv_bn_relu(widths[i], widths[i]),
            )
            for i in range(3)
        )
        self.head = nn.Sequential(conv_bn_relu(widths[0], widths[0]), nn.Conv2d(widths[0], channels, 3, padding=1))
        self.discriminator = (
            Discriminator(channels, config.discriminator_widths) if config.has_discriminator else None
        )

        # Two fixed Gaussians (depthwise conv2d, constant kernels): one low-passes the signed
        # difference x - x_hat per channel, so sensor noise the model cannot reproduce averages
        # out before squaring; the other smooths the squared-error map.
        self.diff_blur = GaussianBlur(config.diff_sigma, channels, preprocess.height, preprocess.width)
        self.map_blur = GaussianBlur(config.map_sigma, 1, preprocess.height, preprocess.width)
        # Mean and std of R and L on the training images: standardises them before mixing (daad+).
        self.register_buffer("score_stats", torch.tensor([0.0, 1.0, 0.0, 1.0]))
        # "pixel": per-pixel mean and std of the map on the training images; only then in the
        # state dict, so checkpoints and exports without it stay exactly as they were.
        if config.map_normalisation == "pixel":
            size = (1, 1, preprocess.height, preprocess.width)
            self.register_buffer("map_mean", torch.zeros(size))
            self.register_buffer("map_std", torch.ones(size))

    def _memory_config(self, index: int):
        if self.config.uses_skips:
            return self.config.memories[index]
        if self.config.kind == "memae" and SCALES[index] == "bottleneck":
            return self.config.memae_memory
        return None

    def normalise(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 N x H x W x C -> float N x C x H x W, exactly `runtime.preprocess.normalise`."""
        scaled = frames.float() / 255.0
        return ((scaled - self.mean) / self.std).permute(0, 3, 1, 2)

    def reconstruct(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Normalised image -> (reconstruction, addressing weights per memory)."""
        features = []
        for stage in self.encoder:
            x = stage(x)
            features.append(x)
        attention: dict[str, torch.Tensor] = {}
        for index, name in enumerate(SCALES):
            if name in self.memories:
                features[index], attention[name] = self.memories[name](features[index])
        y = features[3]
        for i in (2, 1, 0):
            y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
            if self.config.uses_skips:
                y = torch.cat([y, features[i]], dim=1)
            y = self.decoder[i](y)
        y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.head(y), attention

    def forward(self, frames: torch.Tensor) -> ModelOutput:
        x = self.normalise(frames)
        reconstruction, attention = self.reconstruct(x)
        output = ModelOutput(normalised=x, reconstruction=reconstruction, attention=attention)
        if attention:
            output.entropy = sum(entropy(w) for w in attention.values())
        if self.discriminator is not None:
            output.real_features, _ = self.discriminator(x)
            output.fake_features, output.fake_logit = self.discriminator(reconstruction)
        return output

    def anomaly_map(self, x: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """Smoothed squared error of the smoothed difference, channel mean: N x 1 x H x W."""
        difference = self.diff_blur(x - reconstruction)
        return self.map_blur((difference * difference).mean(dim=1, keepdim=True))

    def standardise_map(self, maps: torch.Tensor) -> torch.Tensor:
        """"pixel": (map - map_mean) / map_std, elementwise with constants; "none": the map."""
        if self.config.map_normalisation == "pixel":
            return (maps - self.map_mean) / self.map_std
        return maps

    def reduce_map(self, maps: torch.Tensor) -> torch.Tensor:
        """R per sample: the maximum or mean of the (standardised) map."""
        if self.config.score_reduction == "max":
            return maps.amax(dim=(1, 2, 3))
        return maps.mean(dim=(1, 2, 3))

    def feature_term(self, x: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor | None:
        """L per sample (daad+): discriminator feature distance of x and x_hat; None otherwise."""
        if self.discriminator is None:
            return None
        real, _ = self.discriminator(x)
        fake, _ = self.discriminator(reconstruction)
        return feature_distance(real, fake)

    def raw_terms(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(anomaly map before standardising, L per sample or None) of uint8 frames."""
        x = self.normalise(frames)
        reconstruction, _ = self.reconstruct(x)
        return self.anomaly_map(x, reconstruction), self.feature_term(x, reconstruction)

    def score_terms(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(R per sample, L per sample or None, anomaly map): the unmixed parts of the score."""
        raw_map, feature_term = self.raw_terms(frames)
        maps = self.standardise_map(raw_map)
        return self.reduce_map(maps), feature_term, maps

    def score(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 frames -> (anomaly score N, anomaly map N x 1 x H x W). Higher = more anomalous.

        The map is in the score's units and the score is its reduction (maximum or mean), so a
        threshold on the score is also a level on the map (one colour scale for both).
        ae/memae/daad: the smoothed map, standardised per pixel first with map_normalisation
        "pixel". daad+: gamma * R' + (1 - gamma) * L' per pixel, R' the map and L' the image's
        feature distance, each standardised by `score_stats`.
        """
        _, feature_term, maps = self.score_terms(frames)
        if feature_term is not None:
            stats, gamma = self.score_stats, self.config.gamma
            standard_l = (feature_term - stats[2]) / stats[3]
            maps = gamma * (maps - stats[0]) / stats[1] + (1.0 - gamma) * standard_l[:, None, None, None]
        return self.reduce_map(maps), maps

    @torch.no_grad()
    def fit_score_stats(self, batches) -> None:
        """Fit the score's constants on good (training) images: with "pixel", the per-pixel map
        mean and std; for daad+, `score_stats` from R (on the map as scored) and L, so gamma
        mixes like units."""
        pixel = self.config.map_normalisation == "pixel"
        if self.discriminator is None and not pixel:
            return
        raw_maps, feature_terms = [], []
        for frames in batches:
            raw_map, feature_term = self.raw_terms(frames)
            raw_maps.append(raw_map)
            feature_terms.append(feature_term)
        maps = torch.cat(raw_maps)
        if pixel:
            self.fit_map_stats(maps)
        if self.discriminator is None:
            return
        r, l = self.reduce_map(self.standardise_map(maps)), torch.cat(feature_terms)
        spread = (r.std(), l.std()) if r.numel() > 1 else (torch.ones(()), torch.ones(()))
        self.score_stats.copy_(torch.stack([r.mean(), spread[0].clamp_min(1e-8), l.mean(), spread[1].clamp_min(1e-8)]))

    def fit_map_stats(self, maps: torch.Tensor) -> None:
        """Per-pixel mean and std of raw maps N x 1 x H x W of good images, smoothed like the map
        (fewer images than pixels: a noisy estimate). The std is floored at MAP_STD_FLOOR times
        the std of the whole residual map (every image and pixel around its pixel's mean): on
        plain background or border the error hardly varies, and dividing by that almost-zero
        turned sensor noise into the hottest spots of the map (a 700:1 range of stds on real
        tyres). A global scale, unlike a fraction of the mean std, does not shrink with the
        share of background in the picture."""
        mean, spread, overall = self.map_statistics(maps)
        self.map_mean.copy_(mean)
        self.map_std.copy_(spread.clamp_min(max(MAP_STD_FLOOR * overall, 1e-8)))

    def map_statistics(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(per-pixel mean, per-pixel std, std of the whole residual) of raw maps N x 1 x H x W,
        mean and std smoothed like the map; the std not yet floored."""
        mean = self.map_blur(maps.mean(dim=0, keepdim=True))
        spread = maps.std(dim=0, keepdim=True) if len(maps) > 1 else torch.zeros_like(mean)
        overall = float((maps - mean).pow(2).mean().sqrt())
        return mean, self.map_blur(spread), overall

    def memory_banks(self) -> dict[str, torch.Tensor]:
        """Memory name ("skip1".."skip3", "bottleneck") -> its bank N x D."""
        return {name: memory.bank for name, memory in self.memories.items()}

    def generator_parameters(self) -> list[nn.Parameter]:
        """Everything but the discriminator: what the reconstruction optimiser updates."""
        return [p for name, p in self.named_parameters() if not name.startswith("discriminator.")]


def build_model(config: ModelConfig, preprocess: PreprocessConfig) -> AnomalyModel:
    return AnomalyModel(config, preprocess)
