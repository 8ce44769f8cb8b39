"""A heat map of the anomaly map over the camera frame, for the technician who reviews NG parts."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from runtime.atomic import writing
from runtime.errors import DaadError
from runtime.optional import cv2
from runtime.preprocess import PreprocessConfig, center_crop, to_channels, to_uint8

if TYPE_CHECKING:
    from runtime.line.loop import Outcome

VERDICT_COLOURS = {"OK": (0, 200, 0), "NG": (0, 0, 255), "FAULT": (0, 200, 255)}  # BGR


def heatmap_overlay(frame: np.ndarray, anomaly_map: np.ndarray, config: PreprocessConfig,
                    scale: float, label: str = "", verdict: str = "", alpha: float = 0.45) -> np.ndarray:
    """BGR uint8 frame with the map (H x W, model resolution) blended over the region the model saw.

    `scale` maps anomaly values to colours (value/scale -> 0..1, clipped) so one colour means the
    same anomaly level on every saved image; the caller passes e.g. twice the threshold.
    """
    cv = cv2()
    image = np.array(to_channels(to_uint8(frame), 3))  # a copy: the caller's frame stays untouched
    region = center_crop(image, config.center_crop)  # a view: blending into it paints the image
    crop_h, crop_w = region.shape[:2]
    level = np.nan_to_num(np.asarray(anomaly_map, dtype=np.float32).squeeze(), nan=0.0, posinf=scale, neginf=0.0)
    level = np.clip(level / max(scale, 1e-12), 0.0, 1.0)
    level = cv.resize((level * 255).astype(np.uint8), (crop_w, crop_h), interpolation=cv.INTER_LINEAR)
    colours = cv.applyColorMap(level, cv.COLORMAP_JET)
    region[:] = cv.addWeighted(region, 1.0 - alpha, colours, alpha, 0.0)
    if label:
        colour = VERDICT_COLOURS.get(verdict, (255, 255, 255))
        size = max(0.4, min(image.shape[:2]) / 600.0)
        cv.putText(image, label, (8, max(16, int(24 * size))), cv.FONT_HERSHEY_SIMPLEX, size, colour,
                   max(1, int(2 * size)), cv.LINE_AA)
    return image


def render(outcome: "Outcome", config: PreprocessConfig, scale: float) -> np.ndarray | None:
    """The frame with its heat map and verdict label; None when the frame has no pixels."""
    image = outcome.frame.image
    if image is None or image.size == 0:
        return None
    score = outcome.scored.score
    label = f"#{outcome.frame.index} {outcome.verdict} {score:.4g} (thr {outcome.threshold:.4g})"
    anomaly_map = outcome.scored.anomaly_map
    if anomaly_map is None:
        anomaly_map = np.zeros((config.height, config.width), dtype=np.float32)
    return heatmap_overlay(image, anomaly_map, config, scale, label, outcome.verdict)


class OverlayVideo:
    """Writes every judged frame, with its overlay, to a video file (MJPG for .avi, mp4v otherwise)."""

    def __init__(self, path: str | Path, config: PreprocessConfig, scale: float, fps: float = 15.0) -> None:
        self.path, self.config, self.scale, self.fps = Path(path), config, scale, fps
        self._writer = None
        self._size: tuple[int, int] | None = None

    def emit(self, outcome: "Outcome") -> None:
        image = render(outcome, self.config, self.scale)
        if image is None:
            return
        cv = cv2()
        if self._writer is None:
            self._size = (image.shape[1], image.shape[0])
            fourcc = cv.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
            with writing(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = cv.VideoWriter(str(self.path), fourcc, self.fps, self._size)
            if not self._writer.isOpened():
                raise DaadError(f"cannot write video {self.path}: use a .avi (MJPG) or .mp4 (mp4v) file name "
                                "in a writable folder for --output.")
        if (image.shape[1], image.shape[0]) != self._size:  # the camera changed resolution mid-run
            image = cv.resize(image, self._size)
        self._writer.write(image)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class OverlayWindow:
    """Shows each judged frame in a window; pressing q or Esc sets `stop`."""

    TITLE = "daad run"

    def __init__(self, config: PreprocessConfig, scale: float, stop: threading.Event) -> None:
        cv = cv2()
        self.config, self.scale, self.stop = config, scale, stop
        try:
            cv.namedWindow(self.TITLE, cv.WINDOW_NORMAL)
        except cv.error as exc:
            raise DaadError(
                f"this OpenCV cannot open a window ({getattr(exc, 'err', exc)}): "
                "opencv-python-headless has no GUI; on a Jetson use the system OpenCV, or drop --display."
            ) from exc

    def emit(self, outcome: "Outcome") -> None:
        image = render(outcome, self.config, self.scale)
        if image is None:
            return
        cv = cv2()
        cv.imshow(self.TITLE, image)
        if cv.waitKey(1) & 0xFF in (ord("q"), 27):
            self.stop.set()

    def close(self) -> None:
        cv2().destroyAllWindows()
