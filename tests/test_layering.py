"""The layers of docs/ARCHITECTURE.md hold: no package reaches up, statically or by module name.

runtime/ imports no other package of the project and never torch (a Jetson installs it alone);
calibration/ and patchmemory/ import only runtime/ (they score and choose a memory without torch);
engines/ (TensorRT builds on the device) imports runtime/ and patchmemory/, never torch;
teach/ (a device teaching itself a product) imports only those four, never torch; train/
and export/ import only the layers below them. A module
named in a string (importlib.import_module("train.x"), an entry-point style "export.x:Y", a dict
value "train.x") is an import too: it fails the same way on a device without the package.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(path.parent.name for path in ROOT.glob("*/__init__.py") if path.parent.name != "tests")
# package -> the project packages it may import (itself included), bottom layer first
ALLOWED = {
    "runtime": {"runtime"},
    "calibration": {"runtime", "calibration"},
    "patchmemory": {"runtime", "patchmemory"},
    "engines": {"runtime", "patchmemory", "engines"},
    "teach": {"runtime", "calibration", "patchmemory", "engines", "teach"},
    "train": {"runtime", "calibration", "patchmemory", "train"},
    "export": {"runtime", "calibration", "patchmemory", "engines", "train", "export"},
}
TORCH_FREE = ("runtime", "calibration", "patchmemory", "engines", "teach")
IMPORT_CALLS = {"import_module", "__import__", "find_spec", "require"}
MODULE_STRING = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_][\w.]*)?")


def forbidden(package: str) -> set[str]:
    return ({"torch"} if package in TORCH_FREE else set()) | (set(PACKAGES) - ALLOWED[package])


def imported_top_levels(source: str, filename: str = "<source>") -> set[str]:
    """Top-level names of every module the source imports: statements, import calls, module-name strings."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and _called_name(node) in IMPORT_CALLS and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                names.add(first.value.split(".")[0])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.split(" [")[0]  # an entry point's "module:attr [extra]"
            if ("." in text or ":" in text) and MODULE_STRING.fullmatch(text):
                names.add(text.split(":")[0].split(".")[0])
    return names


def _called_name(call: ast.Call) -> str:
    return call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")


def offenders(package: str) -> dict[str, list[str]]:
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names = imported_top_levels(path.read_text(encoding="utf-8"), str(path)) & forbidden(package)
        if names:
            found[str(path.relative_to(ROOT))] = sorted(names)
    return found


def test_the_checker_sees_dynamic_imports() -> None:
    source = (
        "import importlib\n"
        "REFERENCE = {'torch': 'export.torch_backend:TorchBackend.from_checkpoint'}\n"
        "importlib.import_module('train')\n"
        "VERB = 'demo.pipeline:main [train]'\n"
        "def f():\n    from calibration import methods\n"
    )
    assert imported_top_levels(source) >= {"export", "train", "demo", "calibration"}
    assert imported_top_levels("'a sentence. With dots.'\nx = 'file.json'") <= {"file"}


def test_runtime_names_no_package_above_it() -> None:
    assert {"train", "export", "calibration", "demo", "experiments", "torch"} <= forbidden("runtime")
    assert offenders("runtime") == {}


def test_calibration_never_reaches_torch_train_or_export() -> None:
    assert {"train", "export", "torch"} <= forbidden("calibration")
    assert offenders("calibration") == {}


def test_train_and_export_import_only_the_layers_below() -> None:
    assert {"demo", "experiments"} <= forbidden("export") and "export" in forbidden("train")
    assert offenders("train") == {} and offenders("export") == {}


def test_teach_imports_only_runtime_calibration_patchmemory_and_engines() -> None:
    assert {"train", "export", "torch", "console"} <= forbidden("teach") and "teach" in forbidden("patchmemory")
    assert {"train", "export", "torch", "calibration", "teach"} <= forbidden("engines")
    assert offenders("teach") == {} and offenders("patchmemory") == {} and offenders("engines") == {}


def test_the_torch_free_packages_import_with_torch_blocked() -> None:
    code = (
        "import sys, pkgutil, importlib\n"
        "sys.modules['torch'] = None\n"
        f"for package in {TORCH_FREE!r}:\n"
        "    root = importlib.import_module(package)\n"
        "    for info in pkgutil.walk_packages(root.__path__, package + '.'):\n"
        "        if not info.name.endswith('__main__'):\n"
        "            importlib.import_module(info.name)\n"
        f"above = {sorted(set(PACKAGES) - set(TORCH_FREE))!r}\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in above)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
