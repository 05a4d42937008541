"""bench.metrics: the exact / sound / wrong / best / reachable shares and the evidenced-module set."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bench import metrics

MODULES = {"", "enc", "enc.layer.0", "enc.layer.0.q", "enc.layer.0.act", "head"}


def test_each_share_counts_what_it_says():
    truth = {0: "a.b.c", 1: "a.b", 2: "a.x", 3: "a"}
    predicted = {0: "a.b", 1: "a.b", 2: "a.b", 3: None}
    m = metrics.measure(predicted, truth, {"", "a", "a.b"})
    assert (m.graded, m.exact_count, m.sound_count, m.best_count, m.reachable_count) == (4, 1, 2, 2, 2)
    assert m.wrong == 0.5


def test_root_is_sound_and_a_sibling_prefix_is_not():
    assert metrics.is_sound("", "a.b")
    assert metrics.is_sound("a", "a.b")
    assert not metrics.is_sound("a.b", "a.bc")
    assert not metrics.is_sound(None, "a")


def test_deepest_evidenced_falls_back_to_the_root():
    assert metrics.deepest_evidenced("a.b.c", {"", "a", "a.b"}) == "a.b"
    assert metrics.deepest_evidenced("x.y", {"", "a"}) == ""


def _model(metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.ones((2, 2), np.float32), "enc.layer.0.q.weight")
    nodes = [
        helper.make_node("MatMul", ["x", "enc.layer.0.q.weight"], ["t0"], name="node_matmul"),
        helper.make_node("Relu", ["t0"], ["y"], name="/enc/layer.0/act/Relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
        [weight],
    )
    model = helper.make_model(graph)
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    return model


def test_initializer_and_scoped_node_names_evidence_their_modules_and_ancestors():
    found = metrics.evidenced_modules(_model(), MODULES)
    assert found == {"", "enc", "enc.layer.0", "enc.layer.0.q", "enc.layer.0.act"}


def test_the_model_level_module_map_evidences_every_module_it_lists():
    found = metrics.evidenced_modules(_model({"hierarchy.modules": json.dumps({"head": "Linear"})}), MODULES)
    assert "head" in found


def test_a_stripped_real_export_leaves_parameter_free_modules_unreachable(built_cases):
    from bench import cases

    case = built_cases[("bert", "dynamo", "strip_all")]
    model = onnx.load(case.path, load_external_data=False)
    modules = cases.module_paths("bert")
    found = metrics.evidenced_modules(model, modules)
    assert found <= modules
    assert not any(path.endswith("intermediate_act_fn") for path in found)
    untouched = onnx.load(built_cases[("bert", "dynamo", "none")].path, load_external_data=False)
    assert set(case.truth.values()) <= metrics.evidenced_modules(untouched, modules)
    perfect = metrics.measure(case.truth, case.truth, found)  # a tagger that knows the truth
    assert perfect.exact == perfect.sound == 1.0
    assert perfect.best == perfect.reachable < 1.0


def _folded_conv() -> onnx.ModelProto:
    """A Conv reading `block.conv.weight` (its BatchNorm `block.norm` folded in), then a Relu."""
    weight = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "block.conv.weight")
    nodes = [helper.make_node("Conv", ["x", "block.conv.weight"], ["y"]), helper.make_node("Relu", ["y"], ["z"])]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes, "g", [value("x", TensorProto.FLOAT, [1, 1, 2, 2])], [value("z", TensorProto.FLOAT, [1, 1, 2, 2])], [weight]
    )
    return helper.make_model(graph)


def test_a_conv_tagged_with_the_sibling_whose_weight_it_reads_is_wrong_and_counted_folded():
    folded = metrics.folded_modules(_folded_conv())
    assert folded == {0: "block.conv"}
    truth = {0: "block.norm", 1: "block.act"}
    m = metrics.measure({0: "block.conv", 1: "other.act"}, truth, {""}, folded)
    assert (m.wrong, m.folded_count) == (1.0, 1)  # the Relu's wrong tag is no fold
    assert metrics.wrong_cell(m) == "100.0% (50.0% folded)"
    cousin = metrics.measure({0: "block.conv"}, {0: "other.norm"}, {""}, folded)
    assert cousin.folded_count == 0  # not a sibling: a wrong tag, however it reads the weight
    assert metrics.wrong_cell(metrics.measure({0: "block", 1: "block"}, truth, {""}, folded)) == "0.0%"


def test_a_node_onnxslim_makes_anew_is_counted_tool_made_and_kept_nodes_are_not(tmp_path):
    """onnxslim turns a MatMul + bias Add on a 3-D input into Reshape -> Gemm -> Reshape: new
    names, the last one carrying the Add's output. Its truth is that output's producer, one of
    the modules whose ops the tool replaced, so a wrong tag on it is shown apart, still wrong."""
    import onnxslim

    from bench import cases

    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], name="/enc/q/MatMul"),
        helper.make_node("Add", ["m", "b"], ["a"], name="/enc/q/Add"),
        helper.make_node("Relu", ["a"], ["y"], name="/enc/act/Relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])],
        [
            numpy_helper.from_array(rng.normal(size=(4, 4)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b"),
        ],
    )
    original = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(original, tmp_path / "model.onnx")
    onnx.save(onnxslim.slim(original), tmp_path / "onnxslim.onnx")
    result = onnx.load(tmp_path / "onnxslim.onnx")
    made = cases.shown_apart(tmp_path / "onnxslim.onnx")[1]
    names = {j: node.name for j, node in enumerate(result.graph.node)}
    assert made and all(names[j] not in {n.name for n in nodes} for j in made)
    relu = next(j for j, node in enumerate(result.graph.node) if node.op_type == "Relu")
    assert relu not in made  # kept by name: its truth is its own
    carried = next(iter(made))
    m = metrics.measure({carried: "enc.other", relu: "enc.x"}, {carried: "enc.q", relu: "enc.act"}, {""}, None, made)
    assert (m.wrong, m.tool_made_count) == (1.0, 1)
    assert metrics.wrong_cell(m) == "100.0% (50.0% tool-made)"
    assert cases.shown_apart(tmp_path / "model.onnx")[1] == set()  # the export itself: nothing made
