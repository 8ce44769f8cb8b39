"""A real line in its own thread, fed frame by frame by a test that waits until each is judged.

The loop itself (run_loop over one backend, run_line over a ProductLine) is the subclass's
`judge`; this holds what every such harness shares: the frame queue, the count of judged frames,
feeding with the next indexes, and stopping.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator

import numpy as np

from runtime.line.sources import Frame


class Judged:
    """A verdict sink that counts judged frames for the feeding test."""

    def __init__(self) -> None:
        self.count = threading.Semaphore(0)

    def emit(self, outcome: object) -> None:
        self.count.release()

    def close(self) -> None:
        pass


class ThreadedLine:
    """Subclasses set themselves up, then call `start`; `judge` runs the loop over the frames given."""

    def start(self) -> None:
        self.frames: queue.Queue = queue.Queue()
        self.judged = Judged()
        self.next_index = 0
        self.thread = threading.Thread(target=self.judge, args=(iter(self.frames.get, None), self.judged), daemon=True)
        self.thread.start()

    def judge(self, frames: Iterator[Frame], judged: Judged) -> None:
        raise NotImplementedError

    def feed(self, parts: Iterable[tuple[np.ndarray, str]]) -> None:
        """Each (image, name) as the next frame; returns once all of them are judged."""
        fed = 0
        for image, name in parts:
            self.frames.put(Frame(image, name=name, index=self.next_index))
            self.next_index += 1
            fed += 1
        for _ in range(fed):
            assert self.judged.count.acquire(timeout=60), "the line stopped"

    def stop(self) -> None:
        self.frames.put(None)
        self.thread.join(timeout=60)
