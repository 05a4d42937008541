"""The index's node positions: `index.nodes[i]` is the very NodeProto of `index.views[i]`, in the
main graph, in control-flow bodies (an empty one included) and in functions, though the index
holds no Python object per node."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from tagger.model.index import build_index
from tests.graphs import function_model, if_model


def _with_empty_body() -> onnx.ModelProto:
    """An `If` whose then-branch holds no node (it returns an outer value), between other nodes."""
    model = if_model()
    owner = next(node for node in model.graph.node if node.op_type == "If")
    then_branch = next(attribute for attribute in owner.attribute if attribute.name == "then_branch")
    then_branch.g.CopyFrom(helper.make_graph([], "then", [], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])]))
    model.graph.node.add().CopyFrom(helper.make_node("Relu", ["y"], ["z"], name="/after/Relu"))
    model.graph.output[0].name = "z"
    return model


@pytest.mark.parametrize("build", [if_model, function_model, _with_empty_body])
def test_every_position_reaches_its_own_node_proto(build):
    model = build()
    index = build_index(model)
    nodes = index.nodes
    assert len(nodes) == len(index.views) == len(index.graph_of)
    expected = [node for scope in index.graphs for node in _graph_nodes(model, index, scope)]
    assert list(nodes) == expected
    for i, view in enumerate(index.views):
        assert nodes[i] == expected[i]
        assert (nodes[i].name, nodes[i].op_type, tuple(nodes[i].output)) == (view.name, view.op_type, view.output)
    assert nodes[-1] == expected[-1] and nodes[1:3] == expected[1:3]
    with pytest.raises(IndexError):
        nodes[len(nodes)]


def test_a_tag_written_through_a_position_lands_on_the_model():
    model = if_model()
    index = build_index(model)
    body_node = next(i for i, scope in enumerate(index.graph_of) if index.graphs[scope].kind == "subgraph")
    index.nodes[body_node].metadata_props.add(key="k", value="v")
    owner = next(node for node in model.graph.node if node.op_type == "If")
    assert [(p.key, p.value) for p in owner.attribute[0].g.node[0].metadata_props] == [("k", "v")]


def _graph_nodes(model: onnx.ModelProto, index, scope) -> list[onnx.NodeProto]:
    """The nodes of one indexed graph, found from the model itself."""
    if scope.kind == "main":
        return list(model.graph.node)
    if scope.kind == "function":
        return next(list(f.node) for f in model.functions if (f.domain, f.name) == scope.function_key[:2])
    owner = index.nodes[scope.owner]
    name, _, position = scope.attribute.partition("[")
    attribute = next(a for a in owner.attribute if a.name == name)
    return list(attribute.g.node if not position else attribute.graphs[int(position[:-1])].node)
