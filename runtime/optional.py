"""Lazy imports of optional packages, failing with the extra that installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from runtime.errors import MissingDependency


def require(module: str, extra: str, purpose: str = "") -> ModuleType:
    """Import `module` or raise MissingDependency naming `pip install daad-edge[extra]`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        why = f" (needed for {purpose})" if purpose else ""
        raise MissingDependency(
            f"{module} is not installed{why}: install daad-edge[{extra}] "
            f"(pip install 'daad-edge[{extra}]')"
        ) from exc


def cv2() -> ModuleType:
    """OpenCV: on a Jetson the system build (with GStreamer) serves; elsewhere the [video] wheel."""
    return require("cv2", "video", "image and video I/O")
