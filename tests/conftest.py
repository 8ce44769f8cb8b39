"""Shared test set-up: TensorRT tests skip cleanly where TensorRT or a GPU is absent."""

from __future__ import annotations

import importlib.util

import pytest


def _tensorrt_usable() -> bool:
    return importlib.util.find_spec("tensorrt") is not None and importlib.util.find_spec("pycuda") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _tensorrt_usable():
        return
    skip = pytest.mark.skip(reason="TensorRT and pycuda are not installed (needs an NVIDIA GPU; see README)")
    for item in items:
        if "tensorrt" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_bundle(tmp_path):
    """A real ONNX bundle (32x32 BGR) built by tests/tiny_bundle.py; see its docstring."""
    from tiny_bundle import write_tiny_bundle

    return write_tiny_bundle(tmp_path / "bundle")


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB tmpfs at tmp_path/disk (needs root and mount; skips otherwise).

    `small_disk.fill(leave)` fills it until about `leave` bytes are free, to meet a full disk.
    """
    import subprocess
    from pathlib import Path

    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")

    class Disk(type(mount)):
        def fill(self, leave: int = 0) -> None:
            import shutil

            free = shutil.disk_usage(self).free - leave
            with open(self / ".filler", "wb") as handle:
                try:
                    handle.write(b"\0" * max(0, free))
                    handle.flush()
                except OSError:
                    pass

    try:
        yield Disk(mount)
    finally:
        subprocess.run(["umount", str(Path(mount))], check=False)


@pytest.fixture
def mqtt_broker(tmp_path):
    """A real mosquitto broker on a free port of 127.0.0.1 (tests/mqtt_broker.py); stopped afterwards."""
    from mqtt_broker import Broker, mosquitto_binary

    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (extra `plant`)")
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (`make system-deps` installs it with apt)")
    broker = Broker(tmp_path / "broker").start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def backbone_part(tmp_path_factory):
    """A real backbone part (EfficientNet-Lite0, s8+s16 patch features) for 64x96 BGR frames, as
    `daad export --backbone lite0 --image-size 64x96` writes it; exported once per test session."""
    from export.backbone_export import export_backbone
    from train.features.patch_features import FeatureConfig

    folder = tmp_path_factory.mktemp("part") / "lite0-64x96"
    export_backbone(folder, FeatureConfig(), 64, 96, 3)
    return folder
