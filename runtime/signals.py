"""SIGINT/SIGTERM that land while a verb is still starting are held for it, not fatal.

Importing a verb (numpy, OpenCV, ONNX Runtime) takes 0.2-0.5 s; a `systemctl stop` in that
window used to kill `daad run` without the summary its documentation promises. `daad` holds
both signals from its first line: a verb module that sets `TAKES_HELD_SIGNALS = True` takes the
held ones over (`take`) once its own handlers are ready; for every other verb they are
released, and so delivered as usual, as soon as its module is imported.
"""

from __future__ import annotations

import signal
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_held: list[int] = []
_originals: dict[int, Any] | None = None  # the handlers before `hold`; None while nothing is held


def hold() -> None:
    """From now on, record SIGINT/SIGTERM instead of acting on them (main thread only)."""
    global _originals
    if _originals is None:
        _held.clear()
        _originals = {sig: signal.signal(sig, lambda signum, frame: _held.append(signum)) for sig in STOP_SIGNALS}


def take() -> list[int]:
    """Stop holding: the handlers from before `hold` are back, and the signals held meanwhile are the
    caller's to act on (in the order they came)."""
    global _originals
    if _originals is None:
        return []
    for sig, handler in _originals.items():
        signal.signal(sig, handler)
    _originals = None
    held, _held[:] = list(_held), []
    return held


def release() -> None:
    """Stop holding and deliver what was held, as if it came now (SIGINT: KeyboardInterrupt; SIGTERM: exit)."""
    for signum in take():
        signal.raise_signal(signum)
