"""The memory head without PyTorch: patch features -> score and anomaly map, as an ONNX graph
written with the `onnx` package, and fused onto the backbone part into an ordinary model.onnx.

It computes what PatchCoreModel.score_features computes (train/features/patchcore.py), with the
ops TensorRT runs: per patch |q|^2 - 2 q.m + |m|^2 as one MatMul against the memory (held as a
D x K constant, as the PyTorch export folds it) plus constants, ReduceMin over the memory, Sqrt;
the border-normalised Gaussian blur on the patch grid (patchmemory.blur: one depthwise Conv and
a constant factor); Resize linear with half_pixel coordinates (PyTorch's bilinear,
align_corners=False) to the input size; score = ReduceMax of the map. All in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from patchmemory.backbone_part import FEATURES_NAME, BackbonePart
from patchmemory.blur import border_weights, gaussian_kernel
from runtime.bundle import INPUT_NAME, OUTPUT_NAMES
from runtime.optional import require

MEMORY_INITIALIZER = "head/memory"  # D x K: the memory rows, transposed, verbatim
BATCH = "batch"
DEFAULT_MAP_SIGMA = 4.0  # input pixels (patchcore's map smoothing, trained or taught)


@dataclass(frozen=True)
class HeadConfig:
    """What the head needs besides its memory: the patch grid and how the map is made."""

    feature_dim: int
    grid: tuple[int, int]  # h, w
    stride: int  # input pixels per patch: the map is resized by this factor
    map_sigma: float  # input pixels, as PatchCoreConfig.map_sigma

    @classmethod
    def of_part(cls, part: BackbonePart, map_sigma: float) -> "HeadConfig":
        return cls(part.feature_dim, (int(part.grid[0]), int(part.grid[1])), part.stride, map_sigma)


def build_head(memory: np.ndarray, config: HeadConfig, opset: int, ir_version: int) -> Any:
    """onnx.ModelProto: `features` float N x D x h x w -> `score` N, `anomaly_map` N x 1 x H x W."""
    onnx = require("onnx", "writing the memory head")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    memory = np.ascontiguousarray(memory, dtype=np.float32)
    if memory.ndim != 2 or memory.shape[1] != config.feature_dim or len(memory) < 1:
        raise ValueError(f"memory must be K x {config.feature_dim}, got {memory.shape}")
    (h, w), d, stride = config.grid, config.feature_dim, config.stride
    constants = {
        MEMORY_INITIALIZER: memory.T.copy(),
        "head/memory_squared": np.einsum("kd,kd->k", memory, memory).astype(np.float32)[None, None],
        "head/minus_two": np.array(-2.0, dtype=np.float32),
        "head/zero": np.array(0.0, dtype=np.float32),
        "head/queries_shape": np.array([-1, h * w, d], dtype=np.int64),
        "head/grid_shape": np.array([-1, 1, h, w], dtype=np.int64),
        "head/scales": np.array([1.0, 1.0, stride, stride], dtype=np.float32),
    }
    nodes = [
        helper.make_node("Transpose", [FEATURES_NAME], ["head/nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["head/nhwc", "head/queries_shape"], ["head/queries"]),
        helper.make_node("ReduceSumSquare", ["head/queries"], ["head/queries_squared"], axes=[-1], keepdims=1),
        helper.make_node("MatMul", ["head/queries", MEMORY_INITIALIZER], ["head/dot"]),
        helper.make_node("Mul", ["head/dot", "head/minus_two"], ["head/minus_two_dot"]),
        helper.make_node("Add", ["head/minus_two_dot", "head/queries_squared"], ["head/partial"]),
        helper.make_node("Add", ["head/partial", "head/memory_squared"], ["head/squared_distances"]),
        helper.make_node("ReduceMin", ["head/squared_distances"], ["head/nearest"], axes=[-1], keepdims=0),
        helper.make_node("Max", ["head/nearest", "head/zero"], ["head/nearest_clamped"]),
        helper.make_node("Sqrt", ["head/nearest_clamped"], ["head/distances"]),
        helper.make_node("Reshape", ["head/distances", "head/grid_shape"], ["head/patch_map"]),
    ]
    smoothed = "head/patch_map"
    sigma = config.map_sigma / stride
    if sigma > 0:
        kernel = gaussian_kernel(sigma)
        constants["head/blur_kernel"] = kernel[None, None]
        constants["head/blur_border"] = border_weights(kernel, h, w)[None, None]
        pad = kernel.shape[0] // 2
        nodes += [
            helper.make_node("Conv", ["head/patch_map", "head/blur_kernel"], ["head/blurred"], pads=[pad] * 4),
            helper.make_node("Mul", ["head/blurred", "head/blur_border"], ["head/smoothed"]),
        ]
        smoothed = "head/smoothed"
    score, anomaly_map = OUTPUT_NAMES
    nodes += [
        helper.make_node("Resize", [smoothed, "", "head/scales"], [anomaly_map], mode="linear",
                         coordinate_transformation_mode="half_pixel"),  # fmt: skip
        helper.make_node("ReduceMax", [anomaly_map], [score], axes=[1, 2, 3], keepdims=0),
    ]
    for index, node in enumerate(nodes):
        node.name = f"head/{index}_{node.op_type}"
    float32 = onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "memory_head",
        [helper.make_tensor_value_info(FEATURES_NAME, float32, [BATCH, d, h, w])],
        [helper.make_tensor_value_info(score, float32, [BATCH]),
         helper.make_tensor_value_info(anomaly_map, float32, [BATCH, 1, h * stride, w * stride])],  # fmt: skip
        initializer=[numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="daad-edge teach")
    model.ir_version = ir_version
    onnx.checker.check_model(model, full_check=True)
    return model


def fuse(backbone: Any, head: Any) -> Any:
    """backbone (frames -> features) + head (features -> score, anomaly_map) as one graph."""
    onnx = require("onnx", "writing the memory head")
    fused = onnx.compose.merge_models(backbone, head, io_map=[(FEATURES_NAME, FEATURES_NAME)],
                                      outputs=list(OUTPUT_NAMES), name="taught_patchcore")  # fmt: skip
    # merge_models lists the default domain once per model ("" and unset): one entry, as exported graphs have.
    del fused.opset_import[:]
    fused.opset_import.extend(backbone.opset_import)
    if [value.name for value in fused.graph.input] != [INPUT_NAME]:
        raise ValueError(f"the fused graph takes {[v.name for v in fused.graph.input]}, not {INPUT_NAME!r}")
    return fused


def head_flops(config: HeadConfig, memory_rows: int) -> int:
    """2 x MACs of the head's MatMul and blur Conv per image (export.onnx_stats counts the same ops)."""
    h, w = config.grid
    sigma = config.map_sigma / config.stride
    blur = gaussian_kernel(sigma).size if sigma > 0 else 0
    return 2 * h * w * (memory_rows * config.feature_dim + blur)


def features_text(config: dict[str, Any]) -> str:
    """The patch features of a feature family's config dict, in words (model.json's score definition)."""
    features = config.get("features", {})
    window = features.get("aggregation")
    return (f"EfficientNet-{features.get('backbone')} levels {', '.join(features.get('levels', []))} averaged "
            f"over {window} x {window} and concatenated")  # fmt: skip


def score_definition(config: dict[str, Any]) -> str:
    """model.json's sentence for a patchcore config dict, fitted by `daad train` or taught by `daad teach`."""
    return (
        f"score = max over pixels of anomaly_map; anomaly_map = Euclidean distance of each patch feature to its "
        f"nearest neighbour among {config.get('memory_size')} good patches (greedy coreset), patch features = "
        f"{features_text(config)}, Gaussian-smoothed (sigma {config.get('map_sigma')} px) and bilinearly "
        "upsampled to the input"
    )
