"""What a latency number was measured on: CPU, GPU, library versions, Jetson power state.

A benchmark without its environment cannot be defended or repeated, so the bench records it
with every run. Everything here is best-effort: a probe that fails reports "unknown" and never
raises. Versions are read from package metadata, so nothing heavy (and never torch) is imported.
"""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

UNKNOWN = "unknown"

# package shown in the report -> distributions that may provide it (first installed one wins)
PACKAGES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",),
    "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python", "opencv-contrib-python-headless"),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu11"),
    "pycuda": ("pycuda",),
    "torch": ("torch",),
}
# JetPack's system OpenCV and TensorRT carry no pip metadata; their modules know their version.
MODULE_FALLBACK = {"opencv": "cv2", "tensorrt": "tensorrt"}

# Peak dense throughput of the GPU, in FLOP/s (int8: OP/s), per device and precision. Used only
# for the compute-bound floor (FLOPs / peak): a lower bound, so the highest documented rate
# serves. fp32 = CUDA cores x 2 FLOP per clock x max GPU clock (MAXN) from each module's NVIDIA
# datasheet; fp16/int8 = the datasheet's GPU Tensor Core rate, halved where NVIDIA quotes
# structured-sparse numbers. Unknown devices (any CPU) get no floor rather than a guess.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    # Jetson AGX Orin 64GB technical brief: 2048 cores @ 1.3 GHz, 5.3 FP32 TFLOPS,
    # 85 FP16 / 170 INT8 sparse Tensor TOPS (GPU only, DLAs excluded).
    "agx orin": {"fp32": 5.3e12, "fp16": 42.5e12, "int8": 85e12},
    # Jetson Orin NX 16GB datasheet: 1024 cores, 32 Tensor Cores @ 918 MHz; Tensor rates scaled
    # from AGX Orin by cores x clock (60 sparse INT8 TOPS on the GPU).
    "orin nx": {"fp32": 1.88e12, "fp16": 15e12, "int8": 30e12},
    # Jetson Orin Nano 8GB datasheet: 1024 cores @ 625 MHz, 40 sparse INT8 TOPS. JetPack 6.1+
    # "Super" mode (1020 MHz, 67 TOPS) is faster, so there the floor printed is conservative-high.
    "orin nano": {"fp32": 1.28e12, "fp16": 10e12, "int8": 20e12},
    # Jetson AGX Xavier datasheet: 512 Volta cores @ 1377 MHz, 11 FP16 TFLOPS, 22 INT8 TOPS (GPU).
    "agx xavier": {"fp32": 1.41e12, "fp16": 11e12, "int8": 22e12},
    # Jetson Xavier NX datasheet: 384 Volta cores, 48 Tensor Cores @ 1100 MHz, 6 FP16 TFLOPS;
    # INT8 = 2 x FP16 on Volta Tensor Cores (the 21 TOPS headline includes the two DLAs).
    "xavier nx": {"fp32": 0.845e12, "fp16": 6e12, "int8": 12e12},
}
# /proc/device-tree/model spellings -> PEAK_FLOPS key (AGX Xavier kits say "Jetson-AGX").
DEVICE_ALIASES = (
    ("agx orin", "agx orin"),
    ("orin nx", "orin nx"),
    ("orin nano", "orin nano"),
    ("xavier nx", "xavier nx"),
    ("agx xavier", "agx xavier"),
    ("jetson-agx", "agx xavier"),
)


@dataclass
class Environment:
    """The machine and software a benchmark ran on; "unknown" where a probe failed."""

    hostname: str = UNKNOWN
    os: str = UNKNOWN
    python: str = UNKNOWN
    cpu_model: str = UNKNOWN
    cpu_cores: int | None = None  # logical CPUs this process may run on
    cpu_governor: str = UNKNOWN
    gpu: str = UNKNOWN  # nvidia-smi's name/driver/clocks, or the Jetson module
    cuda: str = UNKNOWN
    packages: dict[str, str] = field(default_factory=dict)
    jetson: dict[str, str] = field(default_factory=dict)  # model, l4t, jetpack, nvpmodel, jetson_clocks

    @property
    def device(self) -> str:
        """The device the model runs on, for looking up its peak throughput."""
        return self.jetson.get("model", self.gpu)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect_environment() -> Environment:
    """Probe everything; each probe falls back to "unknown" on its own."""
    env = Environment(
        hostname=_safe(platform.node),
        os=_safe(platform.platform),
        python=_safe(platform.python_version),
        cpu_model=_safe(cpu_model),
        cpu_cores=_cpu_cores(),
        cpu_governor=_safe(cpu_governor),
        gpu=_safe(gpu_description),
        cuda=_safe(cuda_version),
        packages={name: _safe(lambda n=name: package_version(n)) for name in PACKAGES},
    )
    model = _safe(jetson_model)
    if model != UNKNOWN:
        env.jetson = {
            "model": model,
            "l4t": _safe(l4t_release),
            "jetpack": _safe(jetpack_version),
            "nvpmodel": _safe(nvpmodel_mode),
            "jetson_clocks": _safe(jetson_clocks_state),
        }
    return env


def peak_flops(device: str, precision: str) -> float | None:
    """Documented peak FLOP/s of `device` at `precision`, or None when the device is not known."""
    name = device.lower()
    for alias, key in DEVICE_ALIASES:
        if alias in name:
            return PEAK_FLOPS[key].get(precision)
    return None


def _safe(probe: Any) -> str:
    try:
        value = probe()
    except Exception:  # a probe may meet any broken system file or tool; the report goes on
        return UNKNOWN
    return str(value).strip() if value not in (None, "") else UNKNOWN


def run_command(args: list[str], timeout: float = 5.0) -> str | None:
    """stdout of a short system command, or None when it is absent, fails or hangs."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").replace("\x00", "").strip() or None
    except OSError:
        return None


def package_version(name: str) -> str:
    """Version of a reported package from its metadata; a few system builds from the module."""
    for dist in PACKAGES[name]:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    module = MODULE_FALLBACK.get(name)
    if module and importlib.util.find_spec(module) is not None:
        return str(getattr(importlib.import_module(module), "__version__", "installed (version unknown)"))
    return "not installed"


def cpu_model() -> str | None:
    info = read_text("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Processor"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", info, flags=re.MULTILINE)
        if match:
            return match.group(1)
    lscpu = run_command(["lscpu"]) or ""
    match = re.search(r"^Model name:\s*(.+)$", lscpu, flags=re.MULTILINE)
    return match.group(1) if match else platform.processor() or None


def _cpu_cores() -> int | None:
    """CPUs this process may use (a container or taskset may allow fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except Exception:  # not on every OS; fall back to the machine's count
        try:
            return os.cpu_count()
        except Exception:
            return None


def cpu_governor() -> str | None:
    governors = {read_text(path) for path in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor")}
    governors.discard(None)
    return ",".join(sorted(governors)) or None  # type: ignore[arg-type]


def gpu_description() -> str | None:
    query = "name,driver_version,memory.total,clocks.sm,clocks.max.sm"
    out = run_command(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"])
    if out:
        return "; ".join(line.strip() for line in out.splitlines())
    return jetson_model()


def cuda_version() -> str | None:
    for path in ("/usr/local/cuda/version.json", "/usr/local/cuda/version.txt"):
        text = read_text(path)
        if text and path.endswith(".json"):
            return json.loads(text).get("cuda", {}).get("version")
        if text:
            return text.replace("CUDA Version", "").strip()
    out = run_command(["nvcc", "--version"]) or ""
    match = re.search(r"release ([\d.]+)", out)
    if match:
        return match.group(1)
    smi = run_command(["nvidia-smi"]) or ""
    match = re.search(r"CUDA Version:\s*([\d.]+)", smi)
    return f"{match.group(1)} (driver)" if match else None


def jetson_model() -> str | None:
    model = read_text("/proc/device-tree/model")
    return model if model and "jetson" in model.lower() else None


def l4t_release() -> str | None:
    """'R35 (release), REVISION: 4.1' -> 'L4T R35.4.1' (JetPack 5.1.2), from /etc/nv_tegra_release."""
    text = read_text("/etc/nv_tegra_release")
    if not text:
        return None
    match = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"L4T R{match.group(1)}.{match.group(2)}" if match else text.splitlines()[0]


def jetpack_version() -> str | None:
    """The nvidia-jetpack meta-package's version (e.g. 5.1.2-b104), present when JetPack was installed whole."""
    return run_command(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"])


def nvpmodel_mode() -> str | None:
    """`nvpmodel -q` prints 'NV Power Mode: MAXN' and the mode number."""
    out = run_command(["nvpmodel", "-q"])
    if not out:
        return None
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    match = re.search(r"NV Power Mode:\s*(\S.*)", out)
    name = match.group(1).strip() if match else lines[0]
    number = next((line for line in reversed(lines) if line.isdigit()), None)
    return f"{name} (mode {number})" if number else name


def jetson_clocks_state(sysfs: str = "/sys") -> str:
    """'on' when every CPU and the GPU are pinned at the top clock of the power mode (what jetson_clocks does)."""
    pinned: list[bool] = []
    for cpu in glob.glob(f"{sysfs}/devices/system/cpu/cpu[0-9]*/cpufreq"):
        low, high = read_text(f"{cpu}/scaling_min_freq"), read_text(f"{cpu}/scaling_max_freq")
        if low and high:
            pinned.append(low == high)
    for gpu in glob.glob(f"{sysfs}/class/devfreq/*.g[av]1?b") + glob.glob(f"{sysfs}/class/devfreq/*gpu*"):
        low, high = read_text(f"{gpu}/min_freq"), read_text(f"{gpu}/max_freq")
        if low and high:
            pinned.append(low == high)
    if not pinned:
        return UNKNOWN
    return "on" if all(pinned) else "off"
