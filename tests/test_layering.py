"""runtime/ is the floor: it must import and work without torch, train/ or export/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "train", "export")


def _imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_runtime_sources_never_import_torch_train_or_export() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_top_levels(path) & set(FORBIDDEN))
        for path in (ROOT / "runtime").rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_runtime_imports_with_torch_blocked() -> None:
    code = (
        "import sys, pkgutil, importlib\n"
        "sys.modules['torch'] = None\n"
        "import runtime\n"
        "for info in pkgutil.walk_packages(runtime.__path__, 'runtime.'):\n"
        "    if info.name.endswith('__main__'):\n"
        "        continue\n"
        "    importlib.import_module(info.name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('train', 'export'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
