"""Every missing optional module names the extra of pyproject.toml that installs it.

Each module is blocked in turn in a fresh interpreter (as if it were not installed) and a real
`daad` command that needs it runs there: one line, exit 2, naming the right extra.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from runtime.optional import extra_for, normalised
from tiny_bundle import grey_frame

ROOT = Path(__file__).resolve().parents[1]
BLOCKED_RUN = """
import sys
blocked = sys.argv[1]

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NotInstalled())
from runtime.cli import main
sys.exit(main(sys.argv[2:]))
"""
# module -> (the extra that installs it, the command that needs it: BUNDLE and PARTS filled in)
CASES = {
    "starlette": ("console", ["run", "--bundle", "BUNDLE", "--source", "PARTS", "--threshold", "0.3",
                              "--console", "0", "--stats-every", "0"]),
    "uvicorn": ("console", ["console", "--bundle", "BUNDLE", "--port", "0"]),
    "jinja2": ("console", ["console", "--bundle", "BUNDLE", "--port", "0"]),
    "paho": ("plant", ["run", "--bundle", "BUNDLE", "--source", "PARTS", "--threshold", "0.3", "--stats-every", "0",
                       "--events", "EVENTS", "--publish", "mqtt://127.0.0.1:1/line"]),
    "prometheus_client": ("plant", ["run", "--bundle", "BUNDLE", "--source", "PARTS", "--threshold", "0.3",
                                    "--stats-every", "0", "--metrics-port", "0", "--metrics-host", "127.0.0.1"]),
    "onnxruntime": ("cpu", ["run", "--bundle", "BUNDLE", "--source", "PARTS", "--threshold", "0.3"]),
    "cv2": ("video", ["run", "--bundle", "BUNDLE", "--source", "PARTS", "--threshold", "0.3"]),
    "torch": ("train", ["train", "--data", "PARTS", "--out", "RUN"]),
}


@pytest.mark.parametrize("module", CASES)
def test_a_missing_module_names_the_extra_that_installs_it(module, tiny_bundle, tmp_path) -> None:
    import cv2

    extra, argv = CASES[module]
    parts = tmp_path / "parts"
    parts.mkdir()
    for index in range(3):
        cv2.imwrite(str(parts / f"{index}.png"), grey_frame(32, 32))
    places = {"BUNDLE": str(tiny_bundle), "PARTS": str(parts), "EVENTS": str(tmp_path / "events.jsonl"),
              "RUN": str(tmp_path / "run")}
    argv = [places.get(arg, arg) for arg in argv]
    done = subprocess.run([sys.executable, "-c", BLOCKED_RUN, module, *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]  # beside `daad run`'s banner
    assert "Traceback" not in done.stderr and len(errors) == 1, done.stderr
    assert re.search(rf"\b{module}[\w.]* is not installed", errors[0]) and f"install daad-edge[{extra}] " in errors[0], errors[0]
    assert f"pip install 'daad-edge[{extra}]'" in errors[0] and not (tmp_path / "run").exists()


def test_the_extras_come_from_pyproject() -> None:
    """The mapping is the installed metadata of pyproject's optional-dependencies: every package an
    extra lists is named with an extra that lists it, the smallest one."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    listed = {}
    for extra, requirements in extras.items():
        for requirement in requirements:
            name = normalised(requirement.split(";")[0].split("[")[0].split(">")[0].split("=")[0].strip())
            listed.setdefault(name, []).append(extra)
    for import_name, distribution in [("starlette", "starlette"), ("uvicorn", "uvicorn"), ("jinja2", "jinja2"),
                                      ("paho.mqtt.client", "paho-mqtt"), ("prometheus_client", "prometheus-client"),
                                      ("onnxruntime", "onnxruntime"), ("cv2", "opencv-python-headless"),
                                      ("torch", "torch"), ("Jetson.GPIO", "jetson-gpio"), ("sklearn", "scikit-learn")]:
        found = extra_for(import_name)
        assert found in listed[distribution], import_name
        assert len(extras[found]) == min(len(extras[extra]) for extra in listed[distribution]), import_name
    assert extra_for("cv2") == "video" and extra_for("matplotlib") == "cpu" and extra_for("no_such_module") is None
