"""TorchScript scopes that name several list entries alike: a list run by `layer.forward(x)` leaves
the entry out of every scope (SqueezeBERT's encoder), so `/enc/attn/softmax_1` is some layer's
`attn.softmax`. The name is no evidence of the entry; inference places the node, and the name then
says where inside the entry it ran (`tagger.pipeline.alike`)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tagger import report, tag_proto
from tests.graphs import tags_of


def _two_layers_run_by_forward() -> onnx.ModelProto:
    nodes, inits, previous = [], [], "x"
    for layer, suffix in ((0, ""), (1, "_1")):
        ops = (("Add", f"q{suffix}", "q.bias"), ("Softmax", f"softmax{suffix}", None), ("Add", f"o{suffix}", "o.bias"))
        for op, scope, param in ops:
            output = f"t{len(nodes)}"
            inputs = [previous]
            if param:
                name = f"m.enc.layers.{layer}.attn.{param}"
                inits.append(numpy_helper.from_array(np.full((4,), 0.1 * (len(nodes) + 1), dtype=np.float32), name))
                inputs.append(name)
            nodes.append(helper.make_node(op, inputs, [output], name=f"/m/enc/attn/{scope}/{op}"))
            previous = output
    nodes.append(helper.make_node("Relu", [previous], ["y"], name="/m/Relu"))
    graph = helper.make_graph(
        nodes,
        "alike",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_scope_naming_list_entries_alike_is_placed_by_parameters_and_refined_by_its_name():
    model = _two_layers_run_by_forward()
    tag_proto(model)
    modules = [tags["hierarchy.module"] for tags in tags_of(model)]
    assert modules[:3] == ["m.enc.layers.0.attn.q", "m.enc.layers.0.attn.softmax", "m.enc.layers.0.attn.o"]
    # layer 1's scopes read `q_1`, `softmax_1`: calls of the same scope, not layer 0's modules called again
    assert modules[3:6] == ["m.enc.layers.1.attn.q", "m.enc.layers.1.attn.softmax", "m.enc.layers.1.attn.o"]


def test_the_report_says_why_such_nodes_entry_was_inferred(tmp_path):
    path = tmp_path / "alike.onnx"
    onnx.save(_two_layers_run_by_forward(), path)
    notes = [note for note in report(path).notes if "name several module list entries alike" in note]
    assert notes and notes[0].startswith("6 nodes have TorchScript scopes")
