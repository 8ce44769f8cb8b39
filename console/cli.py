"""daad console: the technician's web console for a bundle without a camera (calibrate from folders, history, roll back)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from console.server import DEFAULT_HOST, Address, ConsoleServer, announce, console_token, port_number
from runtime.backends.options import BackendOptions, add_backend_options
from runtime.bundle import open_bundle


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daad console",
        description="Serve the technician's web console for a bundle, without a camera: calibrate from folders "
        "of good and defective parts, look at and roll back thresholds. To watch a running line, use "
        "`daad run ... --console [HOST:]PORT` instead.",
        # `--console 127.0.0.1:18765` (daad run's flag) must not be taken for --console-token.
        allow_abbrev=False)
    add = parser.add_argument
    add("--bundle", required=True, metavar="DIR", help="bundle folder written by `daad export`")
    add("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}: this machine only)")
    add("--port", type=port_number, default=8080, help="port to listen on (default 8080; 0: any free port)")
    add("--console-token", default=None, metavar="SECRET",
        help="token that changes must send; required off loopback; default: made up and printed")
    add("--backbone", type=Path, default=None, metavar="PART",
        help="backbone part the New product page teaches on (default: the bundle's own, when it was taught); "
        "new products are saved beside the bundle (docs/TEACH.md)")
    add_backend_options(parser, batch=False)  # score folders as the line will: same backend and precision
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from console.actions import Console
    from console.routes import build_app

    address = Address(args.host, args.port)
    token = console_token(address, args.console_token)
    bundle = open_bundle(args.bundle)
    options = BackendOptions.from_args(args)
    options = replace(options, backend=options.backend_name(bundle))  # threshold.json records a backend, not "auto"
    console = Console(bundle, options, token, backbone=args.backbone)
    server = ConsoleServer(build_app(console), address, "--host/--port")
    announce(server.address, token, generated=args.console_token is None)  # only once it answers there
    try:
        server.wait()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
