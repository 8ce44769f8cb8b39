"""Bundle reading refuses what it cannot trust, naming the file and the fix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.bundle import FORMAT_VERSION, open_bundle
from runtime.errors import BundleError


def test_opens_a_valid_bundle(tiny_bundle) -> None:
    bundle = open_bundle(tiny_bundle)
    assert bundle.preprocess.shape == (32, 32, 3)
    assert bundle.metadata.format_version == FORMAT_VERSION


def test_missing_folder_and_missing_metadata(tmp_path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        open_bundle(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="model.json is missing"):
        open_bundle(tmp_path / "empty")


def test_refuses_changed_or_truncated_onnx(tiny_bundle) -> None:
    onnx_path = tiny_bundle / "model.onnx"
    onnx_path.write_bytes(onnx_path.read_bytes()[:50])
    with pytest.raises(BundleError, match="does not match.*daad export"):
        open_bundle(tiny_bundle)


def test_refuses_unknown_format_version(tiny_bundle) -> None:
    path = tiny_bundle / "model.json"
    data = json.loads(path.read_text())
    data["format_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="format version 99"):
        open_bundle(tiny_bundle)


def test_refuses_corrupt_metadata(tiny_bundle) -> None:
    (tiny_bundle / "model.json").write_text("{not json")
    with pytest.raises(BundleError, match="corrupt"):
        open_bundle(tiny_bundle)


def test_tiny_bundle_runs_in_onnxruntime(tiny_bundle) -> None:
    from tiny_bundle import grey_frame

    import onnxruntime as ort

    session = ort.InferenceSession(str(tiny_bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    frames = np.stack([grey_frame(32, 32), grey_frame(32, 32, blob=255)])
    score, anomaly_map = session.run(["score", "anomaly_map"], {"frames": frames})
    assert anomaly_map.shape == (2, 1, 32, 32)
    assert score[0] < 0.01 < 0.4 < score[1]
