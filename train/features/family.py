"""The feature families: a frozen pretrained backbone and a memory fitted in one pass."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from patchmemory.coreset import greedy_coreset
from runtime.errors import DaadError
from runtime.optional import require
from runtime.preprocess import PreprocessConfig
from train.config import ConfigError, TrainConfig
from train.evaluate import ReconstructFn
from train.features.fit import extract_features, load_good_images, patch_rows, save_fit
from train.features.patch_features import FeatureConfigError, feature_preprocess
from train.features.patchcore import PatchCoreConfig, PatchCoreModel
from train.fitting import TrainResult, resolve_device

FEATURE_SHORT_SIDE = 224  # docs/RESULTS.md, "Feature memory": 128 px loses cracks on KolektorSDD


def _config(cls: Any, data: dict[str, Any]) -> Any:
    try:
        return cls.from_dict(data)
    except FeatureConfigError as exc:
        raise ConfigError(str(exc)) from exc
    except TypeError as exc:  # an unknown key
        raise ConfigError(f"{data.get('kind')} config: {exc}") from exc


def _no_resume(kind: str, resume: bool) -> None:
    if resume:
        raise DaadError(f"{kind} is fitted in one pass and has nothing to resume: run `daad train` again without --resume")


class PatchCoreFamily:
    """`patchcore`: nearest neighbour over a greedy coreset of the good images' patch features."""

    default_short_side = FEATURE_SHORT_SIDE
    trains_by_steps = False

    def config_from_dict(self, data: dict[str, Any], saved: bool = False) -> PatchCoreConfig:
        return _config(PatchCoreConfig, data)

    def preprocess(self, height: int, width: int, channels: int) -> PreprocessConfig:
        if height % 16 or width % 16:
            raise ConfigError(f"image size {height}x{width} must be a multiple of 16 (the backbone's stride-16 level)")
        return feature_preprocess(height, width, channels)

    def build(self, config: PatchCoreConfig, preprocess: PreprocessConfig) -> PatchCoreModel:
        try:
            return PatchCoreModel(config, preprocess)
        except FeatureConfigError as exc:
            raise ConfigError(str(exc)) from exc

    def fit(self, data_root: Path, out_dir: Path, config: PatchCoreConfig, train_config: TrainConfig,
            preprocess: PreprocessConfig, resume: bool, progress: bool) -> TrainResult:  # fmt: skip
        _no_resume(config.kind, resume)
        begun = time.perf_counter()
        images, meta = load_good_images(Path(data_root), preprocess, progress)
        model = self.build(config, preprocess).to(resolve_device(train_config.device))
        rows = patch_rows(extract_features(model, images, train_config, progress))
        tqdm = require("tqdm", "progress bars").tqdm
        size = min(config.memory_size, len(rows))
        with tqdm(total=size, desc="coreset", unit="patch", file=sys.stderr, disable=not progress) as bar:
            chosen = greedy_coreset(rows, size, seed=train_config.seed, progress=lambda done, _: bar.update(done - bar.n))
            bar.update(size - bar.n)
        model.set_memory(rows[chosen])
        seconds = time.perf_counter() - begun
        record = {"epoch": 1, "images": len(images), "patches": len(rows), "memory": len(chosen), "fit_seconds": seconds}
        summary = (f"fitted {config.kind}: {len(chosen)} of {len(rows):,} patches from {len(images)} good images "
                   f"in {seconds:.0f} s")  # fmt: skip
        return save_fit(Path(out_dir), model, config, train_config, preprocess, meta, record, summary)

    def reconstructor(self, model: PatchCoreModel) -> ReconstructFn | None:
        return None

    def score_definition(self, config: dict[str, Any]) -> str:
        features = config.get("features", {})
        return (
            f"score = max over pixels of anomaly_map; anomaly_map = Euclidean distance of each patch feature to its "
            f"nearest neighbour among {config.get('memory_size')} good patches (greedy coreset), patch features = "
            f"EfficientNet-{features.get('backbone')} levels {', '.join(features.get('levels', []))} averaged over "
            f"{features.get('aggregation')} x {features.get('aggregation')} and concatenated, Gaussian-smoothed "
            f"(sigma {config.get('map_sigma')} px) and bilinearly upsampled to the input"
        )


PATCHCORE = PatchCoreFamily()
