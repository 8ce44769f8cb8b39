"""Lazy imports of optional packages, failing with the extra that installs them.

Which extra installs a module is read from the installed package's own metadata (pyproject's
optional-dependencies, as `Requires-Dist: NAME; extra == "EXTRA"`), never from the verb that
happened to need it: `daad run --console` lacks starlette, which [console] installs, not [cpu].
"""

from __future__ import annotations

import importlib
import re
from contextlib import contextmanager
from functools import lru_cache
from importlib import metadata
from types import ModuleType
from typing import Iterable, Iterator

from runtime.errors import MissingDependency

DISTRIBUTION = "daad-edge"
# Import names whose distribution is named otherwise (the rest match once normalised, PEP 503).
DISTRIBUTION_OF = {
    "cv2": "opencv-python-headless",
    "paho": "paho-mqtt",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "yaml": "pyyaml",
    "Jetson": "Jetson.GPIO",
    "scipy": "scikit-learn",  # not a requirement of its own: scikit-learn brings it
}


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@lru_cache(maxsize=1)
def extras_by_distribution() -> dict[str, list[str]]:
    """Normalised distribution name -> the extras of daad-edge that list it, smallest extra first."""
    try:
        requirements = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return {}
    listed: dict[str, set[str]] = {}
    for requirement in requirements:
        name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", requirement)
        if name and extra and normalised(name[1]) != normalised(DISTRIBUTION):
            listed.setdefault(normalised(name[1]), set()).add(extra[1])
    size = {extra: sum(extra in extras for extras in listed.values()) for extras in listed.values() for extra in extras}
    return {name: sorted(extras, key=lambda extra: (size[extra], extra)) for name, extras in listed.items()}


def extra_for(module: str) -> str | None:
    """The smallest extra of daad-edge that installs `module` (None when no extra names it)."""
    top = module.split(".")[0]
    extras = extras_by_distribution().get(normalised(DISTRIBUTION_OF.get(top, top)))
    return extras[0] if extras else None


def install_hint(module: str, purpose: str = "", fallback: Iterable[str] = ()) -> str:
    """'<module> is not installed (needed for <purpose>): install daad-edge[<extra>] (pip install ...)'.

    `fallback`: the extras to name when no extra lists the module (a dependency of a dependency).
    """
    why = f" (needed for {purpose})" if purpose else ""
    extras = extra_for(module) or ",".join(fallback)
    if not extras:
        return f"{module} is not installed{why}: install it (pip install {module.split('.')[0]})"
    return f"{module} is not installed{why}: install daad-edge[{extras}] (pip install 'daad-edge[{extras}]')"


def require(module: str, purpose: str = "") -> ModuleType:
    """Import `module` or raise MissingDependency naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if interrupted(exc):
            raise KeyboardInterrupt from exc
        raise MissingDependency(install_hint(module, purpose)) from exc


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
    """Inside the block, a third-party module that is missing becomes a MissingDependency naming its extra.

    For code loaded by name (verbs, registered backends) whose imports are not wrapped in
    `require`; `extras` (the verb's own) are named only for a module no extra lists. A missing
    module of one of the `own` packages is a broken install and stays an error.
    """
    try:
        yield
    except MissingDependency:
        raise
    except ModuleNotFoundError as exc:
        if not exc.name or exc.name.split(".")[0] in set(own):
            raise
        raise MissingDependency(install_hint(exc.name, purpose, extras)) from exc


def cv2() -> ModuleType:
    """OpenCV: on a Jetson the system build (with GStreamer) serves; elsewhere the [video] wheel."""
    return require("cv2", "image and video I/O")
