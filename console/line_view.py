"""What the console sees of the running line: a sink that only keeps references and counts.

`emit` runs in the loop's thread, so it does no image work: it keeps the latest outcome, a
bounded trend of scores and latencies, and the parts being collected for calibration. The trend
holds the scores of the product on the line since it came on (the drift check compares them with
that product's calibration); a part is collected only for the product the collection began on (NG frames
for review go to disk from a picture writer's thread: console/review.py). Drawing and encoding
the picture happens in the web server's thread, on a frame shrunk to PICTURE_WIDTH, at most
`max_fps` times a second however often browsers ask: that is what keeps the console's cost to
the loop small (docs/CONSOLE.md has the measurement).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from runtime.errors import DaadError
from runtime.line.events import FAULT, NG, OK
from runtime.line.loop import Outcome
from runtime.line.sources import Frame
from runtime.line.overlay import render
from runtime.optional import cv2
from runtime.preprocess import PreprocessConfig

TREND = 300  # scores kept for the trend plot and the drift check
JPEG_QUALITY = 80
PICTURE_WIDTH = 640  # pixels; the heat map is drawn on a frame shrunk to this, not on a 1080p original
TAKE_QUEUE = 8  # camera frames waiting for a teach to prepare them: a few full-size frames, not a shift's


@dataclass
class Collection:
    """The next `wanted` scored parts of `product` on the line, taken as good parts for its calibration."""

    wanted: int
    product: str | None = None  # None: a run of one --bundle
    scores: list[float] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return len(self.scores) >= self.wanted


class LineView:
    """Sink: the live state of the line, read by the console's routes from other threads."""

    def __init__(self, config: PreprocessConfig, counters: Callable[[], dict[str, int]] = dict,
                 max_fps: float = 2.0, run_id: str | None = None) -> None:
        self.config, self.counters, self.run_id = config, counters, run_id
        self.min_interval = 1.0 / max_fps
        self._lock = threading.Lock()
        self._latest: Outcome | None = None
        self._verdicts = {OK: 0, NG: 0, FAULT: 0}
        self._trend: deque[tuple[int, float, float]] = deque(maxlen=TREND)  # frame, score, threshold
        self._trend_product: str | None = None  # whose scores the trend holds
        self._latency: deque[float] = deque(maxlen=TREND)  # seconds from capture to verdict
        self._done_at: deque[float] = deque(maxlen=TREND)
        self._collection: Collection | None = None
        self._taking: queue.Queue[Frame] | None = None  # frames handed to a teach (console/teach_desk.py)
        self._jpeg: tuple[Outcome, float, bytes] | None = None  # the frame pictured, when encoded, JPEG
        self._encode_lock = threading.Lock()

    def emit(self, outcome: Outcome) -> None:
        now = time.perf_counter()
        frame, score = outcome.frame, outcome.scored.score
        with self._lock:
            self._latest = outcome
            self._verdicts[outcome.verdict] += 1
            self._latency.append(now - frame.started_at)
            self._done_at.append(now)
            if self._taking is not None and frame.image is not None:
                try:  # a reference only: the teach's thread prepares it; a frame finding the queue full is not taken
                    self._taking.put_nowait(frame)
                except queue.Full:
                    pass
            if outcome.product != self._trend_product:  # another product came on: its scores start afresh
                self._trend.clear()
                self._trend_product = outcome.product
            if math.isfinite(score):
                self._trend.append((frame.index, score, outcome.threshold))
                collection = self._collection
                if collection is not None and not collection.done and outcome.product == collection.product:
                    collection.scores.append(score)
                    collection.names.append(frame.name or f"frame {frame.index}")

    def close(self) -> None:
        """Nothing to release: the view holds references only."""

    def snapshot(self) -> dict:
        """Counters, rates and the trend, JSON-ready."""
        with self._lock:
            latest, verdicts = self._latest, dict(self._verdicts)
            trend, latency, done_at = list(self._trend), np.array(self._latency), np.array(self._done_at)
        fps = (len(done_at) - 1) / (done_at[-1] - done_at[0]) if len(done_at) > 1 and done_at[-1] > done_at[0] else None
        p50, p90, p99 = (np.percentile(latency, [50, 90, 99]) * 1e3).tolist() if latency.size else (None,) * 3
        current = None
        if latest is not None:
            score = latest.scored.score
            current = {"frame": latest.frame.index, "name": latest.frame.name, "verdict": latest.verdict,
                       "score": score if math.isfinite(score) else None, "threshold": latest.threshold,
                       "fault": latest.scored.fault, "product": latest.product}
        return {
            "current": current,
            "verdicts": verdicts,
            "counters": self.counters(),
            "fps": fps,
            "latency_ms": {"p50": p50, "p90": p90, "p99": p99},
            "trend": {"frame": [t[0] for t in trend], "score": [t[1] for t in trend],
                      "threshold": [t[2] for t in trend]},
        }

    def recent_scores(self, count: int, product: str | None = None) -> np.ndarray:
        """The last `count` scores of `product` since it came on the line; none while another one's are held."""
        with self._lock:
            if product != self._trend_product:
                return np.empty(0, dtype=np.float64)
            return np.array([score for _, score, _ in self._trend][-count:], dtype=np.float64)

    def frame_jpeg(self) -> tuple[Outcome, bytes] | None:
        """The latest frame with its heat map as JPEG, with the outcome it shows (so the page's
        verdict describes the part in the picture, not a newer one); re-encoded at most every
        `min_interval` seconds."""
        with self._encode_lock:
            with self._lock:
                latest = self._latest
            if latest is None:
                return None
            now = time.monotonic()
            cached = self._jpeg
            if cached is not None and (cached[0] is latest or now - cached[1] < self.min_interval):
                return cached[0], cached[2]
            image = self.picture(latest)
            if image is None:
                return (cached[0], cached[2]) if cached else None
            self._jpeg = (latest, now, image)
            return latest, image

    def picture(self, outcome: Outcome) -> bytes | None:
        """JPEG of `picture_image`; None without pixels."""
        image = self.picture_image(outcome)
        return None if image is None else encode_jpeg(image)

    def picture_image(self, outcome: Outcome) -> np.ndarray | None:
        """The frame shrunk to PICTURE_WIDTH with its heat map and verdict; None without pixels."""
        image = outcome.frame.image
        if image is None or image.size == 0:
            return None
        if image.shape[1] > PICTURE_WIDTH:
            height = max(1, round(image.shape[0] * PICTURE_WIDTH / image.shape[1]))
            image = cv2().resize(image, (PICTURE_WIDTH, height), interpolation=cv2().INTER_AREA)
            outcome = replace(outcome, frame=replace(outcome.frame, image=image))
        return render(outcome, self.config)

    def collect(self, wanted: int, product: str | None = None) -> None:
        """Start taking the next `wanted` parts of `product` as good ones (replacing a collection under way)."""
        if wanted < 1:
            raise DaadError(f"the number of parts to collect must be at least 1, got {wanted}")
        with self._lock:
            self._collection = Collection(wanted, product)

    def take_frames(self) -> "queue.Queue[Frame]":
        """Hand the camera frames from now on to the returned queue, until `stop_taking`: the parts a
        product is taught from. It is bounded, so a teach that falls behind costs the loop nothing."""
        taking: queue.Queue[Frame] = queue.Queue(maxsize=TAKE_QUEUE)
        with self._lock:
            self._taking = taking
        return taking

    def stop_taking(self, taking: "queue.Queue[Frame]") -> None:
        with self._lock:
            if self._taking is taking:
                self._taking = None

    def collection(self) -> Collection | None:
        with self._lock:
            if self._collection is None:
                return None
            held = self._collection
            return Collection(held.wanted, held.product, list(held.scores), list(held.names))


def encode_jpeg(image: np.ndarray) -> bytes:
    ok, encoded = cv2().imencode(".jpg", image, [cv2().IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise DaadError(f"OpenCV could not encode an image of shape {image.shape} as JPEG")
    return encoded.tobytes()
