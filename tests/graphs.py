"""Tiny hand-built ONNX graphs for unit tests (onnx.helper, no exporter needed)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def chain_model(names: list[str], initializer_names: dict[int, str] | None = None, opset: int = 17) -> onnx.ModelProto:
    """A runnable chain of Relu/Add nodes: node i has name names[i]; optional parameter inputs.

    `initializer_names[i]` gives node i (an Add) a constant second input with that name.
    """
    initializer_names = initializer_names or {}
    nodes, inits = [], []
    previous = "x"
    for i, name in enumerate(names):
        output = f"t{i}" if i < len(names) - 1 else "y"
        if i in initializer_names:
            param = initializer_names[i]
            inits.append(numpy_helper.from_array(np.full((4,), 0.5, dtype=np.float32), param))
            nodes.append(helper.make_node("Add", [previous, param], [output], name=name))
        else:
            nodes.append(helper.make_node("Relu", [previous], [output], name=name))
        previous = output
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def if_model() -> onnx.ModelProto:
    """A model whose `If` bodies hold nodes (one body's node has a scoped name)."""
    then_body = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"], name="/block/then/Relu")],
        "then",
        [],
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4])],
    )
    else_body = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["b"], name="")],
        "else",
        [],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [4])],
    )
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], name="/block/ReduceSum", keepdims=0),
        helper.make_node("Constant", [], ["zero"], name="", value=numpy_helper.from_array(np.float32(0.0))),
        helper.make_node("Greater", ["s", "zero"], ["cond"], name=""),
        helper.make_node("If", ["cond"], ["y"], name="", then_branch=then_body, else_branch=else_body),
    ]
    graph = helper.make_graph(
        nodes,
        "with_if",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def function_model() -> onnx.ModelProto:
    """A model calling a model-local function twice from two scoped call sites."""
    function = helper.make_function(
        "local",
        "Block",
        ["i"],
        ["o"],
        [helper.make_node("Relu", ["i"], ["r"]), helper.make_node("Neg", ["r"], ["o"])],
        [helper.make_opsetid("", 17)],
    )
    nodes = [
        helper.make_node("Block", ["x"], ["h"], name="/encoder/layer.0/Block", domain="local"),
        helper.make_node("Block", ["h"], ["y"], name="/encoder/layer.1/Block", domain="local"),
    ]
    graph = helper.make_graph(
        nodes,
        "with_function",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
        functions=[function],
    )


def tags_of(model: onnx.ModelProto, nodes=None) -> list[dict[str, str]]:
    """The hierarchy.* entries of each node of `nodes` (default: the main graph)."""
    nodes = model.graph.node if nodes is None else nodes
    return [{p.key: p.value for p in n.metadata_props if p.key.startswith("hierarchy.")} for n in nodes]
