"""Pictures after the verdict: NG images, the overlay video and the window, on background threads.

The verdict is the product; a picture is a record of it. The loop hands each judged frame to
`ArtefactWriter.emit`, which only enqueues it, so no verdict waits for a PNG or a video frame to
be encoded. Each picture sink has its own thread and bounded queue: a slow video encoder cannot
take the NG images' places. When a queue is full that picture is dropped and counted
(`artefacts_dropped`); the verdict and its event line are already out and are never touched.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from runtime.line.events import new_run_id
from runtime.line.ng_store import NgStore, SaveNg
from runtime.line.overlay import OverlayVideo, OverlayWindow
from runtime.line.priority import renice_thread
from runtime.optional import cv2
from runtime.preprocess import PreprocessConfig

if TYPE_CHECKING:
    from runtime.line.loop import Outcome, Sink

log = logging.getLogger(__name__)

QUEUE_DEPTH = 8  # frames per picture sink: ~20 MB of 900x900 frames, a quarter second of video at 30 fps
CLOSE_TIMEOUT_S = 10.0  # a picture sink stuck on a dead disk must not hold the summary hostage
NICENESS = 10  # added to the picture threads' nice value: on a busy CPU the kernel serves the verdict first


@dataclass(frozen=True)
class ArtefactSettings:
    """Which pictures a run keeps (the --save-ng, --output and --display options)."""

    save_ng: Path | None = None
    save_ng_max_mb: float = 500.0
    output: Path | None = None
    display: bool = False
    queue_depth: int = QUEUE_DEPTH
    run_id: str = field(default_factory=new_run_id)  # NG images are named after it, so runs never collide


class ArtefactWriter:
    """Sink: feeds picture sinks from bounded queues on their own threads; drops, counted, when behind."""

    def __init__(self, sinks: Sequence["Sink"], depth: int = QUEUE_DEPTH) -> None:
        self.sinks = list(sinks)
        self.dropped = self.failed = 0
        self._queues: list[queue.Queue] = [queue.Queue(maxsize=depth) for _ in self.sinks]
        self._threads = [threading.Thread(target=self._feed, args=(sink, waiting), daemon=True,
                                          name=f"daad-{type(sink).__name__}")
                         for sink, waiting in zip(self.sinks, self._queues)]
        for thread in self._threads:
            thread.start()

    def emit(self, outcome: "Outcome") -> None:
        for waiting in self._queues:
            try:
                waiting.put_nowait(outcome)
            except queue.Full:
                self.dropped += 1

    def _feed(self, sink: "Sink", waiting: queue.Queue) -> None:
        renice_thread(NICENESS)
        broken = False
        while (outcome := waiting.get()) is not None:
            if broken:
                continue
            try:
                sink.emit(outcome)
            except Exception as exc:  # a picture failure costs the pictures, never the inspection
                self.failed += 1
                broken = True
                log.error("%s stopped writing pictures: %s", type(sink).__name__, exc)

    @property
    def counts(self) -> dict[str, int]:
        counts = {"artefacts_dropped": self.dropped, "artefacts_failed": self.failed}
        for sink in self.sinks:
            counts.update(getattr(sink, "counts", {}))
        return counts

    def close(self) -> None:
        """Write what is queued, then close each sink (one still busy after the timeout is left open)."""
        for waiting in self._queues:
            waiting.put(None)
        for sink, thread in zip(self.sinks, self._threads):
            thread.join(CLOSE_TIMEOUT_S)
            if thread.is_alive():
                log.error("%s did not finish its pictures within %.0f s", type(sink).__name__, CLOSE_TIMEOUT_S)
            else:
                sink.close()


def open_artefacts(settings: ArtefactSettings, config: PreprocessConfig, fps: float,
                   stop: threading.Event) -> ArtefactWriter | None:
    """The writer for the pictures `settings` asks for (each painted on the calibration that
    judged its frame); None when it asks for none."""
    sinks: list[Sink] = []
    if settings.save_ng is not None:
        store = NgStore(settings.save_ng, int(settings.save_ng_max_mb * 1024 * 1024))
        sinks.append(SaveNg(store, config, settings.run_id))
    if settings.output is not None:
        sinks.append(OverlayVideo(settings.output, config, fps=fps))
    if settings.display:
        sinks.append(OverlayWindow(config, stop))
    if not sinks:
        return None
    # OpenCV's own worker pool runs at the priority of whoever started it (the loop, at nice 0), so
    # a picture drawn through it would escape NICENESS and take cores from the verdict: with
    # pictures on, OpenCV works in the calling thread. Measured in docs/BENCHMARKING.md.
    cv2().setNumThreads(1)
    return ArtefactWriter(sinks, settings.queue_depth)
