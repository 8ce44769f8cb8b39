"""What judged the frames of a run: each product and threshold, with its frames, for the summary.

A run that changes product, or whose threshold a technician saves or rolls back, judges its
frames by several calibrations; the summary's `product` and `threshold` are only those it
started with. This tally says which ones judged how many frames, so the summary is honest about
every threshold in force. It grows with the calibrations used, never with the frames.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from runtime.line.events import FrameEvent


@dataclass
class Stretch:
    """The frames judged by one product under one threshold (they need not be consecutive)."""

    product: str | None  # None: a run of one --bundle
    threshold: float | None  # None when it was not a finite number (every such frame a FAULT)
    threshold_id: str | None  # the thresholds/ entry; None for a trial or unfiled threshold
    frames: int = 0
    first_frame: int = 0
    last_frame: int = 0


class JudgedBy:
    """Frames counted by (product, threshold, threshold id), in the order each first judged one."""

    def __init__(self) -> None:
        self._stretches: dict[tuple[str | None, float | None, str | None], Stretch] = {}

    def add(self, event: FrameEvent) -> None:
        threshold = event.threshold if math.isfinite(event.threshold) else None
        key = (event.product, threshold, event.threshold_id)
        stretch = self._stretches.get(key)
        if stretch is None:
            stretch = self._stretches[key] = Stretch(*key, first_frame=event.frame)
        stretch.frames += 1
        stretch.last_frame = event.frame

    def products(self) -> list[str]:
        """The products that judged frames, in the order they first did."""
        return list(dict.fromkeys(s.product for s in self._stretches.values() if s.product is not None))

    def summary(self) -> list[dict]:
        return [asdict(stretch) for stretch in self._stretches.values()]
