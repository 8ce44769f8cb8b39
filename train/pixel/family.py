"""The pixel family: one U-Net (ae, memae, daad, daad+), trained by gradient steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from runtime.preprocess import DEFAULT_SHORT_SIDE, PreprocessConfig
from train.config import TrainConfig
from train.evaluate import ReconstructFn
from train.fitting import TrainResult
from train.pixel.config import ModelConfig, check_image_size
from train.pixel.model import AnomalyModel, build_model


class PixelFamily:
    """ae, memae, daad and daad+: ModelConfig, AnomalyModel, the Adam trainer."""

    default_short_side = DEFAULT_SHORT_SIDE
    trains_by_steps = True

    def config_from_dict(self, data: dict[str, Any], saved: bool = False) -> ModelConfig:
        # Checkpoints from before map_normalisation existed scored the raw map.
        return ModelConfig.from_dict({"map_normalisation": "none", **data} if saved else data)

    def preprocess(self, height: int, width: int, channels: int) -> PreprocessConfig:
        check_image_size(height, width)
        return PreprocessConfig(height=height, width=width, channels=channels)

    def build(self, config: ModelConfig, preprocess: PreprocessConfig) -> AnomalyModel:
        return build_model(config, preprocess)

    def fit(self, data_root: Path, out_dir: Path, config: ModelConfig, train_config: TrainConfig,
            preprocess: PreprocessConfig, resume: bool, progress: bool) -> TrainResult:  # fmt: skip
        from train.pixel.trainer import train

        result = train(data_root, out_dir, config, train_config, preprocess, resume=resume, progress=progress)
        last = result.history[-1] if result.history else {}
        auroc = f", validation image AUROC {last['val_image_auroc']:.3f}" if "val_image_auroc" in last else ""
        result.summary = f"trained {config.kind} for {last.get('epoch', 0)} epoch(s){auroc}: {result.checkpoint}"
        return result

    def reconstructor(self, model: AnomalyModel) -> ReconstructFn:
        """The reconstruction of a PyTorch AnomalyModel in eval mode, on its device, as uint8 frames."""
        import torch

        device = next(model.parameters()).device
        mean = np.asarray(model.preprocess.mean, dtype=np.float32)
        std = np.asarray(model.preprocess.std, dtype=np.float32)

        @torch.no_grad()
        def reconstruct_fn(frames: np.ndarray) -> np.ndarray:
            x = model.normalise(torch.from_numpy(np.ascontiguousarray(frames)).to(device))
            reconstruction, _ = model.reconstruct(x)
            pixels = reconstruction.permute(0, 2, 3, 1).cpu().numpy() * std + mean
            return np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8)

        return reconstruct_fn

    def score_definition(self, config: dict[str, Any]) -> str:
        """The score in words, for model.json (PRODUCT.md: A(x) = g*R(x) + (1-g)*L(x))."""
        reduction = config.get("score_reduction", "max")
        error = (
            "per-pixel squared reconstruction error in normalised input space, mean over channels, "
            f"Gaussian-smoothed (sigma {config.get('map_sigma')} px)"
        )
        if config.get("map_normalisation") == "pixel":
            error += (", standardised per pixel by the good training images' mean and std "
                      "(std floored at half the residual map's overall std)")  # fmt: skip
        if config.get("kind") != "daad+":
            return f"score = {reduction} over pixels of anomaly_map; anomaly_map = {error}"
        gamma = config.get("gamma")
        return (
            f"score = {reduction} over pixels of anomaly_map; anomaly_map = {gamma} * R' + (1 - {gamma}) * L' per pixel, "
            f"in the score's units: R' = the {error}, and L' = the mean squared distance between discriminator features "
            "of input and reconstruction (one per image), each standardised by its mean and std on the training images"
        )


PIXEL = PixelFamily()
