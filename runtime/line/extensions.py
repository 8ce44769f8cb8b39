"""Pieces that plug into `daad run` from packages above runtime/, found by entry point.

runtime/ is the floor and never imports the packages built on it (the web console imports
calibration/); they register a factory under the `daad.run_extensions` entry-point group
instead. Each adds its own options to `daad run` and, when asked for, returns a sink that the
loop feeds like any other and closes at the end of the run.
"""

from __future__ import annotations

import argparse
import threading
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable, Protocol

from runtime.bundle import Bundle
from runtime.line.live_threshold import LiveThreshold
from runtime.line.loop import Sink
from runtime.line.products import ProductLine

GROUP = "daad.run_extensions"


@dataclass
class RunContext:
    """What a run hands its extensions: the line's objects, no copies."""

    bundle: Bundle
    backend: str
    precision: str
    threshold: LiveThreshold  # the calibration in force (threshold, score scale, history entry)
    counters: Callable[[], dict[str, int]]  # reads, drops, ... as the stats line shows them
    stop: threading.Event  # set it to end the run after the frame in hand
    events_path: Path | None
    run_id: str  # the run's id, as on its event lines
    products: ProductLine | None = None  # with --products: the line's products, to change over (bundle and
    # threshold above are then the first product's)


class RunExtension(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def start(self, args: argparse.Namespace, run: RunContext) -> Sink | None:
        """A sink for this run, or None when the extension's options were not given."""


def load_extensions() -> list[RunExtension]:
    """One instance of every installed extension, in a stable order."""
    return [entry.load()() for entry in sorted(entry_points(group=GROUP), key=lambda entry: entry.name)]
