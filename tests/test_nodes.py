"""`tagger nodes`: a module's node names, given to onnxruntime's real quantizer and checked after a retag.

The round trip on real exports: list a module's MatMuls, `quantize_dynamic(...,
nodes_to_exclude=that list)`, retag the quantized model, and the module holds no integer op
while another layer's MatMuls are quantized.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tagger import retag
from tagger.cli import main
from tagger.model.keys import tags_of
from tagger.model.paths import is_within
from tests.conftest import REPO_ROOT
from tests.graphs import chain_model, function_model, if_model

MODULE = "m.encoder.layer.0.attention"
INTEGER_OPS = re.compile(r"DynamicQuantizeLinear|MatMulInteger|ConvInteger|QLinear\w+|MatMulIntegerToFloat|QGemm|QAttention")


def run(argv, capsys):
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def file_tags(path) -> list[tuple[str, str, str]]:
    """(name, op type, hierarchy.module) of every main-graph node, read from the file's own entries."""
    return [(node.name, node.op_type, module) for node, module in _tagged_nodes(onnx.load(path, load_external_data=False))]


def _tagged_nodes(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, str]]:
    found = []
    for node in model.graph.node:
        entry = tags_of({p.key: p.value for p in node.metadata_props})
        assert entry is not None, node.name
        found.append((node, entry[0]))
    return found


def quantized_and_retagged(case, excluded, tmp_path, reference=False):
    from onnxruntime.quantization import quantize_dynamic

    quantized = tmp_path / "q.onnx"
    quantize_dynamic(case.path, quantized, nodes_to_exclude=excluded)
    tagged = tmp_path / "q.tagged.onnx"
    retag(quantized, tagged, reference=case.path if reference else None)
    return _tagged_nodes(onnx.load(tagged, load_external_data=False))


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_listed_matmuls_are_exactly_the_modules_and_stay_float_after_quantize_dynamic(exporter, built_cases, tmp_path, capsys):
    case = built_cases[("bert", exporter, "none")]
    code, out, err = run(["nodes", case.path, "--module", MODULE, "--op_types", "MatMul"], capsys)
    assert (code, err) == (0, "")
    listed = out.splitlines()

    truth = file_tags(retag(case.path, tmp_path / "tagged.onnx").output)
    expected = [name for name, op, module in truth if op == "MatMul" and is_within(module, MODULE)]
    assert listed == expected and len(listed) >= 4  # q, k, v, attention output (dynamo may fuse the scores)
    if exporter == "dynamo":
        assert all(re.fullmatch(r"node_\w+", name) for name in listed)  # names say nothing of the module: the list still works

    after = quantized_and_retagged(case, listed, tmp_path, reference=exporter == "dynamo")
    inside = [node for node, module in after if is_within(module, MODULE)]
    assert not [node.op_type for node in inside if node.op_type != "DynamicQuantizeLinear" and INTEGER_OPS.fullmatch(node.op_type)]
    assert sorted(node.name for node in inside if node.op_type == "MatMul") == sorted(listed)  # every listed MatMul kept
    # a DynamicQuantizeLinear tagged inside quantizes a tensor the module computes, for readers outside it only
    readers: dict[str, list[str]] = {}
    for node, module in after:
        for name in node.input:
            readers.setdefault(name, []).append(module)
    for node in inside:
        if node.op_type == "DynamicQuantizeLinear":
            assert not any(is_within(module, MODULE) for name in node.output for module in readers.get(name, [])), node.name
    other = [node.op_type for node, module in after if is_within(module, "m.encoder.layer.1.attention")]
    assert other.count("MatMulInteger") >= 3  # q, k, v of layer 1 quantized


def test_json_lists_each_node_with_its_op_type_tag_and_kind(built_cases, capsys):
    case = built_cases[("bert", "torchscript", "none")]
    code, out, _ = run(["nodes", case.path, "--tag", "*/layer.1/attention/*", "--json"], capsys)
    nodes = json.loads(out)
    assert code == 0 and nodes
    assert {tuple(sorted(node)) for node in nodes} == {("graph", "kind", "module", "name", "op_type", "tag")}
    assert all(is_within(node["module"], "m.encoder.layer.1.attention") and node["graph"] == "main" for node in nodes)
    assert {node["kind"] for node in nodes} == {"direct"}
    _, text, _ = run(["nodes", case.path, "--module", "m.encoder.layer.1.attention"], capsys)
    assert text.splitlines() == [node["name"] for node in nodes]  # the glob on tags selects what the path does


@pytest.mark.parametrize(
    "module, close", [("m.encoder.layer.0.attn", "m.encoder.layer.0.attention"), ("m.encodr", "m.encoder")], ids=["sibling", "typo"]
)
def test_a_module_the_model_does_not_have_exits_2_with_a_close_one(module, close, built_cases, capsys):
    code, out, err = run(["nodes", built_cases[("bert", "torchscript", "none")].path, "--module", module], capsys)
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert err.startswith(f"tagger: error: no node belongs to module '{module}'; modules near it: ") and close in err


@pytest.mark.parametrize(
    "op_types, code, line",
    [
        (
            "Matmul",
            2,
            "tagger: error: no node of m.onnx has op type 'Matmul', and ONNX defines no such operator; did you mean MatMul?",
        ),  # noqa: E501
        ("MatMul,Gemm,Conv", 0, ""),  # the quantizers' usual set fits a model without Gemm or Conv
        ("Conv", 0, "tagger: note: no listable node of module m.encoder has op type Conv"),
        ("1", 2, "tagger: error: --op_types needs names separated by commas (MatMul,Gemm), got 1"),
    ],
)
def test_op_types(op_types, code, line, tmp_path, capsys):
    path = tmp_path / "m.onnx"
    shutil.copy(REPO_ROOT / "data" / "bert-tiny-shim.onnx", path)
    got, out, err = run(["nodes", path, "--module", "m.encoder", "--op_types", op_types], capsys)
    assert (got, err) == (code, line + "\n" if line else "")
    assert bool(out) == (op_types == "MatMul,Gemm,Conv")


def test_unnamed_nodes_and_bodies_are_one_line_each_and_exit_0(tmp_path, capsys):
    path = tmp_path / "if.onnx"
    onnx.save(if_model(), path)
    code, out, err = run(["nodes", path, "--module", ""], capsys)
    assert code == 0 and out == "/block/ReduceSum\n/block/then/Relu\n"  # main graph, then the If's body
    assert err.splitlines() == [
        "tagger: warning: 4 nodes have no name and are not listed (module (root)): the quantizers match nodes by name, "
        "so it takes names to exclude or choose them",
        "tagger: note: 1 listed node lies in If/Loop/Scan bodies: quantize_dynamic (QOperator) quantizes bodies, and "
        "excludes these names there, only with extra_options={'EnableSubgraph': True}; QDQ never quantizes bodies",
    ]
    code, out, _ = run(["nodes", path, "--module", "block", "--json"], capsys)
    assert [node["graph"] for node in json.loads(out)] == ["main", "If #3/then_branch"]


def test_function_nodes_are_not_listed(tmp_path, capsys):
    path = tmp_path / "f.onnx"
    onnx.save(function_model(), path)
    code, out, err = run(["nodes", path, "--module", "encoder"], capsys)
    assert code == 0 and out == "/encoder/layer.0/Block\n/encoder/layer.1/Block\n"  # the call sites, not the bodies
    assert err == "tagger: note: 2 nodes lie inside model-local functions, not listed (module encoder): " + (
        "the quantizers never quantize inside functions\n"
    )


def test_a_body_node_listed_is_excluded_by_enable_subgraph(tmp_path, capsys):
    """What the bodies note says, on onnxruntime's quantizer: with EnableSubgraph a listed body node stays float."""
    from onnxruntime.quantization import quantize_dynamic

    def branch(name):
        node = helper.make_node("MatMul", ["x", "W"], [f"{name}_out"], name=f"/a/{name}/MatMul")
        return helper.make_graph([node], name, [], [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [2, 8])])

    weights = [numpy_helper.from_array(np.ones((8, 8), np.float32), "W"), numpy_helper.from_array(np.float32(0), "zero")]
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], name="/sum", keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["c"], name="/a/Greater"),
        helper.make_node("If", ["c"], ["y"], name="/a/If", then_branch=branch("then"), else_branch=branch("else")),
    ]
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 8]) for n in "xy")
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], weights), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "if.onnx"
    onnx.save(model, path)

    code, out, _ = run(["nodes", path, "--module", "a.then"], capsys)
    assert (code, out) == (0, "/a/then/MatMul\n")
    quantize_dynamic(path, tmp_path / "q.onnx", nodes_to_exclude=out.split(), extra_options={"EnableSubgraph": True})
    if_node = onnx.load(tmp_path / "q.onnx").graph.node[-1]
    bodies = {attribute.name: [node.op_type for node in attribute.g.node] for attribute in if_node.attribute}
    assert "MatMul" in bodies["then_branch"] and "MatMulInteger" in bodies["else_branch"]


def test_chosen_tags_in_the_listing_are_one_warning(capsys):
    code, out, err = run(["nodes", REPO_ROOT / "data" / "bert-tiny.onnx", "--module", "m.encoder.layer.0"], capsys)
    assert code == 0 and len(out.splitlines()) == 36
    assert err.count("\n") == 1 and err.startswith("tagger: warning: 2 of the 36 listed nodes are in module m.encoder.layer.0")
    assert "--reference ORIG.onnx or --modules FILE" in err


def test_names_shared_outside_and_names_with_control_characters(tmp_path, capsys):
    model = chain_model(["/enc/a/Relu", "/enc/a/x\x1b[31m", "/enc/a/Relu", "/enc/a/Relu"])  # names need not be unique
    model.graph.node[2].metadata_props.add(key="pkg.torch.onnx.name_scopes", value=repr(["", "dec", "relu"]))  # metadata: in dec
    path = tmp_path / "c.onnx"
    onnx.save(model, path)
    code, out, err = run(["nodes", path, "--module", "enc.a"], capsys)
    assert code == 0 and out == "/enc/a/Relu\n"
    lines = err.splitlines()
    assert lines[0] == "tagger: warning: 1 name holds control characters, not printed (escaped, they would match nothing): " + (
        "--json lists them exactly"
    )
    assert lines[1].startswith("tagger: warning: 1 listed name also names nodes outside module enc.a (first: /enc/a/Relu)")
    _, out, _ = run(["nodes", path, "--module", "enc.a", "--json"], capsys)
    assert "/enc/a/x\x1b[31m" in [node["name"] for node in json.loads(out)]
