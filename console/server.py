"""Where the console listens, who may change things, and the uvicorn server in its own thread."""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import signal
import socket
import sys
import threading
from dataclasses import dataclass

from runtime.errors import DaadError
from runtime.optional import require

DEFAULT_HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name: it may resolve to anything
            return False

    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def parse_address(text: str) -> Address:
    """'8080', '0.0.0.0:8080' or '[::1]:8080' -> Address; DaadError saying the form otherwise."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or DEFAULT_HOST
    if not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise DaadError(f"--console {text!r}: expected [HOST:]PORT with a port from 0 to 65535 (0: any free one), "
                        "e.g. 8080 or 0.0.0.0:8080")
    return Address(host, int(port))


def port_number(text: str) -> int:
    """argparse type of `daad console --port`: 0 (any free port) to 65535."""
    if not text.isascii() or not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give a number from 0 to 65535 (0: any free one)")
    return int(text)


def console_token(address: Address, given: str | None) -> str:
    """The token changes need: the one given, or a fresh one; none given on a non-loopback address is refused."""
    if given:
        return given
    if not address.loopback:
        raise DaadError(f"the console would listen on {address.host}, reachable from other machines, without a "
                        "token: pass --console-token SECRET (or bind to 127.0.0.1)")
    return secrets.token_urlsafe(16)


def listening_socket(address: Address, option: str) -> socket.socket:
    """A TCP socket bound to `address`; DaadError in one line, with the system's reason, when it cannot be."""
    try:
        family, kind, proto, _, where = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise DaadError(f"the console cannot listen on {address.url()}: {exc.strerror or exc}: choose another "
                        f"address with {option}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn would: a restart reuses the port
        sock.bind(where)
    except OSError as exc:
        sock.close()
        raise DaadError(f"the console cannot listen on {address.url()}: {exc.strerror or exc}: choose another "
                        f"port or address with {option}") from exc
    return sock


def announce(address: Address, token: str, generated: bool) -> None:
    """Tell the technician where the console is and, when it was made up here, the token."""
    tail = f"#token={token}" if generated else ""
    print(f"daad console: {address.url()}/{tail}  (changes need the token"
          f"{': ' + token if generated else ' given with --console-token'})", file=sys.stderr, flush=True)


class ConsoleServer:
    """uvicorn serving `app` from a daemon thread; `close` stops it and waits.

    The socket is bound here, before uvicorn starts: a port in use or an address this machine
    lacks is one line with the system's reason, and `address` is where it listens (port 0
    resolved to the port the system gave), so the URL announced is one that answers.
    """

    def __init__(self, app, address: Address, option: str = "--console HOST:PORT") -> None:
        uvicorn = require("uvicorn", "the web console")
        sock = listening_socket(address, option)
        self.address = Address(address.host, sock.getsockname()[1])
        config = uvicorn.Config(app, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, name="daad-console",
                                       daemon=True)
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise DaadError(f"the console could not start on {self.address.url()}: see the line above")
            self.thread.join(0.05)

    def wait(self) -> None:
        """Serve until Ctrl+C or SIGTERM (a service stopping), or until the server stops."""
        stop = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while self.thread.is_alive() and not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=START_TIMEOUT_S)
