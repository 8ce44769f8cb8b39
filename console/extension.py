"""`daad run --console [HOST:]PORT`: the console attached to the running loop.

runtime/ finds this class through the `daad.run_extensions` entry point; the loop feeds the
returned sink and the console's saves and roll backs reach the loop through its LiveThreshold.
"""

from __future__ import annotations

import argparse

from console.server import Address, ConsoleServer, announce, console_token, parse_address
from runtime.backends.options import BackendOptions
from runtime.line.extensions import RunContext
from runtime.line.loop import Outcome



class AttachedConsole:
    """Sink: feeds the console's LineView; closing it stops the web server."""

    def __init__(self, view, server: ConsoleServer) -> None:
        self.view, self.server = view, server

    def emit(self, outcome: Outcome) -> None:
        self.view.emit(outcome)

    def close(self) -> None:
        self.server.close()


class ConsoleExtension:
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("web console (daad-edge[console])")
        group.add_argument("--console", type=parse_address, default=None, metavar="[HOST:]PORT",
                           help="serve the technician's console on this address (host default 127.0.0.1)")
        group.add_argument("--console-token", default=None, metavar="SECRET",
                           help="token that changes (save, roll back, mark) must send; default: made up and printed")

    def start(self, args: argparse.Namespace, run: RunContext) -> AttachedConsole | None:
        if args.console is None:
            return None
        return attach(args.console, args.console_token, run)


def attach(address: Address, token: str | None, run: RunContext) -> AttachedConsole:
    from console.actions import Console
    from console.line_view import LineView
    from console.routes import build_app

    secret = console_token(address, token)
    view = LineView(run.bundle.preprocess, run.counters)
    console = Console(run.bundle, BackendOptions(run.backend, run.precision), secret, view, run.threshold)
    server = ConsoleServer(build_app(console), address)
    announce(server.address, secret, generated=token is None)  # only once it answers there
    return AttachedConsole(view, server)
