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
