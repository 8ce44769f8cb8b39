"""The environment report is best-effort: it reads a Jetson's state, and never raises anywhere."""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path

import pytest

from runtime.bench import environment
from runtime.bench.environment import UNKNOWN, collect_environment, peak_flops


def test_never_raises_when_every_probe_fails(monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise PermissionError("denied")

    monkeypatch.setattr(subprocess, "run", broken)
    monkeypatch.setattr(Path, "read_text", broken)
    monkeypatch.setattr(importlib.metadata, "version", broken)
    monkeypatch.setattr(environment.os, "sched_getaffinity", broken)
    monkeypatch.setattr(environment.os, "cpu_count", broken)
    env = collect_environment()
    assert env.cpu_cores is None
    assert env.gpu == env.cuda == UNKNOWN and env.jetson == {}
    assert set(env.packages.values()) == {UNKNOWN}
    assert env.to_dict()["packages"].keys() == environment.PACKAGES.keys()


def test_commands_that_fail_or_hang_give_none(monkeypatch) -> None:
    assert environment.run_command(["/nonexistent/nvpmodel", "-q"]) is None
    assert environment.run_command(["false"]) is None

    def hang(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], 5)

    monkeypatch.setattr(subprocess, "run", hang)
    assert environment.run_command(["nvidia-smi"]) is None


JETSON_FILES = {
    "/proc/device-tree/model": "NVIDIA Jetson AGX Orin Developer Kit\x00",
    "/etc/nv_tegra_release": "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64",
}


def test_reads_a_jetsons_release_power_mode_and_peak(monkeypatch) -> None:
    monkeypatch.setattr(environment, "read_text", lambda path: JETSON_FILES.get(path, "").replace("\x00", "") or None)
    outputs = {"nvpmodel": "NV Fan Mode:quiet\nNV Power Mode: MAXN\n0", "dpkg-query": "5.1.2-b104"}
    monkeypatch.setattr(environment, "run_command", lambda args, timeout=5.0: outputs.get(args[0]))
    env = collect_environment()
    assert env.jetson["model"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert env.jetson["l4t"] == "L4T R35.4.1"
    assert env.jetson["nvpmodel"] == "MAXN (mode 0)" and env.jetson["jetpack"] == "5.1.2-b104"
    assert env.jetson["jetson_clocks"] in ("on", "off", UNKNOWN)
    assert env.gpu == "NVIDIA Jetson AGX Orin Developer Kit"  # no nvidia-smi: the module names the GPU
    assert peak_flops(env.device, "fp16") == pytest.approx(42.5e12)


@pytest.mark.parametrize(
    "model, precision, expected",
    [("NVIDIA Jetson Xavier NX Developer Kit", "fp32", 0.845e12), ("Jetson-AGX", "int8", 22e12),
     ("NVIDIA Jetson Orin Nano Developer Kit", "fp32", 1.28e12), ("AMD EPYC", "fp32", None), (UNKNOWN, "fp16", None)],
)
def test_peak_is_known_only_for_documented_devices(model, precision, expected) -> None:
    assert peak_flops(model, precision) == expected


def _frequencies(folder: Path, low_name: str, high_name: str, low: int, high: int) -> None:
    folder.mkdir(parents=True)
    (folder / low_name).write_text(f"{low}\n")
    (folder / high_name).write_text(f"{high}\n")


def test_jetson_clocks_is_on_only_when_cpus_and_gpu_are_pinned(tmp_path) -> None:
    assert environment.jetson_clocks_state(str(tmp_path)) == UNKNOWN
    for cpu in (0, 1):
        _frequencies(tmp_path / f"devices/system/cpu/cpu{cpu}/cpufreq", "scaling_min_freq", "scaling_max_freq",
                     1984000, 1984000)
    gpu = tmp_path / "class/devfreq/17000000.ga10b"
    _frequencies(gpu, "min_freq", "max_freq", 306000000, 1300500000)
    assert environment.jetson_clocks_state(str(tmp_path)) == "off"  # the GPU still scales
    (gpu / "min_freq").write_text("1300500000\n")
    assert environment.jetson_clocks_state(str(tmp_path)) == "on"
