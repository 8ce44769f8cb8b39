"""`daad run --console [HOST:]PORT`: the console attached to the running loop.

runtime/ finds this class through the `daad.run_extensions` entry point; the loop feeds the
returned sink and the console's saves and roll backs reach the loop through its LiveThreshold
(with --products, through the ProductLine, to the product they were made for).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from console.server import Address, ConsoleServer, announce, console_token, parse_address
from runtime.backends.options import BackendOptions, positive
from runtime.line.events import NG
from runtime.line.extensions import RunContext
from runtime.line.loop import Outcome

if TYPE_CHECKING:  # imported when --console is given, not by every `daad run`
    from console.line_view import LineView
    from runtime.line.artefacts import ArtefactWriter

DEFAULT_REVIEW_MB = 200.0  # about 60 NG frames of 1920x1080 with their pictures


class AttachedConsole:
    """Sink: feeds the console's LineView, and its NG frames to the review folder through a picture
    writer's queue (never the loop's time); closing it writes what is queued and stops the web server."""

    def __init__(self, view: "LineView", keeper: "ArtefactWriter", server: ConsoleServer, token: str) -> None:
        self.view, self.keeper, self.server = view, keeper, server
        self.control_token = token  # the run's changeover commands over MQTT carry it too

    def emit(self, outcome: Outcome) -> None:
        self.view.emit(outcome)
        if outcome.verdict == NG:  # only NG frames take the queue's places: an OK part must not crowd one out
            self.keeper.emit(outcome)

    @property
    def counts(self) -> dict[str, int]:
        """Frames kept for review, removed over the cap, dropped behind a full queue, failed to write."""
        return {**self.keeper.sinks[0].counts, "review_dropped": self.keeper.dropped}

    def close(self) -> None:
        self.keeper.close()
        self.server.close()


class ConsoleExtension:
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("web console (daad-edge[console])")
        group.add_argument("--console", type=parse_address, default=None, metavar="[HOST:]PORT",
                           help="serve the technician's console on this address (host default 127.0.0.1)")
        group.add_argument("--console-token", default=None, metavar="SECRET",
                           help="token that changes (save, roll back, mark) must send; default: made up and printed")
        group.add_argument("--console-review-mb", type=positive(float), default=DEFAULT_REVIEW_MB, metavar="MB",
                           help=f"disk cap of the NG frames kept for the Review page in BUNDLE/review/pending (with "
                           f"--products, of each product's); the oldest of its own go first (default "
                           f"{DEFAULT_REVIEW_MB:g})")
        group.add_argument("--console-backbone", type=Path, default=None, metavar="PART",
                           help="backbone part the New product page teaches on (default: the bundle's own, when it "
                           "was taught); new products are saved beside the bundle (docs/TEACH.md)")

    def start(self, args: argparse.Namespace, run: RunContext) -> AttachedConsole | None:
        if args.console is None:
            return None
        return attach(args.console, args.console_token, int(args.console_review_mb * 1024 * 1024), run,
                      args.console_backbone)


def attach(address: Address, token: str | None, review_bytes: int, run: RunContext,
           backbone: Path | None = None) -> AttachedConsole:
    from console.actions import Console
    from console.line_view import LineView
    from console.review import KeepForReview, ReviewFolders
    from console.routes import build_app
    from runtime.line.artefacts import ArtefactWriter

    secret = console_token(address, token)
    view = LineView(run.bundle.preprocess, run.counters, run_id=run.run_id)
    reviews = ReviewFolders(run.bundle.root, run.products.folder if run.products is not None else None, review_bytes)
    console = Console(run.bundle, BackendOptions(run.backend, run.precision), secret, view, run.threshold, reviews,
                      run.products, backbone)
    server = ConsoleServer(build_app(console), address)
    keeper = ArtefactWriter([KeepForReview(reviews, view.picture_image, run.run_id)])
    announce(server.address, secret, generated=token is None)  # only once it answers there
    return AttachedConsole(view, keeper, server, secret)
