"""RUN/checkpoint.pt: weights, configs, preprocessing, versions; plain data only.

Read with `torch.load(weights_only=True)`: a checkpoint from somewhere else cannot run code
when opened. Configs are stored as dicts; optimiser states and the epoch ride along so that
`daad train --resume` continues where a run stopped.
"""

from __future__ import annotations

import io
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from runtime.atomic import atomic_write_bytes
from runtime.errors import DaadError
from runtime.preprocess import PreprocessConfig
from torch import nn

from train.config import TrainConfig
from train.families import ModelConfigLike, family_for

FORMAT = "daad-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(DaadError):
    """A checkpoint file that is missing, truncated, foreign or from an incompatible version."""


@dataclass
class LoadedCheckpoint:
    model: nn.Module  # in eval mode
    model_config: ModelConfigLike  # its family's config
    preprocess: PreprocessConfig
    train_config: TrainConfig
    meta: dict[str, Any]  # versions, creation time, training data summary, metrics
    state: dict[str, Any] = field(default_factory=dict)  # optimiser states, epoch: for --resume


def versions() -> dict[str, str]:
    try:
        package = metadata.version("daad-edge")
    except metadata.PackageNotFoundError:
        package = "unknown"
    return {"daad_edge": package, "torch": str(torch.__version__), "python": platform.python_version()}


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    model_config: ModelConfigLike,
    preprocess: PreprocessConfig,
    train_config: TrainConfig,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write atomically. `extra["meta"]` joins the metadata; other keys (optimisers, epoch) are state."""
    extra = dict(extra or {})
    meta = {"versions": versions(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    meta.update(extra.pop("meta", {}))
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_config": model_config.to_dict(),
        "preprocess": preprocess.to_dict(),
        "train_config": train_config.to_dict(),
        "meta": meta,
        "state": extra,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path, device: str = "cpu") -> LoadedCheckpoint:
    """Read a checkpoint written by `save_checkpoint`; anything else -> CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: train one with `daad train --out RUN`")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, text file: all the same to the user
        raise CheckpointError(
            f"{path} is not a readable daad checkpoint ({type(exc).__name__}): it may be truncated "
            "or written by another program; re-run `daad train` to write a new one"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a daad checkpoint (no '{FORMAT}' marker): pass RUN/checkpoint.pt")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {payload.get('format_version')}, this version reads "
            f"{FORMAT_VERSION}: retrain with this version"
        )
    try:
        family = family_for(payload["model_config"].get("kind", "daad+"))
        model_config = family.config_from_dict(payload["model_config"], saved=True)
        preprocess = PreprocessConfig.from_dict(payload["preprocess"])
        train_config = TrainConfig.from_dict(payload["train_config"])
        model = family.build(model_config, preprocess)
        model.load_state_dict(payload["model_state"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, DaadError) as exc:
        raise CheckpointError(f"{path} does not match this version's model ({exc}): retrain with this version") from exc
    model.to(device).eval()
    return LoadedCheckpoint(model, model_config, preprocess, train_config, payload.get("meta", {}), payload.get("state", {}))
