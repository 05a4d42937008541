"""`tagger extract`: any module cut out of a real export is a valid, runnable model that reproduces
the full model's own tensors; weights stay external; tags survive; errors are one clear line.

Real exports from the session fixtures (`tests/conftest.py`); every extracted file is read back
from disk and checked by the ONNX checker and onnxruntime, never trusted from the report alone.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tagger import extract, extract_all, tag_proto
from tests.test_real_models import OpenWatch, copy_export

REPO_ROOT = Path(__file__).resolve().parents[1]
CASES = [
    *[(arch, exporter, "none") for arch in ("bert", "vit", "gpt2") for exporter in ("torchscript", "dynamo")],
    ("bert", "torchscript", "onnxslim"),
    ("bert", "dynamo", "onnxslim"),
]


def load(path) -> onnx.ModelProto:
    return onnx.load(path, load_external_data=False)


def props(node: onnx.NodeProto) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


def run_cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "tagger", *map(str, args)], capture_output=True, text=True, env=env, check=False)


def ort_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def spec(info: onnx.ValueInfoProto) -> dict:
    tensor = info.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
    return {"name": info.name, "dtype": TensorProto.DataType.Name(tensor.elem_type).lower(), "shape": dims}


# --------------------------------------------------------------------------------------------
# every module of real exports


@pytest.mark.parametrize("key", CASES, ids="-".join)
def test_every_module_at_depths_2_to_4_passes_the_checker_loads_and_reproduces_the_full_model(key, built_cases, tmp_path):
    case = built_cases[key]
    tried = 0
    for depth in (2, 3, 4):
        result = extract_all(case.path, depth, tmp_path / f"depth{depth}", verify=True)
        assert result.failures == {}
        index = json.loads(Path(result.index).read_text())
        assert [entry["module"] for entry in index["modules"]] == [r.module for r in result.reports]
        for report, entry in zip(result.reports, index["modules"], strict=True):
            path = Path(report.output)
            onnx.checker.check_model(str(path), full_check=True)
            session = ort_session(path)
            assert [i.name for i in session.get_inputs()] == [i["name"] for i in entry["inputs"]]
            assert [o.name for o in session.get_outputs()] == [o["name"] for o in entry["outputs"]]
            model = load(path)
            assert [spec(v) for v in model.graph.input] == entry["inputs"]
            assert [spec(v) for v in model.graph.output] == entry["outputs"]
            assert report.verification is not None and report.verification.passed, f"{report.module}: {report.verification}"
            tried += 1
    assert tried >= 5


@pytest.mark.parametrize("key", [("bert", "dynamo", "none"), ("gpt2", "torchscript", "none")], ids="-".join)
def test_extracted_nodes_are_the_source_nodes_byte_for_byte_tags_included(key, built_cases, tmp_path):
    """graphsurgeon drops node metadata_props; extraction must put every node back verbatim."""
    case = built_cases[key]
    source = load(case.path)
    tag_proto(source)  # what extract does in memory for an untagged file
    by_output = {node.output[0]: node.SerializeToString() for node in source.graph.node}
    result = extract_all(case.path, 4, tmp_path)
    assert result.reports
    for report in result.reports:
        nodes = load(report.output).graph.node
        assert len(nodes) == report.nodes + report.pulled
        assert all(node.SerializeToString() == by_output[node.output[0]] for node in nodes)
        within = [
            n
            for n in nodes
            if props(n)["hierarchy.module"] == report.module or props(n)["hierarchy.module"].startswith(report.module + ".")
        ]
        assert len(within) == report.nodes


def test_boundary_tensors_keep_their_full_model_names_and_types(built_cases, tmp_path):
    case = built_cases[("bert", "torchscript", "none")]  # no value_info at all: types come from inference
    report = extract(case.path, module="m.encoder.layer.1", output=tmp_path / "layer1.onnx")
    full = onnx.shape_inference.infer_shapes(load(case.path), data_prop=True)
    known = {v.name: v.type for v in (*full.graph.value_info, *full.graph.output)}
    model = load(report.output)
    boundary = [*model.graph.input, *model.graph.output]
    assert [v.name for v in boundary] == [
        "/m/encoder/layer.0/output/LayerNorm/LayerNormalization_output_0",
        "/m/Expand_output_0",
        "output",
    ]
    assert [v.type.tensor_type.elem_type for v in boundary] == [TensorProto.FLOAT, TensorProto.BOOL, TensorProto.FLOAT]
    assert all(v.type == known[v.name] for v in boundary)


# --------------------------------------------------------------------------------------------
# auxiliary ops shared by several modules


def test_input_independent_producers_are_pulled_in_so_the_module_needs_no_constant_inputs(built_cases, tmp_path):
    case = built_cases[("bert", "torchscript", "none")]
    module = "m.embeddings.token_type_embeddings"  # its ids are a buffer: a constant chain outside the module
    pulled = extract(case.path, module=module, output=tmp_path / "pulled.onnx", verify=True)
    kept_out = extract(case.path, module=module, output=tmp_path / "inputs.onnx", pull_producers=False, verify=True)
    assert pulled.pulled > 0 and pulled.inputs == []
    assert kept_out.pulled == 0 and kept_out.inputs
    assert pulled.verification.passed and kept_out.verification.passed
    assert ort_session(tmp_path / "pulled.onnx").run(None, {})[0].shape == (1, 8, 32)


def test_a_shared_mask_computed_by_the_parent_stays_an_input(built_cases, tmp_path):
    case = built_cases[("bert", "torchscript", "none")]
    layers = [extract(case.path, module=f"m.encoder.layer.{i}", output=tmp_path / f"l{i}.onnx") for i in (0, 1)]
    masks = [[spec.name for spec in r.inputs if "Expand" in spec.name] for r in layers]
    assert masks[0] == masks[1] and len(masks[0]) == 1  # the one mask both layers read, by its full-model name


# --------------------------------------------------------------------------------------------
# external data


def test_external_weights_stay_external_and_the_data_file_is_never_opened(built_cases, tmp_path):
    source = copy_export(built_cases[("bert", "dynamo", "none")], tmp_path / "model")
    data = source.with_name("model.onnx.data")
    watch = OpenWatch(data)
    try:
        report = extract(source, module="m.encoder.layer.0")  # default output beside the input: shares the data file
        assert watch.events() == 0
    finally:
        watch.close()
    output = Path(report.output)
    assert sorted(os.listdir(source.parent)) == sorted(["model.onnx", "model.onnx.data", output.name])
    entries = {t.name: list(t.external_data) for t in load(source).graph.initializer}
    external = [t for t in load(output).graph.initializer if t.data_location == TensorProto.EXTERNAL]
    assert external and report.external_data == ["model.onnx.data"]
    assert all(not t.raw_data and list(t.external_data) == entries[t.name] for t in external)
    weight_bytes = sum(int(e.value) for t in external for e in t.external_data if e.key == "length")
    assert output.stat().st_size < source.stat().st_size  # a slice of the structure, no weights in it
    payload, blob = output.read_bytes(), data.read_bytes()
    for t in external:
        where = {e.key: int(e.value) for e in t.external_data if e.key in ("offset", "length")}
        assert blob[where.get("offset", 0) : where.get("offset", 0) + where["length"]] not in payload
    assert weight_bytes > 0


def test_extraction_into_another_directory_brings_the_data_file_and_runs_without_the_source(built_cases, tmp_path):
    source = copy_export(built_cases[("bert", "dynamo", "none")], tmp_path / "in")
    target = tmp_path / "out"
    target.mkdir()
    report = extract(source, module="m.encoder.layer.1", output=target / "layer1.onnx", verify=True)
    assert report.verification.passed
    assert sorted(os.listdir(target)) == ["layer1.onnx", "model.onnx.data"]
    shutil.rmtree(source.parent)
    session = ort_session(target / "layer1.onnx")
    feeds = {
        i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32 if "float" in i.type else bool)
        for i in session.get_inputs()
    }
    assert session.run(None, feeds)[0].shape == (1, 8, 32)


# --------------------------------------------------------------------------------------------
# tag globs, control flow, functions


def test_tag_glob_selects_the_matching_nodes_of_every_layer(built_cases, tmp_path):
    case = built_cases[("bert", "dynamo", "none")]
    pattern = "*/BertSelfOutput*"
    report = extract(case.path, tag=pattern, output=tmp_path / "self_output.onnx", verify=True)
    tags = [props(n)["hierarchy.tag"] for n in load(report.output).graph.node]
    matching = [t for t in tags if fnmatch.fnmatchcase(t, pattern)]
    assert len(matching) == report.nodes > 0
    assert any("BertLayer.0" in t for t in matching) and any("BertLayer.1" in t for t in matching)
    assert report.verification.passed


def _control_flow_model() -> onnx.ModelProto:
    """`block`'s If reads `h` only from inside its bodies (an outer-scope reference)."""
    then_body = helper.make_graph([helper.make_node("Neg", ["h"], ["a"], name="/block/then/Neg")], "then", [],
                                  [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4])])  # fmt: skip
    else_body = helper.make_graph([helper.make_node("Abs", ["h"], ["b"], name="/block/else/Abs")], "else", [],
                                  [helper.make_tensor_value_info("b", TensorProto.FLOAT, [4])])  # fmt: skip
    flag = numpy_helper.from_array(np.array(True), "flag_value")
    nodes = [
        helper.make_node("Relu", ["x"], ["h"], name="/pre/Relu"),
        helper.make_node("Constant", [], ["flag"], name="/root/Constant", value=flag),
        helper.make_node("If", ["flag"], ["y"], name="/block/If", then_branch=then_body, else_branch=else_body),
    ]
    graph = helper.make_graph(nodes, "cf", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_outer_scope_reads_inside_bodies_become_inputs_and_bodies_keep_their_tags(tmp_path):
    source = tmp_path / "cf.onnx"
    onnx.save(_control_flow_model(), source)
    report = extract(source, module="block", output=tmp_path / "block.onnx", verify=True)
    assert [s.name for s in report.inputs] == ["h"] and [s.name for s in report.outputs] == ["y"]
    assert report.pulled == 1  # the Constant condition
    if_node = next(n for n in load(report.output).graph.node if n.op_type == "If")
    body_tags = [props(n).get("hierarchy.module") for a in if_node.attribute for n in a.g.node]
    assert sorted(body_tags) == ["block.else", "block.then"]
    assert report.verification.passed


def test_local_functions_and_their_domain_come_along(tmp_path):
    from tests.graphs import function_model

    source = tmp_path / "f.onnx"
    onnx.save(function_model(), source)
    report = extract(source, module="encoder.layer.1", output=tmp_path / "layer1.onnx", verify=True)
    model = load(report.output)
    assert [f.name for f in model.functions] == ["Block"]
    assert "local" in {o.domain for o in model.opset_import}
    assert [s.name for s in report.inputs] == ["h"] and report.verification.passed


def test_an_onnxruntime_op_in_the_default_domain_is_extracted_and_verified(tmp_path):
    """onnxruntime's transformer optimizer writes `SimplifiedLayerNormalization` (an op of its own)
    in the default domain: onnxruntime runs it, no ONNX schema describes it, so the checker refuses
    any model holding one. The extracted module is checked with that op set aside, and runs."""
    nodes = [
        helper.make_node("Add", ["x", "m.a.bias"], ["a"], name="/m/a/Add"),
        helper.make_node("SimplifiedLayerNormalization", ["a", "m.norm.weight"], ["n"], name="/m/norm/Norm", axis=-1, epsilon=1e-6),
        helper.make_node("Add", ["n", "m.b.bias"], ["y"], name="/m/b/Add"),
    ]
    weights = [numpy_helper.from_array(np.full((4,), v, dtype=np.float32), name) for v, name in
               ((0.1, "m.a.bias"), (1.5, "m.norm.weight"), (0.2, "m.b.bias"))]  # fmt: skip
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], weights,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    tag_proto(model)
    source = tmp_path / "ort.onnx"
    onnx.save(model, source)
    report = extract(source, module="m.norm", output=tmp_path / "norm.onnx", verify=True)
    assert [n.op_type for n in load(report.output).graph.node] == ["SimplifiedLayerNormalization"]
    assert report.verification.passed


# --------------------------------------------------------------------------------------------
# CLI


@pytest.mark.parametrize(
    "module, nearby", [("m.encoder.layer.9", "m.encoder.layer.0"), (0, "m.encoder.layer.0")], ids=["typo", "int"]
)
def test_unknown_module_is_one_error_line_naming_nearby_modules_and_exit_2(module, nearby, built_cases):
    case = built_cases[("bert", "dynamo", "none")]
    before = sorted(os.listdir(case.path.parent))
    result = run_cli("extract", case.path, "--module", module)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"no node belongs to module '{module}'" in result.stderr and nearby in result.stderr
    assert sorted(os.listdir(case.path.parent)) == before


def test_cli_extract_all_writes_one_model_per_module_and_an_index(built_cases, tmp_path):
    case = built_cases[("gpt2", "dynamo", "none")]
    result = run_cli("extract", case.path, "--all", "--depth", 3, "--out_dir", tmp_path / "h", "--verify")
    assert result.returncode == 0, result.stderr
    index = json.loads((tmp_path / "h" / "index.json").read_text())
    files = sorted(entry["file"] for entry in index["modules"])
    assert files == ["m.h.0.onnx", "m.h.1.onnx"] and index["failures"] == {}
    assert all(entry["verification"]["passed"] for entry in index["modules"])
    assert sorted(os.listdir(tmp_path / "h")) == ["index.json", *files, "model.onnx.data"]


def test_cli_rejects_module_and_tag_together(built_cases):
    result = run_cli("extract", built_cases[("bert", "dynamo", "none")].path, "--module", "m", "--tag", "*")
    assert result.returncode == 2 and "exactly one of --module PATH or --tag PATTERN" in result.stderr


def test_an_extract_that_fails_the_checker_leaves_nothing_behind(tmp_path):
    """The checker runs on the written temporary file before it takes the output's name: a
    failing model (here a node carries an attribute its operator does not have, which the
    source model had already) is refused and neither the output nor a temporary file remains."""
    from tagger.errors import TaggerError
    from tests.graphs import chain_model

    model = chain_model(["/enc/a/Relu", "/enc/b/Relu", "/enc/c/Relu"])
    model.graph.node[1].attribute.append(helper.make_attribute("not_a_relu_attribute", 1))
    source = tmp_path / "m.onnx"
    onnx.save(model, source)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(TaggerError, match="fails the ONNX checker"):
        extract(source, module="enc.b", output=tmp_path / "b.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("module", ["m.encoder.layer.0.intermediate", "m.encoder.layer.0"])
def test_the_summary_counts_chosen_nodes_inside_and_at_the_boundary(module, built_cases, tmp_path):
    from tagger.commands.nodetags import model_tags

    path = built_cases[("bert", "dynamo", "strip_all")].path
    result = extract(path, module=module, output=tmp_path / "cut.onnx")
    full = load(path)
    nodes = model_tags(full, base_dir=path.parent).nodes[: len(full.graph.node)]  # the main graph comes first
    inside = {i for i, n in enumerate(nodes) if n.module == module or n.module.startswith(module + ".")}
    inputs, outputs = {t.name for t in result.inputs}, {t.name for t in result.outputs}
    around = {
        i for i, node in enumerate(full.graph.node) if i not in inside and (inputs & set(node.output) or outputs & set(node.input))
    }
    assert result.chosen == sum(nodes[i].kind == "chosen" for i in inside)
    assert result.boundary_chosen == sum(nodes[i].kind == "chosen" for i in around)
    assert result.chosen + result.boundary_chosen > 0
    assert f"note: {result.chosen} of its nodes and {result.boundary_chosen} at its boundary" in result.summary()


def test_an_export_with_scoped_names_extracts_without_a_note_on_choices(built_cases, tmp_path):
    result = extract(built_cases[("bert", "torchscript", "none")].path, module="m.encoder.layer.0", output=tmp_path / "l.onnx")
    assert (result.chosen, result.boundary_chosen) == (0, 0) and "note:" not in result.summary()


def test_an_untagged_model_is_tagged_once_for_its_cut_and_its_report(built_cases, tmp_path, monkeypatch):
    """The kinds the report counts come from the tagging the cut used: deciding them again tagged
    the whole model twice (twice the time and the peak memory of a 100k-node graph)."""
    import tagger.api
    import tagger.reporting.certainty
    from tagger.pipeline import tagging

    calls = []

    def counted(*args, **kwargs):
        calls.append(args[0])
        return tagging.tag_model(*args, **kwargs)

    monkeypatch.setattr(tagger.api, "tag_model", counted)
    monkeypatch.setattr(tagger.reporting.certainty, "tag_model", counted)
    path = built_cases[("bert", "dynamo", "strip_all")].path
    result = extract(path, module="m.encoder.layer.0", output=tmp_path / "cut.onnx")
    assert result.chosen + result.boundary_chosen > 0
    assert len(calls) == 1
