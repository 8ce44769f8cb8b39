"""Fold the amounts of every Pad into a constant, so the graph's shapes stay static.

The TorchScript exporter writes `F.pad`'s amounts through a reversing Slice (steps -1) that its
own constant folding skips. The amounts are still pure constants, but ONNX shape inference
stops at a Pad whose `pads` is computed, and so do FLOP counting and TensorRT's static-shape
planning. This evaluates each such `pads` input from its constant ancestors (onnx's reference
evaluator) and replaces it with an initializer; the nodes left without a consumer are dropped.
"""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from runtime.errors import DaadError


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in graph.node for output in node.output}


def _constant_cone(name: str, producers: dict[str, onnx.NodeProto], constants: set[str]) -> list[onnx.NodeProto] | None:
    """The nodes computing `name` from initializers alone, in order; None if it reads anything else."""
    cone: list[onnx.NodeProto] = []
    stack, seen = [name], set()
    while stack:
        tensor = stack.pop()
        if tensor in constants or tensor == "" or tensor in seen:
            continue
        seen.add(tensor)
        node = producers.get(tensor)
        if node is None:
            return None  # a graph input
        cone.append(node)
        stack.extend(node.input)
    order = {id(node): index for index, node in enumerate(producers.values())}
    return sorted({id(n): n for n in cone}.values(), key=lambda n: order[id(n)])


def fold_pad_amounts(proto: onnx.ModelProto) -> onnx.ModelProto:
    """`proto` with each Pad's `pads` (and constant value) as an initializer; the model is changed in place."""
    graph = proto.graph
    producers = _producers(graph)
    initializers = {init.name: init for init in graph.initializer}
    folded = 0
    for node in [n for n in graph.node if n.op_type == "Pad"]:
        for slot in range(1, len(node.input)):
            name = node.input[slot]
            if not name or name in initializers:
                continue
            cone = _constant_cone(name, producers, set(initializers))
            if cone is None:
                raise DaadError(f"Pad node {node.name} reads amounts that are not constants: the graph cannot have static shapes")
            needed = {i for n in cone for i in n.input if i in initializers}
            sub = helper.make_graph(cone, "pads", [], [helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None)],
                                    [initializers[i] for i in sorted(needed)])  # fmt: skip
            value = ReferenceEvaluator(helper.make_model(sub, opset_imports=proto.opset_import)).run(None, {})[0]
            constant = numpy_helper.from_array(value, f"{name}_folded")
            graph.initializer.append(constant)
            initializers[constant.name] = constant
            node.input[slot] = constant.name
            folded += 1
    if folded:
        _drop_unused(graph)
    return proto


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Remove nodes (and initializers) no output depends on any more."""
    producers = _producers(graph)
    live, stack = set(), [output.name for output in graph.output]
    while stack:
        tensor = stack.pop()
        if tensor in live:
            continue
        live.add(tensor)
        node = producers.get(tensor)
        if node is not None:
            stack.extend(node.input)
    keep = [node for node in graph.node if any(output in live for output in node.output)]
    del graph.node[:]
    graph.node.extend(keep)
    used = [init for init in graph.initializer if init.name in live]
    del graph.initializer[:]
    graph.initializer.extend(used)
