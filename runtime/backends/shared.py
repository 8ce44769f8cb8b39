"""Objects loaded by the first backend that needs them and dropped after the last lets go.

A line holds several products open (the one on the line, the one a roll back returns to, one
loading for a changeover); products taught from one backbone part run the same backbone. This is
the one counter behind sharing it: ONNX Runtime sessions (backbone_lease.py) and deserialised
TensorRT engines (trt_engines.py). Loading happens under the lock, so nothing is loaded twice;
the loop never waits on it (it runs what its backend was lent), only another open or close does.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class _Loaded(Generic[V]):
    value: V
    holders: int = 0


class Lease(Generic[K, V]):
    """One holder's hold on a shared object, given back by `release`."""

    def __init__(self, pool: "SharedPool[K, V]", key: K, value: V) -> None:
        self._pool, self.key, self.value = pool, key, value
        self._held = True

    def release(self) -> None:
        """Give it back; the last holder's release drops it. Only the first call counts, so a backend
        closed twice never takes the object from another product."""
        if self._pool.give_back(self):
            self.value = None  # type: ignore[assignment]


class SharedPool(Generic[K, V]):
    """Shared objects by key, each with the count of its holders."""

    def __init__(self, dropped: Callable[[K, V], None] = lambda key, value: None) -> None:
        self._loaded: dict[K, _Loaded[V]] = {}
        self._lock = threading.Lock()
        self._dropped = dropped  # told when the last holder of a key let go: release the object in order, log it

    def lease(self, key: K, load: Callable[[], V]) -> Lease[K, V]:
        """A hold on the object of `key`; `load()` makes it only when no one holds it."""
        with self._lock:
            loaded = self._loaded.get(key)
            if loaded is None:
                loaded = self._loaded[key] = _Loaded(load())
            loaded.holders += 1
            return Lease(self, key, loaded.value)

    def give_back(self, lease: Lease[K, V]) -> bool:
        """False when `lease` was already given back."""
        with self._lock:
            if not lease._held:
                return False
            lease._held = False
            loaded = self._loaded[lease.key]
            loaded.holders -= 1
            if loaded.holders == 0:
                del self._loaded[lease.key]
                self._dropped(lease.key, loaded.value)
            return True

    def holders(self) -> dict[K, int]:
        """How many holders each loaded object has (one entry per object in memory)."""
        with self._lock:
            return {key: loaded.holders for key, loaded in self._loaded.items()}
