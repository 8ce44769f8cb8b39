"""A real, tiny bundle built with onnx.helper, for tests that need no trained model.

The graph honours the bundle contract (uint8 N x H x W x C frames in; `score` N and
`anomaly_map` N x 1 x H x W out): the map is |pixel/255 - 0.5| averaged over channels and the
score is its maximum, so a bright or dark blob on a mid-grey frame scores high.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from runtime.bundle import MODEL_FILE, BundleMetadata, file_sha256, write_metadata
from runtime.preprocess import PreprocessConfig


def tiny_model(height: int, width: int, channels: int, opset: int = 17) -> onnx.ModelProto:
    frames = helper.make_tensor_value_info("frames", TensorProto.UINT8, ["batch", height, width, channels])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])
    anomaly_map = helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["batch", 1, height, width])
    constants = [
        helper.make_tensor("scale", TensorProto.FLOAT, [], [1.0 / 255.0]),
        helper.make_tensor("centre", TensorProto.FLOAT, [], [0.5]),
    ]
    nodes = [
        helper.make_node("Cast", ["frames"], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["as_float", "scale"], ["unit"]),
        helper.make_node("Sub", ["unit", "centre"], ["centred"]),
        helper.make_node("Abs", ["centred"], ["deviation"]),
        helper.make_node("ReduceMean", ["deviation"], ["per_pixel"], axes=[3], keepdims=1),
        helper.make_node("Transpose", ["per_pixel"], ["anomaly_map"], perm=[0, 3, 1, 2]),
        helper.make_node("ReduceMax", ["anomaly_map"], ["score"], axes=[1, 2, 3], keepdims=0),
    ]
    graph = helper.make_graph(nodes, "tiny_daad", [frames], [score, anomaly_map], initializer=constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_tiny_bundle(root: Path, height: int = 32, width: int = 32, channels: int = 3) -> Path:
    """Write model.onnx + model.json into `root` and return it."""
    root.mkdir(parents=True, exist_ok=True)
    onnx.save(tiny_model(height, width, channels), str(root / MODEL_FILE))
    preprocess = PreprocessConfig(height=height, width=width, channels=channels)
    metadata = BundleMetadata(
        onnx_sha256=file_sha256(root / MODEL_FILE),
        preprocess=preprocess.to_dict(),
        model_kind="tiny-test",
        input_shape=["batch", height, width, channels],
        channel_order=preprocess.channel_order,
        score_definition="max over pixels of |pixel/255 - 0.5| averaged over channels",
    )
    write_metadata(root, metadata)
    return root


def grey_frame(height: int, width: int, channels: int = 3, blob: int | None = None) -> np.ndarray:
    """A mid-grey frame; with `blob`, a bright square of that value in the middle."""
    frame = np.full((height, width, channels), 128, dtype=np.uint8)
    if blob is not None:
        frame[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] = blob
    return frame
