"""`daad`: verbs found through their packages' entry points; a missing extra is one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from runtime.cli import main as daad
from runtime.cli import verbs

ROOT = Path(__file__).resolve().parents[1]
VERBS = {"synth", "train", "eval", "export", "build", "calibrate", "run", "bench", "demo", "console", "switch"}


def without_torch(*argv: str) -> subprocess.CompletedProcess:
    """`daad ARGV` in a fresh interpreter where `import torch` fails, as on a Jetson without [train]."""
    code = "import sys\nsys.modules['torch'] = None\nfrom runtime.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True)


def test_every_verb_is_registered_with_its_one_line_help(capsys) -> None:
    assert VERBS <= set(verbs())
    assert daad(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in verbs():
        line = next(line for line in out.splitlines() if line.strip().startswith(verb + " "))
        assert len(line.split(maxsplit=1)[1]) > 20, line


def test_help_lists_verbs_without_importing_them() -> None:
    code = (
        "import sys\nfrom runtime.cli import main\nmain(['--help'])\n"
        "loaded = [m for m in sys.modules if m == 'torch' or '.' in m and m.split('.')[0] != 'runtime'\n"
        "          and m.split('.')[0] in ('train', 'export', 'calibration', 'demo')]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "score a camera" in done.stdout


def test_a_verb_whose_extra_is_missing_names_it_in_one_line() -> None:
    for argv in (["export", "--help"], ["train", "--data", str(ROOT / "no-data"), "--out", str(ROOT / "no-run")]):
        done = without_torch(*argv)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == (
            f"daad {argv[0]}: error: torch is not installed (needed for daad {argv[0]}): "
            "install daad-edge[train] (pip install 'daad-edge[train]')"
        )
    assert not (ROOT / "no-run").exists()


def test_runtime_verbs_work_without_torch() -> None:
    done = without_torch("run", "--help")
    assert done.returncode == 0 and "--backend" in done.stdout, done.stderr


def test_unknown_verb_and_package_verbs(capsys) -> None:
    assert daad(["fly"]) == 2
    assert "unknown verb 'fly'" in capsys.readouterr().err
    assert set(verbs("train")) == {"synth", "train", "eval"}
    assert daad(["synth", "--help"], package="export") == 2
    assert "python -m export: unknown verb 'synth'" in capsys.readouterr().err


def test_python_dash_m_package_runs_its_verbs() -> None:
    done = subprocess.run([sys.executable, "-m", "export", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0
    assert {line.split()[0] for line in done.stdout.splitlines()[3:]} == {"export"}
    done = subprocess.run([sys.executable, "-m", "engines", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and {line.split()[0] for line in done.stdout.splitlines()[3:]} == {"build"}
