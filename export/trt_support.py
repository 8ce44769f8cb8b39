"""Will TensorRT's ONNX parser take this graph? Checked here, on a machine without TensorRT.

A Jetson is the wrong place to learn that an exported graph holds an op the parser rejects:
export runs this check and refuses such a graph, naming the offending nodes.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto

from runtime.errors import DaadError

# Operators marked supported ("Y") in onnx-tensorrt's docs/operators.md both for TensorRT 8.5 GA
# (branch release/8.5-GA, "supports operators up to Opset 17") and for TensorRT 10.x (the 10.15
# table, "opset 9 to opset 24"). The 8.6 table lies between the two releases and was not read
# separately. Non-standard ops (ImageScaler, ParametricSoftplus, ScaledTanh, Scatter, Upsample)
# and ops missing from either table (LayerNormalization, IsInf, Col2Im, ...) are left out.
SUPPORTED_OPS = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
    Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum
    DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten
    Floor Gather GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater
    GreaterOrEqual GridSample GRU HardSigmoid HardSwish Identity If InstanceNormalization IsNaN
    LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization LpPool LRN LSTM MatMul Max
    MaxPool Mean MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or
    Pad Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike
    Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
    ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round
    Scan ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax
    Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK
    Transpose Trilu Unsqueeze Where Xor
    """.split()
)

# Parsed by some versions, but with restrictions that break a dynamic-batch scoring graph, or
# a sign that the model left the reshape/permute formulation it must stay in.
FORBIDDEN_OPS = {
    "Col2Im": "F.fold: TensorRT's parser has no Col2Im; assemble blocks with reshape/permute",
    "Im2Col": "F.unfold: divide feature maps into blocks with reshape/permute",
    "Einsum": "no ellipsis/broadcast support in TensorRT 8.5; write it as MatMul",
    "Loop": "data-dependent control flow; TensorRT needs a static graph",
    "Scan": "data-dependent control flow; TensorRT needs a static graph",
    "If": "data-dependent control flow; TensorRT needs a static graph",
    "NonZero": "data-dependent output shape",
    "Unique": "data-dependent output shape; unsupported by TensorRT",
    "ScatterND": "restricted in TensorRT (no reduction) and slow; index with reshape/slice instead",
}

# op type -> index of the input that must be a build-time constant (TensorRT restriction).
CONSTANT_INPUTS = {
    "ReduceL1": 1, "ReduceL2": 1, "ReduceLogSum": 1, "ReduceLogSumExp": 1, "ReduceMax": 1,
    "ReduceMean": 1, "ReduceMin": 1, "ReduceProd": 1, "ReduceSum": 1, "ReduceSumSquare": 1,
    "Squeeze": 1, "Unsqueeze": 1, "Slice": 3, "CumSum": 1, "TopK": 1,
}  # fmt: skip

MAX_RANK = 8
RESIZE_MODES = {b"nearest", b"linear"}
UINT8_CAST_TARGETS = {TensorProto.FLOAT, TensorProto.FLOAT16}


def check_tensorrt_support(model: onnx.ModelProto | str | Path) -> list[str]:
    """Every reason TensorRT 8.5-10.x would refuse `model`; an empty list means ready."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        return [f"onnx.checker rejects the model: {str(exc).splitlines()[0]}"]
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    problems: list[str] = []
    for node in graph.node:
        where = f"node {node.name or '(unnamed)'} ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{where}: custom domain {node.domain!r} needs a TensorRT plugin")
        elif node.op_type in FORBIDDEN_OPS:
            problems.append(f"{where}: {FORBIDDEN_OPS[node.op_type]}")
        elif node.op_type not in SUPPORTED_OPS:
            problems.append(f"{where}: not in TensorRT's ONNX parser op set common to 8.5 and 10.x")
        problems += _node_restrictions(node, where, constants)
    problems += _rank_problems(graph)
    problems += _uint8_problems(graph)
    return problems


def assert_tensorrt_ready(model: onnx.ModelProto | str | Path, source: str = "model.onnx") -> None:
    """Raise a DaadError listing every problem `check_tensorrt_support` finds."""
    problems = check_tensorrt_support(model)
    if problems:
        listing = "\n  - ".join(problems)
        raise DaadError(
            f"{source} would not build with TensorRT 8.5-10.x:\n  - {listing}\n"
            "Change the model so it exports without these ops (see docs/EXPORT.md), then export again."
        )


def _node_restrictions(node: onnx.NodeProto, where: str, constants: set[str]) -> list[str]:
    problems = []
    index = CONSTANT_INPUTS.get(node.op_type)
    if index is not None and len(node.input) > index and node.input[index] and node.input[index] not in constants:
        problems.append(f"{where}: input {node.input[index]!r} must be a constant (initializer or Constant node)")
    if node.op_type == "Resize":
        mode = next((attr.s for attr in node.attribute if attr.name == "mode"), b"nearest")
        if mode not in RESIZE_MODES:
            problems.append(f"{where}: Resize mode {mode.decode()!r}; TensorRT supports nearest and linear")
    return problems


def _rank_problems(graph: onnx.GraphProto) -> list[str]:
    problems = []
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = value.type.tensor_type
        if tensor_type.HasField("shape") and len(tensor_type.shape.dim) > MAX_RANK:
            problems.append(f"tensor {value.name!r} has rank {len(tensor_type.shape.dim)}; TensorRT allows <= {MAX_RANK}")
    return problems


def _uint8_problems(graph: onnx.GraphProto) -> list[str]:
    """TensorRT (from 8.5) takes uint8 only as a network input that is cast straight to float."""
    uint8_inputs = {v.name for v in graph.input if v.type.tensor_type.elem_type == TensorProto.UINT8}
    problems = []
    for node in graph.node:
        for name in set(node.input) & uint8_inputs:
            target = next((attr.i for attr in node.attribute if attr.name == "to"), None)
            if node.op_type != "Cast" or target not in UINT8_CAST_TARGETS:
                problems.append(
                    f"node {node.name or '(unnamed)'} ({node.op_type}) reads uint8 input {name!r}; "
                    "TensorRT only casts uint8 to float32/float16"
                )
    uint8_values = [v.name for v in graph.value_info if v.type.tensor_type.elem_type == TensorProto.UINT8]
    problems += [f"intermediate tensor {name!r} is uint8; TensorRT allows uint8 only at the input" for name in uint8_values]
    return problems
