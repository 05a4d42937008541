"""Unusual but valid models are tagged completely and losslessly: names that are empty, shared,
huge or not ASCII; nested control flow; functions calling functions; other converters.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.fuzz import every_node
from tagger import report, retag, tag_proto
from tests.graphs import chain_model, tags_of

KEYS = ("hierarchy.module", "hierarchy.tag", "hierarchy.source")


def _stripped(model: onnx.ModelProto) -> bytes:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for node in every_node(copy):
        for position in reversed(range(len(node.metadata_props))):
            if node.metadata_props[position].key in KEYS:
                del node.metadata_props[position]
    return copy.SerializeToString()


def retag_file(model: onnx.ModelProto, directory: Path) -> tuple[onnx.ModelProto, object]:
    """Retag `model` through files; assert complete, lossless and idempotent; return the output."""
    source, output, again = directory / "in.onnx", directory / "out.onnx", directory / "again.onnx"
    source.write_bytes(model.SerializeToString())
    summary = retag(source, output)
    retag(output, again)
    assert again.read_bytes() == output.read_bytes(), "a second retag changed bytes"
    tagged = onnx.load(output)
    nodes = every_node(tagged)
    assert summary.nodes == len(nodes)
    for node in nodes:
        assert sorted(p.key for p in node.metadata_props if p.key in KEYS) == sorted(KEYS), node
    assert _stripped(tagged) == _stripped(model), "output without the three keys differs from the input"
    return tagged, summary


def _props(node: onnx.NodeProto) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


# --------------------------------------------------------------------------------------------
# names


@pytest.mark.parametrize("rename", ["empty", "all-the-same"])
def test_tags_land_by_position_when_names_are_empty_or_shared(rename, built_cases):
    """A dynamo export's tags come from metadata; without distinct names every node keeps its tag."""
    source = onnx.load(built_cases[("bert", "dynamo", "none")].path, load_external_data=False)
    expected = onnx.ModelProto()
    expected.CopyFrom(source)
    tag_proto(expected)
    for node in source.graph.node:
        node.name = "" if rename == "empty" else "node"
    tag_proto(source)
    assert tags_of(source) == tags_of(expected)
    assert len({t["hierarchy.module"] for t in tags_of(source)}) > 10


def _long(kind: str) -> onnx.ModelProto:
    """A model with one 100,000-character name of the given kind (single scope or 50,000 levels)."""
    long = "x" * 100_000
    deep = "/a" * 50_000
    if kind == "node-name":
        return chain_model([f"/enc/{long}/Relu", "", "/enc/b/Relu"])
    if kind == "deep-node-name":
        return chain_model([f"{deep}/Relu", "", "/enc/b/Relu"])
    if kind == "tensor-name":
        model = chain_model(["", "/enc/b/Relu"])
        model.graph.node[0].output[0] = model.graph.node[1].input[0] = f"/enc/{long}/Relu_output_0"
        return model
    if kind == "deep-parameter":
        return chain_model(["", "", ""], {1: "a." * 50_000 + "weight"})
    if kind == "deep-metadata":
        model = chain_model(["", "/enc/b/Relu"])
        model.graph.node[0].metadata_props.add(key="pkg.torch.onnx.name_scopes", value=repr(["", ".".join(["a"] * 50_000), "relu"]))
        model.graph.node[0].metadata_props.add(key="pkg.torch.onnx.class_hierarchy", value=repr(["M", "A", "aten.relu.default"]))
        return model
    if kind == "deep-earlier-tag":
        model = chain_model(["", "/enc/b/Relu"])
        model.graph.node[0].metadata_props.add(key="hierarchy.module", value=".".join(["a"] * 50_000))
        return model
    raise ValueError(kind)


@pytest.mark.parametrize(
    "kind", ["node-name", "deep-node-name", "tensor-name", "deep-parameter", "deep-metadata", "deep-earlier-tag"]
)
def test_hundred_thousand_character_names_are_tagged_in_linear_time(kind, tmp_path):
    model = _long(kind)
    started = time.perf_counter()
    tagged, summary = retag_file(model, tmp_path)
    summary.to_text(), summary.to_markdown(), summary.tree()
    assert time.perf_counter() - started < 5.0  # quadratic handling of 50,000 levels takes minutes
    if kind == "node-name":
        assert _props(tagged.graph.node[0])["hierarchy.module"] == f"enc.{'x' * 100_000}"


def test_non_ascii_names_keep_their_characters(tmp_path):
    model = chain_model(["/编码器/层.0/注意力/Relu", "", "/🙂/😀.1/Relu"])
    tagged, summary = retag_file(model, tmp_path)
    tags = [_props(n) for n in tagged.graph.node]
    assert [tags[0]["hierarchy.module"], tags[2]["hierarchy.module"]] == ["编码器.层.0.注意力", "🙂.😀.1"]
    assert tags[0]["hierarchy.tag"] == "/编码器/层.0/注意力"
    assert "注意力" in summary.tree() and "😀.1" not in summary.to_text().replace("😀", "")  # printed, not escaped
    assert "😀" in summary.tree()


# --------------------------------------------------------------------------------------------
# control flow and functions


def _value(name: str, dtype: int = TensorProto.FLOAT, shape=(4,)) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, list(shape))


def loop_if_scan_model() -> onnx.ModelProto:
    """A Loop whose body holds an If (two levels of bodies), then a Scan; runs in onnxruntime."""
    gate = helper.make_node("Relu", ["v_in"], ["a"], name="/enc/loop/gate/Relu")
    then_body = helper.make_graph([gate], "then", [], [_value("a")])
    else_body = helper.make_graph([helper.make_node("Neg", ["v_in"], ["b"], name="")], "else", [], [_value("b")])
    loop_body = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["v_in"], ["s"], name="", keepdims=0),
            helper.make_node("Greater", ["s", "zero"], ["c"], name=""),
            helper.make_node("If", ["c"], ["v_out"], name="", then_branch=then_body, else_branch=else_body),
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name=""),
        ],
        "loop_body",
        [_value("iter", TensorProto.INT64, ()), _value("cond_in", TensorProto.BOOL, ()), _value("v_in")],
        [_value("cond_out", TensorProto.BOOL, ()), _value("v_out")],
    )
    scan_body = helper.make_graph(
        [
            helper.make_node("Add", ["state", "row"], ["new_state"], name="/enc/scan/Add"),
            helper.make_node("Identity", ["new_state"], ["scan_out"], name=""),
        ],
        "scan_body",
        [_value("state"), _value("row")],
        [_value("new_state"), _value("scan_out")],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Loop", ["trips", "true", "x"], ["h"], name="/enc/loop/Loop", body=loop_body),
            helper.make_node("Scan", ["h", "seq"], ["y", "rows"], name="", body=scan_body, num_scan_inputs=1),
        ],
        "control_flow",
        [_value("x"), _value("seq", shape=(3, 4))],
        [_value("y"), _value("rows", shape=(3, 4))],
        [
            numpy_helper.from_array(np.array(3, np.int64), "trips"),
            numpy_helper.from_array(np.array(True), "true"),
            numpy_helper.from_array(np.float32(0.0), "zero"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(path: Path) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"x": np.linspace(-1, 1, 4, dtype=np.float32), "seq": np.ones((3, 4), np.float32)}
    return session.run(None, feeds)


def test_nested_loop_if_and_scan_bodies_are_tagged_from_names_or_their_owners(tmp_path):
    model = loop_if_scan_model()
    onnx.checker.check_model(model, full_check=True)
    tagged, summary = retag_file(model, tmp_path)
    onnx.checker.check_model(tagged, full_check=True)
    for expected, actual in zip(_run(tmp_path / "in.onnx"), _run(tmp_path / "out.onnx"), strict=True):
        assert np.array_equal(expected, actual)
    tags = {(n.op_type, n.name): _props(n) for n in every_node(tagged)}
    assert tags[("Relu", "/enc/loop/gate/Relu")]["hierarchy.module"] == "enc.loop.gate"
    assert tags[("Neg", "")]["hierarchy.module"] == "enc.loop"  # two bodies deep, from the Loop's name
    assert tags[("Neg", "")]["hierarchy.source"] == "subgraph"
    assert tags[("Add", "/enc/scan/Add")]["hierarchy.module"] == "enc.scan"
    assert summary.nodes == 10 and summary.graphs == 5 and summary.fallback == 0


def _functions_model(callee_first: bool) -> onnx.ModelProto:
    """`Outer` calls `Inner`; the main graph calls `Outer` from two scoped nodes."""
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    inner = helper.make_function("local", "Inner", ["i"], ["o"], [helper.make_node("Neg", ["i"], ["o"])], opsets[:1])
    outer = helper.make_function(
        "local",
        "Outer",
        ["i"],
        ["o"],
        [helper.make_node("Inner", ["i"], ["h"], domain="local"), helper.make_node("Relu", ["h"], ["o"])],
        opsets,
    )
    graph = helper.make_graph(
        [
            helper.make_node("Outer", ["x"], ["h"], name="/encoder/layer.0/Outer", domain="local"),
            helper.make_node("Outer", ["h"], ["y"], name="/encoder/layer.1/Outer", domain="local"),
        ],
        "functions",
        [_value("x")],
        [_value("y")],
    )
    functions = [inner, outer] if callee_first else [outer, inner]
    return helper.make_model(graph, opset_imports=opsets, functions=functions)


def _function_modules(tagged: onnx.ModelProto) -> dict[str, set[str]]:
    return {f.name: {_props(n)["hierarchy.module"] for n in f.node} for f in tagged.functions}


def test_a_function_calling_a_function_takes_its_callers_module(tmp_path):
    model = _functions_model(callee_first=False)
    onnx.checker.check_model(model, full_check=True)
    tagged, _ = retag_file(model, tmp_path)
    onnx.checker.check_model(tagged, full_check=True)
    assert _function_modules(tagged) == {"Outer": {"encoder.layer"}, "Inner": {"encoder.layer"}}


def test_a_function_listed_before_its_caller_takes_the_callers_module(tmp_path):
    tagged, _ = retag_file(_functions_model(callee_first=True), tmp_path)
    assert _function_modules(tagged) == {"Outer": {"encoder.layer"}, "Inner": {"encoder.layer"}}


# --------------------------------------------------------------------------------------------
# other converters, odd but valid graphs


def test_skl2onnx_pipeline_is_tagged_losslessly_and_stays_valid(tmp_path):
    from skl2onnx import to_onnx
    from sklearn.decomposition import PCA
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    pipeline = make_pipeline(StandardScaler(), PCA(2), RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0))
    model = to_onnx(pipeline.fit(x, y), x[:1], target_opset=17)
    tagged, summary = retag_file(model, tmp_path)
    onnx.checker.check_model(tagged, full_check=True)
    assert summary.nodes == len(every_node(tagged)) and summary.fallback == summary.nodes
    assert any("no scope evidence" in note for note in summary.notes)


def test_a_graph_without_nodes_is_written_unchanged_and_says_so(tmp_path):
    graph = helper.make_graph([], "empty", [_value("x")], [_value("x")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    tagged, summary = retag_file(model, tmp_path)
    assert tagged.SerializeToString() == model.SerializeToString()
    assert summary.nodes == 0 and summary.notes == ["the model has no nodes: there is nothing to tag"]
    assert "no nodes" in report(tmp_path / "in.onnx").summary()


def test_an_op_of_an_unknown_domain_is_tagged_like_any_other(tmp_path):
    model = chain_model(["/enc/a/Relu", "", "/enc/b/Relu"])
    model.graph.node[1].op_type, model.graph.node[1].domain = "Mystery", "com.example.unknown"
    tagged, summary = retag_file(model, tmp_path)
    assert [_props(n)["hierarchy.module"] for n in tagged.graph.node] == ["enc.a", "enc", "enc.b"]
    assert summary.fallback == 0


def test_a_dangling_input_is_tagged_and_noted(tmp_path):
    model = chain_model(["/enc/a/Relu", "", "/enc/b/Relu"])
    model.graph.node[1].input[0] = "ghost"
    tagged, summary = retag_file(model, tmp_path)
    assert _props(tagged.graph.node[1])["hierarchy.module"] == "enc"
    assert any("'ghost'" in note and "nothing produces" in note for note in summary.notes)


def test_a_body_reading_its_outer_scope_is_not_dangling(tmp_path):
    _, summary = retag_file(loop_if_scan_model(), tmp_path)  # the If branches read the Loop body's v_in
    assert not any("nothing produces" in note for note in summary.notes)


def test_a_graph_attribute_of_a_custom_domain_op_is_indexed_and_tagged(tmp_path):
    """Outside the standard domain any op may own bodies (onnxruntime's contrib ops do)."""
    body = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["b"], name="/block/inner/Relu")],
        "body",
        [],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [4])],
    )
    node = helper.make_node("Custom", ["x"], ["y"], name="/block/Custom", domain="my.domain", body=body)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.domain", 1)])
    report = tag_proto(model)
    inner = model.graph.node[0].attribute[0].g.node[0]
    assert report.nodes == 2 and report.graphs == 2
    assert {p.key: p.value for p in inner.metadata_props}["hierarchy.module"] == "block.inner"
