"""One ONNX Runtime session per backbone part, lent to every open backend that runs it.

Products taught from the same backbone part (one backbone.onnx, by sha256) differ only in their
memory heads. Loading that backbone once and lending it out makes a changeover load the small
head alone, and keeps one copy of the backbone's weights in memory however many products are
open. `InferenceSession.run` is thread-safe, so the loop and a changeover's test frame may run
one session at once. The first backend that asks loads the session; the last one to close drops
it (runtime/backends/shared.py counts them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.backends.onnxruntime_backend import open_session, resolve_providers
from runtime.backends.shared import Lease, SharedPool
from runtime.optional import require

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneKey:
    """What makes two backbone sessions interchangeable: the same graph, run with the same settings."""

    sha256: str
    threads: int | None
    providers: tuple[str, ...]


_SESSIONS: SharedPool[BackboneKey, Any] = SharedPool(
    dropped=lambda key, session: log.info("backbone %s: dropped, no open backend runs it", key.sha256[:12]))


def lease_backbone(path: Path, sha256: str, threads: int | None, providers: list[str] | None,
                   fix: str) -> Lease[BackboneKey, Any]:  # fmt: skip
    """A hold on the session over the backbone graph at `path` (whose `sha256` the caller checked),
    loaded now only if no open backend holds one with the same threads and providers."""
    ort = require("onnxruntime", "the ONNX Runtime backend")
    key = BackboneKey(sha256, threads, tuple(resolve_providers(providers, ort.get_available_providers())))

    def load() -> Any:
        session, _ = open_session(path, threads, list(key.providers), fix=fix)
        log.info("backbone %s: loaded from %s", sha256[:12], path)
        return session

    return _SESSIONS.lease(key, load)


def holders() -> dict[BackboneKey, int]:
    """How many open backends hold each loaded backbone session (one entry per session in memory)."""
    return _SESSIONS.holders()
