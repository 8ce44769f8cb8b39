"""The memory head written with onnx, fused onto the backbone part, scores as PyTorch's patchcore.

Real graphs: the backbone part exported from PyTorch, the head built by patchmemory/head.py, the
fused graph run in ONNX Runtime, against PatchCoreModel.score on the same memory and frames.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.onnx_stats import locate_memory_banks
from export.parity import synthetic_frames
from export.trt_support import check_tensorrt_support
from patchmemory.backbone_part import BACKBONE_FILE, read_backbone_part
from patchmemory.head import HeadConfig, build_head, fuse
from train.features.patch_features import FeatureConfig, feature_preprocess
from train.features.patchcore import PatchCoreConfig, PatchCoreModel

HEIGHT, WIDTH = 64, 96


def fitted_torch_model(map_sigma: float, rows: int) -> tuple[PatchCoreModel, np.ndarray]:
    """PatchCoreModel with a memory of `rows` patches of some frames (not the frames it is tested on)."""
    model = PatchCoreModel(PatchCoreConfig(FeatureConfig(), memory_size=rows, map_sigma=map_sigma),
                           feature_preprocess(HEIGHT, WIDTH, 3)).eval()  # fmt: skip
    with torch.inference_mode():
        features = model.patch_features(torch.from_numpy(synthetic_frames(HEIGHT, WIDTH, 3, count=4, seed=1)))
    patches = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).numpy()
    memory = patches[np.random.default_rng(0).choice(len(patches), rows, replace=False)]
    model.set_memory(memory)
    return model, memory


def fused_graph(backbone_part, memory: np.ndarray, map_sigma: float) -> onnx.ModelProto:
    part = read_backbone_part(backbone_part)
    backbone = onnx.load(str(backbone_part / BACKBONE_FILE))
    head = build_head(memory, HeadConfig.of_part(part, map_sigma), part.opset, backbone.ir_version)
    return fuse(backbone, head)


@pytest.mark.parametrize("map_sigma", [4.0, 0.0])
def test_the_fused_graph_scores_as_pytorch_patchcore_on_the_same_memory(backbone_part, map_sigma) -> None:
    model, memory = fitted_torch_model(map_sigma, rows=60)
    frames = synthetic_frames(HEIGHT, WIDTH, 3, count=6, seed=7)
    with torch.inference_mode():
        scores, maps = (value.numpy() for value in model.score(torch.from_numpy(frames)))
    session = ort.InferenceSession(fused_graph(backbone_part, memory, map_sigma).SerializeToString())
    onnx_scores, onnx_maps = session.run(["score", "anomaly_map"], {"frames": frames})
    assert onnx_maps.shape == maps.shape == (6, 1, HEIGHT, WIDTH)
    assert np.abs(onnx_scores - scores).max() <= 1e-5 * np.abs(scores).max()
    assert np.abs(onnx_maps - maps).max() <= 1e-5 * np.abs(maps).max()
    assert np.ptp(scores) > 1e-2 * np.abs(scores).max()  # the frames differ: a constant map would not prove much


def test_the_fused_graph_is_an_ordinary_model_onnx(backbone_part) -> None:
    _, memory = fitted_torch_model(4.0, rows=60)
    model = fused_graph(backbone_part, memory, 4.0)
    assert check_tensorrt_support(model) == []
    assert [value.name for value in model.graph.input] == ["frames"]
    assert [value.name for value in model.graph.output] == ["score", "anomaly_map"]
    assert [entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")] == [17]
    # The memory is a constant holding the chosen rows verbatim, where export's bank check finds it.
    assert locate_memory_banks(model, {"patches": memory})["patches"]["rows"] == "transposed"
    ops = {node.op_type for node in model.graph.node}
    assert {"MatMul", "ReduceMin", "Sqrt", "Resize", "ReduceMax", "Conv"} <= ops


def test_a_memory_of_the_wrong_width_is_refused(backbone_part) -> None:
    part = read_backbone_part(backbone_part)
    with pytest.raises(ValueError, match=f"memory must be K x {part.feature_dim}"):
        build_head(np.zeros((5, part.feature_dim + 1), np.float32), HeadConfig.of_part(part, 4.0), 17, 8)
