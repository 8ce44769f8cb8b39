"""The TensorRT readiness check, on graphs built with onnx.helper (no TensorRT needed)."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from export.trt_support import assert_tensorrt_ready, check_tensorrt_support
from runtime.errors import DaadError


def _model(nodes, inputs, outputs, initializers=(), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _float(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def test_tiny_bundle_graph_is_ready(tiny_bundle) -> None:
    assert check_tensorrt_support(tiny_bundle / "model.onnx") == []
    assert_tensorrt_ready(tiny_bundle / "model.onnx")


def test_col2im_is_refused_with_the_node_named() -> None:
    constants = [
        helper.make_tensor("image_shape", TensorProto.INT64, [2], [4, 4]),
        helper.make_tensor("block_shape", TensorProto.INT64, [2], [2, 2]),
    ]
    node = helper.make_node("Col2Im", ["cols", "image_shape", "block_shape"], ["image"], name="assemble", strides=[2, 2])
    model = _model([node], [_float("cols", [1, 4, 4])], [_float("image", [1, 1, 4, 4])], constants, opset=18)
    problems = check_tensorrt_support(model)
    assert len(problems) == 1 and "assemble (Col2Im)" in problems[0] and "reshape/permute" in problems[0]
    with pytest.raises(DaadError, match=r"(?s)would not build with TensorRT.*assemble \(Col2Im\)"):
        assert_tensorrt_ready(model)


def test_einsum_and_unknown_ops_are_refused() -> None:
    nodes = [
        helper.make_node("Einsum", ["a", "b"], ["c"], name="mix", equation="ij,jk->ik"),
        helper.make_node("LayerNormalization", ["c", "scale"], ["d"], name="norm"),
    ]
    model = _model(
        nodes, [_float("a", [2, 3]), _float("b", [3, 4])], [_float("d", [2, 4])],
        [helper.make_tensor("scale", TensorProto.FLOAT, [4], [1.0] * 4)],
    )  # fmt: skip
    problems = check_tensorrt_support(model)
    assert any("mix (Einsum)" in p for p in problems)
    assert any("norm (LayerNormalization)" in p and "not in TensorRT" in p for p in problems)


def test_reduce_axes_must_be_constant() -> None:
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="sum", keepdims=0)
    axes_input = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    model = _model([node], [_float("x", [2, 3]), axes_input], [_float("y", ["d"])])
    assert any("sum (ReduceSum)" in p and "must be a constant" in p for p in check_tensorrt_support(model))
    constant = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    fixed = _model([node], [_float("x", [2, 3])], [_float("y", [2])], [constant])
    assert check_tensorrt_support(fixed) == []


def test_rank_above_8_is_refused() -> None:
    shape = helper.make_tensor("shape", TensorProto.INT64, [9], [1] * 9)
    node = helper.make_node("Reshape", ["x", "shape"], ["y"], name="deep")
    model = _model([node], [_float("x", [1])], [_float("y", [1] * 9)], [shape])
    assert any("rank 9" in p for p in check_tensorrt_support(model))


def test_uint8_input_must_be_cast_to_float_first() -> None:
    frames = helper.make_tensor_value_info("frames", TensorProto.UINT8, ["n", 4, 4, 3])
    transpose_first = _model(
        [helper.make_node("Transpose", ["frames"], ["t"], name="layout", perm=[0, 3, 1, 2]),
         helper.make_node("Cast", ["t"], ["y"], to=TensorProto.FLOAT)],
        [frames], [_float("y", ["n", 3, 4, 4])],
    )  # fmt: skip
    assert any("layout (Transpose) reads uint8" in p for p in check_tensorrt_support(transpose_first))
    cast_first = _model(
        [helper.make_node("Cast", ["frames"], ["f"], to=TensorProto.FLOAT),
         helper.make_node("Transpose", ["f"], ["y"], perm=[0, 3, 1, 2])],
        [frames], [_float("y", ["n", 3, 4, 4])],
    )  # fmt: skip
    assert check_tensorrt_support(cast_first) == []


def test_cubic_resize_and_checker_failures_are_reported() -> None:
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="cubic")
    model = _model([node], [_float("x", [1, 1, 2, 2])], [_float("y", [1, 1, 4, 4])], [scales])
    assert any("up (Resize)" in p and "cubic" in p for p in check_tensorrt_support(model))
    broken = _model([helper.make_node("Relu", ["missing"], ["y"])], [_float("x", [1])], [_float("y", [1])])
    problems = check_tensorrt_support(broken)
    assert len(problems) == 1 and problems[0].startswith("onnx.checker rejects the model")
