"""The feature families: a frozen pretrained backbone and a memory fitted from good images.

Both read the good images once through the backbone; they differ in how the memory is made
from those features: patchcore keeps a greedy coreset of them (numpy, no gradient), daad-f
learns a bank of normal blocks with a few hundred Adam steps on the bank alone.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

from patchmemory.coreset import coreset_rows
from patchmemory.head import features_text, score_definition
from runtime.errors import DaadError
from runtime.optional import require
from runtime.preprocess import PreprocessConfig
from train.config import ConfigError, TrainConfig
from train.evaluate import ReconstructFn
from train.features.daad_f import DaadFConfig, DaadFModel, fit_bank
from train.features.fit import extract_features, patch_rows, save_fit
from train.features.patch_features import FeatureConfigError, feature_preprocess
from train.features.patchcore import PatchCoreConfig, PatchCoreModel
from train.fitting import TrainResult, load_training_images, resolve_device, training_meta

FEATURE_SHORT_SIDE = 224  # docs/RESULTS.md, "Feature memories": 128 px loses thin cracks


class FeatureFamily:
    """What both feature families share: config, input, build, the pass over the good images."""

    default_short_side = FEATURE_SHORT_SIDE
    trains_by_steps = False
    config_class: Any
    model_class: Any

    def config_from_dict(self, data: dict[str, Any], saved: bool = False) -> Any:
        try:
            return self.config_class.from_dict(data)
        except FeatureConfigError as exc:
            raise ConfigError(str(exc)) from exc
        except TypeError as exc:  # an unknown key
            raise ConfigError(f"{data.get('kind')} config: {exc}") from exc

    def preprocess(self, height: int, width: int, channels: int) -> PreprocessConfig:
        if height % 16 or width % 16:
            raise ConfigError(f"image size {height}x{width} must be a multiple of 16 (the backbone's stride-16 level)")
        return feature_preprocess(height, width, channels)

    def build(self, config: Any, preprocess: PreprocessConfig) -> Any:
        try:
            return self.model_class(config, preprocess)
        except FeatureConfigError as exc:
            raise ConfigError(str(exc)) from exc

    def fit(self, data_root: Path, out_dir: Path, config: Any, train_config: TrainConfig,
            preprocess: PreprocessConfig, resume: bool, progress: bool) -> TrainResult:  # fmt: skip
        if resume:
            raise DaadError(f"{config.kind} is fitted in one pass and has nothing to resume: "
                            "run `daad train` again without --resume")  # fmt: skip
        begun = time.perf_counter()
        good = load_training_images(Path(data_root), preprocess, progress)
        images, meta = good.images, training_meta(Path(data_root), good)
        torch.manual_seed(train_config.seed)
        model = self.build(config, preprocess).to(resolve_device(train_config.device))
        features = extract_features(model, images, train_config, progress)
        record = {"epoch": 1, "images": len(images), **self.fit_memory(model, features, train_config, progress)}
        record["fit_seconds"] = seconds = time.perf_counter() - begun
        summary = f"fitted {config.kind}: {self.describe(record)} from {len(images)} good images in {seconds:.0f} s"
        return save_fit(Path(out_dir), model.eval(), config, train_config, preprocess, meta, record, summary)

    def reconstructor(self, model: Any) -> ReconstructFn | None:
        return None  # the memory rebuilds features, not pictures



def _bar(total: int, desc: str, unit: str, progress: bool) -> Any:
    return require("tqdm", "progress bars").tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not progress)


class PatchCoreFamily(FeatureFamily):
    """`patchcore`: nearest neighbour over a greedy coreset of the good images' patch features."""

    config_class, model_class = PatchCoreConfig, PatchCoreModel

    def fit_memory(self, model: PatchCoreModel, features: torch.Tensor, train_config: TrainConfig, progress: bool) -> dict[str, Any]:
        rows = patch_rows(features)
        memory = coreset_rows(rows, model.config.memory_size, seed=train_config.seed, progress=progress)
        model.set_memory(memory)
        return {"patches": len(rows), "memory": len(memory)}

    def describe(self, record: dict[str, Any]) -> str:
        return f"{record['memory']} of {record['patches']:,} patches"

    def score_definition(self, config: dict[str, Any]) -> str:
        return score_definition(config)


class DaadFFamily(FeatureFamily):
    """`daad-f`: a learned bank of normal feature blocks (DAAD's divide-and-assemble)."""

    config_class, model_class = DaadFConfig, DaadFModel

    def fit_memory(self, model: DaadFModel, features: torch.Tensor, train_config: TrainConfig, progress: bool) -> dict[str, Any]:
        with _bar(model.config.steps, "bank", "step", progress) as bar:
            def step(count: int, loss: float) -> None:
                bar.update(count)
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

            losses = fit_bank(model, features.clone(), train_config.seed, train_config.batch_size, step)
        return {"blocks": model.memory.shape.grid[1] * model.memory.shape.grid[2], "slots": model.config.slots,
                "steps": model.config.steps, "final_loss": losses[-1] if losses else None}  # fmt: skip

    def describe(self, record: dict[str, Any]) -> str:
        return f"a bank of {record['slots']} blocks ({record['blocks']} per image) after {record['steps']} steps"

    def score_definition(self, config: dict[str, Any]) -> str:
        block = config.get("block")
        shape = "the whole level" if block == 0 else f"{block} x {block} positions x all channels"
        return (
            f"score = max over pixels of anomaly_map; anomaly_map = Euclidean distance of each patch feature to its "
            f"rebuild by a block-wise memory (blocks of {shape}, {config.get('slots')} learned normal blocks, softmax "
            f"of cosine similarity at temperature {config.get('temperature')}), patch features = "
            f"{features_text(config)}, Gaussian-smoothed (sigma {config.get('map_sigma')} px) and bilinearly "
            "upsampled to the input"
        )


PATCHCORE = PatchCoreFamily()
DAAD_F = DaadFFamily()
