"""One ONNX Runtime session per backbone part, lent to every open backend that runs it.

Products taught from the same backbone part (one backbone.onnx, by sha256) differ only in their
memory heads. Loading that backbone once and lending it out makes a changeover load the small
head alone, and keeps one copy of the backbone's weights in memory however many products are
open. `InferenceSession.run` is thread-safe, so the loop and a changeover's test frame may run
one session at once. The first backend that asks loads the session; the last one to close drops it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.backends.onnxruntime_backend import open_session, resolve_providers
from runtime.optional import require

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneKey:
    """What makes two backbone sessions interchangeable: the same graph, run with the same settings."""

    sha256: str
    threads: int | None
    providers: tuple[str, ...]


@dataclass
class _Loaded:
    session: Any
    holders: int = 0


# Guards _loaded. A load happens under it, so no part is loaded twice; the loop never waits on it
# (`infer` runs the session its backend was lent), only another open or close does.
_lock = threading.Lock()
_loaded: dict[BackboneKey, _Loaded] = {}


class BackboneLease:
    """One backend's hold on a shared backbone session, given back by `release` when that backend closes."""

    def __init__(self, key: BackboneKey, session: Any) -> None:
        self.key, self.session = key, session
        self._held = True

    def release(self) -> None:
        """Give the session back; the last holder's release drops it. Only the first call counts, so a
        backend closed twice never takes the session from another product."""
        with _lock:
            if not self._held:
                return
            self._held, self.session = False, None
            loaded = _loaded[self.key]
            loaded.holders -= 1
            if loaded.holders == 0:
                del _loaded[self.key]
                log.info("backbone %s: dropped, no open backend runs it", self.key.sha256[:12])


def lease_backbone(path: Path, sha256: str, threads: int | None, providers: list[str] | None,
                   fix: str) -> BackboneLease:  # fmt: skip
    """A hold on the session over the backbone graph at `path` (whose `sha256` the caller checked),
    loaded now only if no open backend holds one with the same threads and providers."""
    ort = require("onnxruntime", "the ONNX Runtime backend")
    key = BackboneKey(sha256, threads, tuple(resolve_providers(providers, ort.get_available_providers())))
    with _lock:
        loaded = _loaded.get(key)
        if loaded is None:
            session, _ = open_session(path, threads, list(key.providers), fix=fix)
            loaded = _loaded[key] = _Loaded(session)
            log.info("backbone %s: loaded from %s", sha256[:12], path)
        loaded.holders += 1
        return BackboneLease(key, loaded.session)


def holders() -> dict[BackboneKey, int]:
    """How many open backends hold each loaded backbone session (one entry per session in memory)."""
    with _lock:
        return {key: loaded.holders for key, loaded in _loaded.items()}
