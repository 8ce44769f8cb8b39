"""Lazy imports of optional packages, failing with the extra that installs them."""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from types import ModuleType
from typing import Iterable, Iterator

from runtime.errors import MissingDependency


def install_hint(module: str, extras: str, purpose: str = "") -> str:
    """'<module> is not installed (needed for <purpose>): install daad-edge[<extras>] (pip install ...)'."""
    why = f" (needed for {purpose})" if purpose else ""
    return f"{module} is not installed{why}: install daad-edge[{extras}] (pip install 'daad-edge[{extras}]')"


def require(module: str, extra: str, purpose: str = "") -> ModuleType:
    """Import `module` or raise MissingDependency naming `pip install daad-edge[extra]`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if interrupted(exc):
            raise KeyboardInterrupt from exc
        raise MissingDependency(install_hint(module, extra, purpose)) from exc


def interrupted(exc: BaseException) -> bool:
    """True when an ImportError was a Ctrl-C during the import, not a missing package.

    A pybind11 extension (onnxruntime's) interrupted while it initialises raises
    ImportError("initialization failed") with the KeyboardInterrupt as its context.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextmanager
def extras_needed(extras: Iterable[str], purpose: str, own: Iterable[str] = ("runtime",)) -> Iterator[None]:
    """Inside the block, a third-party module that is missing becomes a MissingDependency naming `extras`.

    For code loaded by name (verbs, registered backends) whose imports are not wrapped in
    `require`; a missing module of one of the `own` packages is a broken install and stays an error.
    """
    try:
        yield
    except MissingDependency:
        raise
    except ModuleNotFoundError as exc:
        if not exc.name or exc.name.split(".")[0] in set(own):
            raise
        raise MissingDependency(install_hint(exc.name, ",".join(extras), purpose)) from exc


def cv2() -> ModuleType:
    """OpenCV: on a Jetson the system build (with GStreamer) serves; elsewhere the [video] wheel."""
    return require("cv2", "video", "image and video I/O")
