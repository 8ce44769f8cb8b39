"""Preprocessing, defined once: training, export, calibration and the camera loop all call this.

A frame leaves here as uint8, H x W x C, in OpenCV's channel order (BGR, or one grey channel).
Cast, scaling, normalisation and the NCHW layout happen inside the model graph, so the host
moves 4x fewer bytes to the device and no Python runs in the hot path. `normalise` is the numpy
statement of what the graph does, for tests and reference.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np

from runtime.errors import DataError
from runtime.optional import cv2

# An image enlarged more than this in a side shows the model less than 1/16 of the detail it
# learned from: a 1x1 or 8x8 file (a thumbnail, a broken export) is no picture of a part.
MAX_ENLARGEMENT = 4


@dataclass(frozen=True)
class PreprocessConfig:
    """Geometry and colour of the model input; stored in checkpoints and model.json."""

    height: int = 128
    width: int = 128
    channels: int = 3  # 3: BGR as OpenCV delivers it; 1: grayscale
    center_crop: float = 1.0  # fraction of each side kept around the centre before resizing
    mean: tuple[float, ...] = field(default=(0.5, 0.5, 0.5))  # per channel, on the [0, 1] scale
    std: tuple[float, ...] = field(default=(0.5, 0.5, 0.5))

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.height < 8 or self.width < 8:
            raise ValueError(f"image size must be at least 8x8, got {self.height}x{self.width}")
        if not 0.0 < self.center_crop <= 1.0:
            raise ValueError(f"center_crop must be in (0, 1], got {self.center_crop}")
        # A grey model keeps one statistic; a colour one keeps three.
        object.__setattr__(self, "mean", _per_channel(self.mean, self.channels, "mean"))
        object.__setattr__(self, "std", _per_channel(self.std, self.channels, "std"))
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")

    @property
    def channel_order(self) -> str:
        return "BGR" if self.channels == 3 else "GRAY"

    @property
    def shape(self) -> tuple[int, int, int]:
        """H, W, C of one prepared frame."""
        return (self.height, self.width, self.channels)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        data["channel_order"] = self.channel_order
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessConfig":
        known = {k: data[k] for k in ("height", "width", "channels", "center_crop", "mean", "std") if k in data}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        return cls(**known)


SIZE_MULTIPLE = 16  # the model's total stride: four 2x downsamplings (train/model.py checks it)
DEFAULT_SHORT_SIDE = 128


def parse_image_size(text: str) -> tuple[int, int]:
    """`--image-size`: "128x320" -> (height 128, width 320); "128" -> (128, 128), square."""
    parts = text.lower().replace("\u00d7", "x").split("x")
    try:
        height, width = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    except (ValueError, IndexError):
        height = width = 0
    if len(parts) > 2 or height < 1 or width < 1:  # an argparse type: the message reaches the user as is
        raise argparse.ArgumentTypeError(f"image size must be HEIGHTxWIDTH (e.g. 128x320) or one number for a square, got {text!r}")
    return height, width


def size_for_aspect(aspect: float, short_side: int = DEFAULT_SHORT_SIDE) -> tuple[int, int]:
    """(height, width) with the shorter side `short_side` and the longer one following `aspect`
    (height / width), rounded to a multiple of SIZE_MULTIPLE: a 1260 x 500 part becomes 320 x 128,
    so a thin crack along the long side is not squeezed by a square input."""
    if not math.isfinite(aspect) or aspect <= 0:
        raise ValueError(f"aspect must be a positive number, got {aspect}")
    longer = max(short_side, round(short_side * max(aspect, 1 / aspect) / SIZE_MULTIPLE) * SIZE_MULTIPLE)
    return (longer, short_side) if aspect >= 1 else (short_side, longer)


def _per_channel(values: Iterable[float], channels: int, name: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) == channels:
        return values
    if len(values) == 1 or len(set(values)) == 1:
        return (values[0],) * channels
    raise ValueError(f"{name} has {len(values)} values for {channels} channel(s)")


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """Bring 16-bit or float frames (TIFF, some industrial cameras) to uint8."""
    if frame.dtype == np.uint8:
        return frame
    if frame.dtype == np.uint16:
        return (frame >> 8).astype(np.uint8)
    if np.issubdtype(frame.dtype, np.floating):
        finite = np.nan_to_num(frame, nan=0.0, posinf=1.0, neginf=0.0)
        scale = 255.0 if finite.max(initial=0.0) <= 1.0 else 1.0
        return np.clip(finite * scale, 0, 255).astype(np.uint8)
    return np.clip(frame, 0, 255).astype(np.uint8)


def to_channels(frame: np.ndarray, channels: int) -> np.ndarray:
    """Grey, BGR or BGRA in; H x W x `channels` out, in OpenCV's channel order."""
    cv = cv2()
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 2:
        return frame[:, :, None] if channels == 1 else cv.cvtColor(frame, cv.COLOR_GRAY2BGR)
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise DataError(f"cannot use a frame of shape {frame.shape}: expected H x W, H x W x 3 or H x W x 4")
    if frame.shape[2] == 4:
        frame = cv.cvtColor(frame, cv.COLOR_BGRA2BGR)
    return frame if channels == 3 else cv.cvtColor(frame, cv.COLOR_BGR2GRAY)[:, :, None]


def center_crop(frame: np.ndarray, fraction: float) -> np.ndarray:
    if fraction >= 1.0:
        return frame
    height, width = frame.shape[:2]
    crop_h, crop_w = max(1, round(height * fraction)), max(1, round(width * fraction))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return frame[top : top + crop_h, left : left + crop_w]


def prepare_frame(frame: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Any frame OpenCV can deliver -> contiguous uint8 H x W x C at the model's size."""
    if frame is None or not isinstance(frame, np.ndarray) or frame.size == 0:
        raise DataError("empty frame: the source delivered no pixels")
    image = center_crop(to_uint8(frame), config.center_crop)
    height, width = image.shape[:2]
    if config.height > MAX_ENLARGEMENT * height or config.width > MAX_ENLARGEMENT * width:
        raise DataError(
            f"{width}x{height} px is too small for the model's {config.width}x{config.height} input "
            f"(more than {MAX_ENLARGEMENT}x enlarged): use images of the whole part at camera resolution"
        )
    if config.channels == 1:
        image = to_channels(image, 1)  # one channel to resize instead of three
    image = resize(image, config.height, config.width)
    return np.ascontiguousarray(to_channels(image, config.channels))


def resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize with area averaging when shrinking, at a fraction of INTER_AREA's cost.

    INTER_AREA at a non-integer factor costs ~4 ms for 1280x720 -> 128x128 on one CPU core,
    as much as the model itself; a bilinear step to the nearest integer multiple of the target
    followed by INTER_AREA at that integer factor costs ~1 ms and differs by a fraction of a
    grey level.
    """
    cv = cv2()
    source_h, source_w = image.shape[:2]
    if (source_h, source_w) == (height, width):
        return image
    factor = min(source_h // height, source_w // width)
    if factor < 1:
        return cv.resize(image, (width, height), interpolation=cv.INTER_LINEAR)
    if (source_h, source_w) != (height * factor, width * factor):
        image = cv.resize(image, (width * factor, height * factor), interpolation=cv.INTER_LINEAR)
    return cv.resize(image, (width, height), interpolation=cv.INTER_AREA)


def grey_for_colour(frame: np.ndarray, config: PreprocessConfig) -> bool:
    """A one-channel image for a colour model: it is used (the grey repeated), but colour defects
    cannot show in it, so every verb names or counts it."""
    return config.channels == 3 and (frame.ndim == 2 or frame.shape[2] == 1)


def prepare_batch(frames: Iterable[np.ndarray], config: PreprocessConfig) -> np.ndarray:
    """Frames -> uint8 N x H x W x C, the input every backend and the model take."""
    prepared = [prepare_frame(frame, config) for frame in frames]
    if not prepared:
        return np.empty((0, *config.shape), dtype=np.uint8)
    return np.stack(prepared)


def normalise(batch: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """uint8 N x H x W x C -> float32 N x C x H x W, exactly as the model graph does it."""
    scaled = batch.astype(np.float32) / np.float32(255.0)
    mean = np.asarray(config.mean, dtype=np.float32)
    std = np.asarray(config.std, dtype=np.float32)
    return np.ascontiguousarray(((scaled - mean) / std).transpose(0, 3, 1, 2))
