"""Facts read from an exported graph: FLOPs per image and where each memory bank lives.

Counting on the ONNX graph (not on torch modules) counts what the engine will run, including
the memory addressing matmuls and the discriminator of daad+, which are no nn.Conv/Linear.
"""

from __future__ import annotations

import copy
from math import prod
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from runtime.errors import DaadError

COUNTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def flops_per_image(proto: onnx.ModelProto) -> int:
    """2 x multiply-accumulates of every Conv, ConvTranspose, MatMul and Gemm, for one image."""
    single = copy.deepcopy(proto)
    batch_dim = single.graph.input[0].type.tensor_type.shape.dim[0]
    batch = batch_dim.dim_value if batch_dim.HasField("dim_value") else 1  # a fixed-batch graph keeps its batch
    batch_dim.dim_value = batch
    inferred = shape_inference.infer_shapes(single, data_prop=True)
    shapes = {init.name: list(init.dims) for init in inferred.graph.initializer}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        shapes[value.name] = [dim.dim_value if dim.HasField("dim_value") else None for dim in value.type.tensor_type.shape.dim]
    macs = 0
    for node in inferred.graph.node:
        if node.op_type in COUNTED_OPS:
            macs += _node_macs(node, shapes)
    return 2 * macs // batch


def _node_macs(node: onnx.NodeProto, shapes: dict[str, list[int | None]]) -> int:
    inputs = [shapes.get(name) for name in node.input[:2]]
    output = shapes.get(node.output[0])
    if output is None or any(shape is None or None in shape for shape in (*inputs, output)):
        raise DaadError(f"cannot count FLOPs: shapes of node {node.name} ({node.op_type}) are not static")
    data, weight = inputs
    if node.op_type == "Conv":  # weight: Cout x Cin/group x k...
        return prod(output) * prod(weight[1:])
    if node.op_type == "ConvTranspose":  # weight: Cin x Cout/group x k...; every input pixel scatters
        return prod(data) * prod(weight[1:])
    if node.op_type == "Gemm":
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        return prod(output) * (data[0] if trans_a else data[1])
    return prod(output) * data[-1]  # MatMul: the reduced axis is A's last


def locate_memory_banks(proto: onnx.ModelProto, banks: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Memory name -> the initializer holding its trained rows, verbatim; an error if one is missing.

    The rows may be stored transposed (D x N: the exporter folds `q @ M.T` into the initializer a
    MatMul reads). A bank that is not a constant (an input, or folded into something else)
    would mean the graph does not carry the trained memory, so export refuses it.
    """
    graph_inputs = {value.name for value in proto.graph.input}
    initializers = [(init.name, numpy_helper.to_array(init)) for init in proto.graph.initializer]
    located = {}
    for name, bank in banks.items():
        match, layout = None, "raw"
        for init, values in initializers:
            if values.shape == bank.shape and np.array_equal(values, bank):
                match, layout = init, "raw"
                break
            if values.shape == bank.shape[::-1] and np.array_equal(values.T, bank):
                match, layout = init, "transposed"
                break
        if match is None or match in graph_inputs:
            raise DaadError(
                f"memory bank {name!r} ({bank.shape[0]} x {bank.shape[1]}) is not a constant initializer of the "
                "exported graph: the bank must be a parameter the score path reads directly"
            )
        located[name] = {"initializer": match, "slots": int(bank.shape[0]), "dim": int(bank.shape[1]), "rows": layout}
    return located
