"""daad switch: change the product of a running line (`daad run --products DIR --console ...`) through its console.

The console's HTTP API is the one way in for the terminal, the console page and scripts alike:
the same token, the same checks, the same event line. The command waits until the product is
loaded and checked (or refused); the line takes it at its next frame.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from runtime.errors import DaadError

TOKEN_ENV = "DAAD_CONSOLE_TOKEN"
TIMEOUT_S = 120.0  # loading a product builds its backend: seconds on a CPU, longer for a big model on a Jetson


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daad switch",
        description="Change the product of a running line: load and check it, then the line judges by it from its "
        "next frame. Needs `daad run --products DIR --console [HOST:]PORT`.")
    add = parser.add_argument
    add("product", nargs="?", default=None, help="the product (its folder name in --products DIR) to switch to")
    add("--rollback", action="store_true", help="go back to the product before the one on the line")
    add("--list", action="store_true", help="show the products, the one on the line and the one a roll back returns to")
    add("--console", default="http://127.0.0.1:8080", metavar="URL",
        help="the running line's console (default http://127.0.0.1:8080)")
    add("--token", default=None, metavar="SECRET",
        help=f"the console's token (default: the environment variable {TOKEN_ENV}); not needed for --list")
    add("--by", default="", metavar="NAME", help="who switches, for the event line")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    chosen = [args.product is not None, args.rollback, args.list]
    if sum(chosen) != 1:
        raise DaadError("give one of: a PRODUCT to switch to, --rollback, or --list")
    url = args.console.rstrip("/")
    if args.list:
        show(request(url + "/api/products"))
        return 0
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        raise DaadError(f"a switch needs the console's token: --token SECRET or the environment variable {TOKEN_ENV}")
    command = {"action": "rollback", "by": args.by} if args.rollback else \
        {"action": "switch", "product": args.product, "by": args.by}
    answer = request(url + "/api/product", command, token)
    print(f"daad switch: {answer['message']}", file=sys.stderr)
    show(answer)
    return 0


def request(url: str, body: dict[str, Any] | None = None, token: str | None = None) -> dict[str, Any]:
    """GET (no body) or POST a JSON body to the console; DaadError with the console's refusal or why it is unreachable."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"X-Console-Token": token} if token else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=TIMEOUT_S) as response:
            answer = response.read()
    except urllib.error.HTTPError as exc:
        try:
            why = json.loads(exc.read()).get("error", exc.reason)
        except (ValueError, AttributeError):
            why = exc.reason
        raise DaadError(f"the console refused: {why}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DaadError(f"no console answers at {url} ({reason}): is `daad run --products DIR --console PORT` running "
                        f"there? give its address with --console") from exc
    try:
        return json.loads(answer)
    except ValueError as exc:
        raise DaadError(f"what answers at {url} is not a daad console (no JSON): check --console") from exc


def show(state: dict[str, Any]) -> None:
    """The line's products, the one running marked *, on stdout."""
    for name in state.get("products", []):
        mark = "*" if name == state.get("current") else ("<" if name == state.get("previous") else " ")
        print(f"{mark} {name}")
    print(f"on the line: {state.get('current')}; roll back to: {state.get('previous')}; "
          f"loaded for the next frame: {state.get('pending')}")


if __name__ == "__main__":
    sys.exit(main())
