"""Frame sources named by URI, as a line engineer types them.

    0, 1, ...           camera index (V4L2 / the OS default)
    /dev/video0         a V4L2 device
    csi://0             a Jetson CSI camera (nvarguscamerasrc), e.g. csi://0?width=1920&height=1080&fps=30
    rtsp://… http://…   a network stream
    "… ! appsink"       a GStreamer pipeline (needs OpenCV built with GStreamer)
    part.avi            a video file
    images/ or "*.png"  an image folder or glob, in sorted order, each frame named after its file

A source's `read()` returns a Frame, or None at the end of a file. Live sources are wrapped in
`Reconnecting`: a failed read reopens the source with exponential backoff instead of ending the
run, so a camera cable pulled for a minute costs a minute of frames, not the line.
"""

from __future__ import annotations

import glob
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol
from urllib.parse import parse_qs, urlparse

import numpy as np

from runtime.errors import DataError
from runtime.images import IMAGE_SUFFIXES, list_images, read_image
from runtime.optional import cv2

log = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp")
NETWORK_TIMEOUT_MS = 5000
DAMAGED_READS = 8  # failed reads in a row a video file may have before it counts as ended


@dataclass
class Frame:
    """One captured image (None when the source delivered nothing) and where it came from."""

    image: np.ndarray | None
    name: str | None = None  # file name for image folders
    index: int = -1  # position in the stream; this and the rest are stamped by FrameReader
    started_at: float = 0.0  # time.perf_counter() when reading it began
    read_s: float = 0.0  # time the source took to deliver it (grab + decode)
    prepared: np.ndarray | None = None  # the model input, when the reader prepared it
    prepare_s: float = 0.0
    ready_at: float = 0.0  # time.perf_counter() when the loop could take it


class Source(Protocol):
    name: str
    live: bool  # a camera or stream: read failures are transient, there is no end

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...


class SourceReadError(DataError):
    """A live source failed to deliver a frame; `Reconnecting` retries it."""


@dataclass(frozen=True)
class Backoff:
    """Delays between reconnect attempts: initial, x factor each failure, capped; bounded attempts."""

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 10.0
    attempts: int = 30  # consecutive failures before the run gives up on the source

    def delay(self, failures: int) -> float:
        return min(self.max_s, self.initial_s * self.factor ** max(0, failures - 1))


class VideoCaptureSource:
    """Anything cv2.VideoCapture opens: a camera, a device, a file, a URL or a pipeline.

    A video file is read past damaged frames (up to DAMAGED_READS failed reads in a row, counted
    in `read_errors`), and an end before the frame count its header declares is kept in `warning`
    for the run to report, so a truncated or damaged file never passes for a complete one.
    """

    def __init__(self, target: str | int, name: str, live: bool, api: int | None = None,
                 params: list[int] | None = None, loop: bool = False, hint: str = "") -> None:
        self.name, self.live, self.loop = name, live, loop
        self._open_args = (target, api, params or [])
        self._hint = hint
        self._capture = self._open()
        cv = cv2()
        self.fps = float(self._capture.get(cv.CAP_PROP_FPS) or 0.0)  # 0 when the source does not say
        declared = 0 if live else self._capture.get(cv.CAP_PROP_FRAME_COUNT)
        self.frames_expected = int(declared) if declared and declared > 0 else 0  # 0: the container does not say
        self.read_errors = 0
        self.warning: str | None = None  # the last early end, for the summary
        self._delivered = 0  # frames of this pass through the file

    def _open(self):  # -> cv2.VideoCapture
        cv = cv2()
        target, api, params = self._open_args
        capture = cv.VideoCapture(target, api if api is not None else cv.CAP_ANY, params)
        if not capture.isOpened():
            capture.release()
            raise DataError(f"cannot open source {self.name}{': ' + self._hint if self._hint else ''}")
        return capture

    def read(self) -> Frame | None:
        ok, image = self._capture.read()
        if not ok:
            if self.live:
                raise SourceReadError(f"source {self.name}: no frame delivered")
            image = self._past_damage()
        if image is not None:
            self._delivered += 1
            return Frame(image)
        self._check_complete()
        if not self.loop:
            return None
        self._capture.release()
        self._capture = self._open()
        self._delivered = 0
        ok, image = self._capture.read()
        if not ok:
            return None
        self._delivered += 1
        return Frame(image)

    def _past_damage(self) -> np.ndarray | None:
        """After a failed read of a file: the next frame that decodes, or None at the end."""
        for failed in range(1, DAMAGED_READS + 1):
            position = self._capture.get(cv2().CAP_PROP_POS_FRAMES)
            if self.frames_expected and position >= self.frames_expected:
                return None  # the declared end: nothing is missing
            ok, image = self._capture.read()
            if ok:
                self.read_errors += failed
                log.warning("source %s: skipped %d damaged frame(s) at frame %d", self.name, failed, self._delivered)
                return image
        return None

    def _check_complete(self) -> None:
        if self.frames_expected and self._delivered < self.frames_expected:
            self.warning = (f"source {self.name} ended after {self._delivered} of the {self.frames_expected} "
                            "frames its header declares: the file is truncated or damaged")

    def close(self) -> None:
        self._capture.release()


class ImageFilesSource:
    """Image files in the given order; an unreadable file is delivered as an empty frame (a FAULT)."""

    live = False

    def __init__(self, paths: list[Path], name: str, loop: bool = False, root: Path | None = None) -> None:
        if not paths:
            raise DataError(f"source {name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}): check the path.")
        self.paths, self.name, self.loop = paths, name, loop
        self.root = root  # frames are named relative to it (good/000.png, crack/000.png), else by file name
        self._position = 0

    def read(self) -> Frame | None:
        if self._position >= len(self.paths):
            if not self.loop:
                return None
            self._position = 0
        path = self.paths[self._position]
        self._position += 1
        name = path.relative_to(self.root).as_posix() if self.root is not None else path.name
        return Frame(read_image(path), name=name)

    def close(self) -> None:
        self._position = len(self.paths)


class Reconnecting:
    """Wraps a live source: a failed read closes it and reopens it after a growing delay.

    Gives up (DataError) after `backoff.attempts` consecutive failures; a good frame resets the
    count. `sleep` is injectable so tests run thousands of faults without waiting.
    """

    def __init__(self, opener: Callable[[], Source], backoff: Backoff = Backoff(),
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._opener, self.backoff, self._sleep = opener, backoff, sleep
        self._source: Source | None = opener()
        self.name, self.live = self._source.name, True
        self.read_errors = self.reconnects = self._failures = 0

    def read(self) -> Frame | None:
        while True:
            try:
                if self._source is None:
                    self._source = self._opener()
                    self.reconnects += 1
                frame = self._source.read()
            except Exception as exc:  # any failure of a live source is worth a reconnect
                self._recover(exc)
                continue
            self._failures = 0
            return frame

    def _recover(self, exc: Exception) -> None:
        self.read_errors += 1
        self._failures += 1
        if self._failures > self.backoff.attempts:
            raise DataError(
                f"source {self.name} failed {self._failures} times in a row (last: {exc}): "
                "check the camera, its cable or the stream URL."
            ) from exc
        if self._source is not None:
            try:
                self._source.close()
            except Exception:  # closing a broken capture may fail too; it is being replaced
                pass
            self._source = None
        delay = self.backoff.delay(self._failures)
        log.warning("source %s: %s; reconnecting in %.1f s (failure %d)", self.name, exc, delay, self._failures)
        self._sleep(delay)

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None


def gstreamer_available() -> bool:
    info = cv2().getBuildInformation()
    return any("GStreamer" in line and "YES" in line for line in info.splitlines())


def csi_pipeline(uri: str) -> str:
    """csi://N[?width=&height=&fps=&flip=] -> an nvarguscamerasrc pipeline ending in BGR appsink."""
    parsed = urlparse(uri)
    query = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
    sensor = parsed.netloc or parsed.path.strip("/") or "0"
    if not sensor.isdigit():
        raise DataError(f"source {uri}: expected csi://N with N the sensor id, e.g. csi://0")
    width, height = int(query.get("width", 1920)), int(query.get("height", 1080))
    fps, flip = int(query.get("fps", 30)), int(query.get("flip", 0))
    return (
        f"nvarguscamerasrc sensor-id={sensor} ! "
        f"video/x-raw(memory:NVMM), width={width}, height={height}, framerate={fps}/1, format=NV12 ! "
        f"nvvidconv flip-method={flip} ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! "
        "appsink drop=true max-buffers=1 sync=false"
    )


def _gstreamer_source(pipeline: str, name: str) -> VideoCaptureSource:
    if not gstreamer_available():
        raise DataError(
            f"source {name} needs OpenCV built with GStreamer, and this OpenCV has none "
            "(cv2.getBuildInformation() shows GStreamer: NO). On a Jetson use JetPack's system OpenCV: "
            "create the venv with --system-site-packages and uninstall opencv-python-headless from it."
        )
    return VideoCaptureSource(pipeline, name, live=True, api=cv2().CAP_GSTREAMER,
                              hint="check the pipeline with gst-launch-1.0")


def open_source(uri: str, loop: bool = False, backoff: Backoff = Backoff(),
                sleep: Callable[[float], None] = time.sleep) -> Source:
    """Open the source `uri` names (see the module docstring); DataError naming it if it cannot."""
    cv = cv2()
    text = str(uri).strip()
    scheme = urlparse(text).scheme.lower()
    if text.isdigit():
        index = int(text)
        return Reconnecting(lambda: VideoCaptureSource(index, f"camera {index}", live=True,
                                                       hint="is the camera connected and not used by another program?"),
                            backoff, sleep)
    if text.startswith("/dev/video"):
        return Reconnecting(lambda: VideoCaptureSource(text, text, live=True, api=cv.CAP_V4L2,
                                                       hint="check the device exists and you are in the video group"),
                            backoff, sleep)
    if scheme == "csi":
        pipeline = csi_pipeline(text)
        return Reconnecting(lambda: _gstreamer_source(pipeline, text), backoff, sleep)
    if "!" in text:
        return Reconnecting(lambda: _gstreamer_source(text, "GStreamer pipeline"), backoff, sleep)
    if scheme in STREAM_SCHEMES:
        timeouts = [cv.CAP_PROP_OPEN_TIMEOUT_MSEC, NETWORK_TIMEOUT_MS,
                    cv.CAP_PROP_READ_TIMEOUT_MSEC, NETWORK_TIMEOUT_MS]
        return Reconnecting(lambda: VideoCaptureSource(text, text, live=True, api=cv.CAP_FFMPEG, params=timeouts,
                                                       hint="check the URL, the network and the camera's credentials"),
                            backoff, sleep)
    path = Path(text)
    if path.is_dir():
        return ImageFilesSource(list_images(path), str(path), loop=loop)
    if any(char in text for char in "*?["):
        matches = [Path(p) for p in sorted(glob.glob(text)) if Path(p).suffix.lower() in IMAGE_SUFFIXES]
        return ImageFilesSource(matches, text, loop=loop, root=source_location(text))
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageFilesSource([path], str(path), loop=loop)
        return VideoCaptureSource(str(path), str(path), live=False, loop=loop,
                                  hint="OpenCV cannot decode this file (is it a video, and complete?)")
    raise DataError(
        f"source {text!r} is not a camera index, /dev/videoN, csi://N, URL, GStreamer pipeline, "
        "existing video file, image folder or glob: check the spelling."
    )


def source_location(uri: str) -> Path | None:
    """The file or folder a file source reads (a glob's fixed leading folder), so outputs can be kept off it.

    None for cameras, devices, streams and pipelines, which are no files.
    """
    text = str(uri).strip()
    if text.isdigit() or "!" in text or urlparse(text).scheme.lower() in (*STREAM_SCHEMES, "csi"):
        return None
    if any(char in text for char in "*?["):
        parts = Path(text).parts
        fixed = next(index for index, part in enumerate(parts) if any(char in part for char in "*?["))
        return Path(*parts[:fixed]) if fixed else Path(".")
    path = Path(text)
    return path if path.exists() else None


MODES = ("realtime", "lossless")


class Pacer:
    """Waits until the next frame of a camera running at `fps` is due: a file read like a camera.

    The wait comes before a frame is read (FrameReader's `pace`), so a frame's capture time is its
    decoding, as on a camera, not the wait. A reader that falls behind does not catch up in a burst:
    the next frame is due one interval after the later of its schedule and now.
    """

    def __init__(self, fps: float, clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not fps > 0 or fps == float("inf"):
            raise DataError(f"--fps must be a positive finite number of frames per second, got {fps}")
        self.interval, self.clock, self.sleep = 1.0 / fps, clock, sleep
        self._due: float | None = None

    def __call__(self) -> None:
        now = self.clock()
        if self._due is not None and now < self._due:
            self.sleep(self._due - now)
        self._due = max(self._due if self._due is not None else now, now) + self.interval


class FrameReader:
    """Reads a source on its own thread, so capture and decoding overlap inference.

    lossless: a bounded queue; the reader waits while it is full, so every frame arrives, in order.
    realtime: one slot with the newest frame; a frame the loop did not take before the next one
    arrived is dropped and counted, so latency stays bounded when the camera outpaces the model.
    Iterating yields frames until the source ends or `stop` is set; a fatal source error is
    re-raised in the iterating thread after the frames read before it.

    With `prepare` (e.g. runtime.preprocess.prepare_frame for the model), the reader also
    prepares each frame, so preprocessing overlaps inference too. Worth it in lossless mode; in
    realtime mode it would be spent on frames that are then dropped. With `pace` (a Pacer), each
    read waits until its frame is due: a file delivered at a camera's rate.
    """

    def __init__(self, source: Source, mode: str = "lossless", stop: threading.Event | None = None,
                 depth: int = 4, prepare: Callable[[np.ndarray | None], np.ndarray] | None = None,
                 stall_s: float = 60.0, pace: Callable[[], None] | None = None) -> None:
        if mode not in MODES:
            raise DataError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
        self.source, self.mode, self.prepare, self.stall_s, self.pace = source, mode, prepare, stall_s, pace
        self.stop = stop or threading.Event()
        self._capacity = depth if mode == "lossless" else 1
        self._queue: deque[Frame] = deque()
        self._ready = threading.Condition()
        self._finished = False
        self._error: BaseException | None = None
        self.produced = self.dropped = self.stalls = 0
        self._thread = threading.Thread(target=self._capture, name=f"capture {source.name}", daemon=True)

    def __enter__(self) -> "FrameReader":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _capture(self) -> None:
        try:
            while not self.stop.is_set():
                if self.pace is not None:
                    self.pace()
                started = time.perf_counter()
                frame = self.source.read()
                if frame is None:
                    break
                frame.started_at, frame.read_s = started, time.perf_counter() - started
                if self.prepare is not None:
                    self._prepare(frame)
                frame.ready_at = time.perf_counter()
                self._put(frame)
        except BaseException as exc:  # handed to the loop's thread, which decides
            self._error = exc
        finally:
            with self._ready:
                self._finished = True
                self._ready.notify_all()

    def _prepare(self, frame: Frame) -> None:
        started = time.perf_counter()
        try:
            frame.prepared = self.prepare(frame.image)
        except Exception:  # a bad frame: the loop prepares it again and reports the fault
            frame.prepared = None
        frame.prepare_s = time.perf_counter() - started

    def _put(self, frame: Frame) -> None:
        with self._ready:
            frame.index = self.produced
            self.produced += 1
            if self.mode == "realtime" and self._queue:
                self._queue.popleft()
                self.dropped += 1
            while len(self._queue) >= self._capacity and not self.stop.is_set():
                self._ready.wait(0.1)
            self._queue.append(frame)
            self._ready.notify_all()

    def __iter__(self) -> Iterator[Frame]:
        while True:
            with self._ready:
                waiting_since = time.monotonic()
                while not self._queue and not self._finished and not self.stop.is_set():
                    self._ready.wait(0.1)
                    if time.monotonic() - waiting_since >= self.stall_s:
                        self._stalled()
                        waiting_since = time.monotonic()
                if self.stop.is_set():
                    return
                if not self._queue:
                    break
                frame = self._queue.popleft()
                self._ready.notify_all()
            yield frame
        if self._error is not None:
            raise self._error

    def _stalled(self) -> None:
        """No frame for `stall_s`: said and counted, because a hung camera otherwise looks like a quiet line."""
        self.stalls += 1
        log.warning("source %s: no frame for %.0f s (normal for a triggered camera between parts; otherwise "
                    "check the camera)", self.source.name, self.stall_s)

    @property
    def pending(self) -> int:
        """Frames read but not taken (left over when a run is stopped)."""
        return len(self._queue)

    def close(self) -> None:
        """Stop the capture thread; the source is closed only once the thread has let go of it."""
        self.stop.set()
        with self._ready:
            self._ready.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        if not self._thread.is_alive():
            self.source.close()
