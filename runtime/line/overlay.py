"""A heat map of the anomaly map over the camera frame, for the technician who reviews NG parts."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from runtime.atomic import writing
from runtime.errors import DaadError
from runtime.optional import cv2
from runtime.preprocess import PreprocessConfig, center_crop, to_channels, to_uint8
from runtime.score_scale import ScoreScale, colour_map

if TYPE_CHECKING:
    from runtime.line.loop import Outcome

VERDICT_COLOURS = {"OK": (0, 200, 0), "NG": (0, 0, 255), "FAULT": (0, 200, 255)}  # BGR


def blend_heatmap(image: np.ndarray, anomaly_map: np.ndarray, scale: ScoreScale, alpha: float = 0.45) -> np.ndarray:
    """BGR uint8 image with the map (H x W, any resolution) blended over all of it, in the
    product's colours (runtime.score_scale.colour_map: the threshold is mid-map on every product)."""
    cv = cv2()
    values = np.asarray(anomaly_map, dtype=np.float32).squeeze()
    values = cv.resize(values, (image.shape[1], image.shape[0]), interpolation=cv.INTER_LINEAR)
    return cv.addWeighted(image, 1.0 - alpha, colour_map(values, scale), alpha, 0.0)


def heatmap_overlay(frame: np.ndarray, anomaly_map: np.ndarray, config: PreprocessConfig,
                    scale: ScoreScale, label: str = "", verdict: str = "", alpha: float = 0.45) -> np.ndarray:
    """BGR uint8 frame with the map (H x W, model resolution) blended over the region the model saw."""
    image = np.array(to_channels(to_uint8(frame), 3))  # a copy: the caller's frame stays untouched
    region = center_crop(image, config.center_crop)  # a view: blending into it paints the image
    region[:] = blend_heatmap(region, anomaly_map, scale, alpha)
    if label:
        cv = cv2()
        colour = VERDICT_COLOURS.get(verdict, (255, 255, 255))
        size = max(0.4, min(image.shape[:2]) / 600.0)
        cv.putText(image, label, (8, max(16, int(24 * size))), cv.FONT_HERSHEY_SIMPLEX, size, colour,
                   max(1, int(2 * size)), cv.LINE_AA)
    return image


def render(outcome: "Outcome", config: PreprocessConfig) -> np.ndarray | None:
    """The frame with its heat map and verdict label; None when the frame has no pixels. Colours
    and the readable score follow the calibration the frame was judged by (a technician may
    switch it live)."""
    image = outcome.frame.image
    if image is None or image.size == 0:
        return None
    scale = outcome.calibration.scale
    score = outcome.scored.score
    readable = f"{scale.readable(score):g}/100" if math.isfinite(score) else "no score"
    label = f"#{outcome.frame.index} {outcome.verdict} {readable} (score {score:.4g}, thr {outcome.threshold:.4g})"
    anomaly_map = outcome.scored.anomaly_map
    if anomaly_map is None:
        anomaly_map = np.full((config.height, config.width), scale.typical_good, dtype=np.float32)
    return heatmap_overlay(image, anomaly_map, config, scale, label, outcome.verdict)


class OverlayVideo:
    """Writes every judged frame, with its overlay, to a video file (MJPG for .avi, mp4v otherwise)."""

    def __init__(self, path: str | Path, config: PreprocessConfig, fps: float = 15.0) -> None:
        self.path, self.config, self.fps = Path(path), config, fps
        self._writer = None
        self._size: tuple[int, int] | None = None

    def emit(self, outcome: "Outcome") -> None:
        image = render(outcome, self.config)
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

    def __init__(self, config: PreprocessConfig, stop: threading.Event) -> None:
        cv = cv2()
        self.config, self.stop = config, stop
        try:
            cv.namedWindow(self.TITLE, cv.WINDOW_NORMAL)
        except cv.error as exc:
            raise DaadError(
                f"this OpenCV cannot open a window ({getattr(exc, 'err', exc)}): "
                "opencv-python-headless has no GUI; on a Jetson use the system OpenCV, or drop --display."
            ) from exc

    def emit(self, outcome: "Outcome") -> None:
        image = render(outcome, self.config)
        if image is None:
            return
        cv = cv2()
        cv.imshow(self.TITLE, image)
        if cv.waitKey(1) & 0xFF in (ord("q"), 27):
            self.stop.set()

    def close(self) -> None:
        cv2().destroyAllWindows()
