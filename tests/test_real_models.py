"""The tagger on real exports and real tools, and on models that never saw PyTorch.

Tiny transformers models exported with both torch exporters and degraded by real tools
(`bench.cases`, built once per session by `tests/conftest.py`): retag must be lossless, complete,
idempotent, valid for the ONNX checker, invisible to onnxruntime, safe with external data, and
exact on undegraded exports. No mocks: every check reads the files the tagger wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench import cases
from tagger import report, retag
from tests.graphs import chain_model, function_model, if_model
from tests.guards import OpenWatch

OWNED_KEYS = ("hierarchy.module", "hierarchy.tag", "hierarchy.source")
VALID_SOURCES = frozenset({"tag", "metadata", "name", "tensor", "initializer", "function", "subgraph", "inherited", "fallback"})
REPO_ROOT = Path(__file__).resolve().parents[1]
DYNAMO_ARCHS = [arch for arch in cases.ARCHS if cases.supported(arch, "dynamo", "none")]


# --------------------------------------------------------------------------------------------
# helpers


def load(path: Path) -> onnx.ModelProto:
    """Structure only: external weights stay where they are."""
    return onnx.load(path, load_external_data=False)


def _graph_nodes(nodes):
    for node in nodes:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _graph_nodes(attribute.g.node)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for body in attribute.graphs:
                    yield from _graph_nodes(body.node)


def every_node(model: onnx.ModelProto):
    """Main-graph nodes, nodes of nested subgraphs (If/Loop/Scan bodies) and of local functions."""
    yield from _graph_nodes(model.graph.node)
    for function in model.functions:
        yield from _graph_nodes(function.node)


def props(node: onnx.NodeProto) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


def strip_owned_keys(model: onnx.ModelProto) -> None:
    """Remove the tagger's three keys from every node, keeping every other entry in order."""
    for node in every_node(model):
        kept = [(p.key, p.value) for p in node.metadata_props if p.key not in OWNED_KEYS]
        del node.metadata_props[:]
        for key, value in kept:
            node.metadata_props.add(key=key, value=value)


def external_locations(model: onnx.ModelProto) -> set[str]:
    return {
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }


def run_ort(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run a model from its path (so onnxruntime resolves external data relative to it)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def assert_bit_identical(expected: list[np.ndarray], actual: list[np.ndarray]) -> None:
    assert len(actual) == len(expected)
    for i, (want, got) in enumerate(zip(expected, actual, strict=True)):
        assert got.dtype == want.dtype and got.shape == want.shape, f"output {i}"
        assert np.array_equal(got, want), f"output {i} differs"


def run_cli(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "tagger", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, check=False
    )


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file below `directory` (relative path -> bytes)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def copy_export(case: cases.Case, directory: Path) -> Path:
    """Copy a dynamo export (model.onnx + its external data file, nothing else) into `directory`."""
    locations = external_locations(load(case.path))
    assert locations == {"model.onnx.data"}, f"expected the default dynamo external data file, got {locations}"
    directory.mkdir(parents=True)
    for name in (case.path.name, *locations):
        shutil.copy2(case.path.parent / name, directory / name)
    return directory / case.path.name


# --------------------------------------------------------------------------------------------
# every case: lossless, complete, idempotent, valid, numerically inert


def test_retag_is_lossless(case, tagged):
    before = load(case.path)
    after = load(tagged.path)
    strip_owned_keys(after)
    assert after.SerializeToString() == before.SerializeToString()


def test_every_node_carries_module_tag_and_source(case, tagged):
    nodes = list(every_node(load(tagged.path)))
    assert len(nodes) >= case.nodes > 0
    for i, node in enumerate(nodes):
        counts = Counter(p.key for p in node.metadata_props if p.key in OWNED_KEYS)
        assert counts == dict.fromkeys(OWNED_KEYS, 1), f"node {i} {node.op_type} {node.name!r}: {dict(counts)}"
        assert props(node)["hierarchy.source"] in VALID_SOURCES, f"node {i}: {props(node)}"


def test_retag_of_a_retagged_model_is_byte_identical(case, tagged, tmp_path):
    again = tmp_path / "again.onnx"
    summary = retag(tagged.path, again)
    assert again.read_bytes() == tagged.path.read_bytes()
    assert summary.changed_nodes == 0


def undeclared_domains(model: onnx.ModelProto) -> set[str]:
    """Domains nodes use without an opset import for them."""
    imported = {opset.domain for opset in model.opset_import} | {"", "ai.onnx"}
    local = {function.domain for function in model.functions}
    return {node.domain for node in every_node(model)} - imported - local


def test_tagged_model_passes_the_full_onnx_checker(case, tagged):
    undeclared = undeclared_domains(load(case.path))
    if undeclared:  # onnxruntime's optimizer emits com.microsoft ops without importing the domain
        with pytest.raises(onnx.checker.ValidationError, match="No opset import for domain"):
            onnx.checker.check_model(str(case.path), full_check=True)
        pytest.xfail(f"the degraded input itself fails the checker: no opset import for {sorted(undeclared)}")
    onnx.checker.check_model(str(tagged.path), full_check=True)


def test_tags_leave_onnxruntime_outputs_bit_identical(case, tagged, feeds):
    inputs = feeds(case.arch)
    assert_bit_identical(run_ort(case.path, inputs), run_ort(tagged.path, inputs))


@pytest.mark.parametrize("model", [if_model, function_model], ids=["if-bodies", "local-functions"])
def test_retag_is_lossless_inside_subgraphs_and_functions(model, tmp_path):
    """The lossless check above walks nested graphs and functions; here they actually exist."""
    source, output = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(model(), source)
    retag(source, output)
    after = load(output)
    assert all(set(OWNED_KEYS) <= props(n).keys() for n in every_node(after))
    strip_owned_keys(after)
    assert after.SerializeToString() == load(source).SerializeToString()


# --------------------------------------------------------------------------------------------
# external data (a default dynamo export is model.onnx + model.onnx.data)


@pytest.mark.parametrize("arch", DYNAMO_ARCHS)
def test_retag_beside_the_input_shares_its_external_data(arch, built_cases, feeds, tmp_path):
    source = copy_export(built_cases[(arch, "dynamo", "none")], tmp_path / "model")
    before = snapshot(source.parent)
    retag(source)  # default output: model.tagged.onnx beside the input
    after = snapshot(source.parent)
    assert set(after) == set(before) | {"model.tagged.onnx"}  # no second .data file
    assert {name: after[name] for name in before} == before
    output = source.with_name("model.tagged.onnx")
    assert external_locations(load(output)) == {"model.onnx.data"}
    inputs = feeds(arch)
    assert_bit_identical(run_ort(source, inputs), run_ort(output, inputs))


@pytest.mark.parametrize("arch", DYNAMO_ARCHS)
def test_retag_into_another_directory_brings_the_external_data_along(arch, built_cases, feeds, tmp_path):
    source = copy_export(built_cases[(arch, "dynamo", "none")], tmp_path / "in")
    target = tmp_path / "out"
    target.mkdir()
    before = snapshot(source.parent)
    expected = run_ort(source, feeds(arch))
    result = run_cli("retag", source, "--output", target / "tagged.onnx")
    assert result.returncode == 0, result.stderr
    assert snapshot(source.parent) == before  # input directory: same files, same bytes
    assert sorted(os.listdir(target)) == ["model.onnx.data", "tagged.onnx"]
    assert (target / "model.onnx.data").read_bytes() == before["model.onnx.data"]
    shutil.rmtree(source.parent)  # the output must not depend on the input directory
    assert_bit_identical(expected, run_ort(target / "tagged.onnx", feeds(arch)))


@pytest.mark.parametrize("arch", DYNAMO_ARCHS)
def test_retag_into_another_directory_keeps_both_models_loadable_by_onnx(arch, built_cases, tmp_path):
    """`onnx.load` (with weights) must still work on the output and on the user's original model."""
    source = copy_export(built_cases[(arch, "dynamo", "none")], tmp_path / "in")
    target = tmp_path / "out"
    target.mkdir()
    weights = {t.name: t.raw_data for t in onnx.load(source).graph.initializer}
    retag(source, target / "tagged.onnx")
    assert {t.name: t.raw_data for t in onnx.load(target / "tagged.onnx").graph.initializer} == weights
    assert {t.name: t.raw_data for t in onnx.load(source).graph.initializer} == weights


@pytest.mark.parametrize("arch", DYNAMO_ARCHS)
def test_retag_and_report_never_open_the_weights_file(arch, built_cases, tmp_path):
    source = copy_export(built_cases[(arch, "dynamo", "none")], tmp_path / "model")
    watch = OpenWatch(source.with_name("model.onnx.data"))
    try:
        retag(source)
        report(source)
        assert watch.events() == 0
        onnx.load(source)  # control: loading the weights is seen
        assert watch.events() > 0
    finally:
        watch.close()
    assert source.with_name("model.tagged.onnx").exists()


# --------------------------------------------------------------------------------------------
# accuracy floors (regression guards; measured numbers, not goals)


UNDEGRADED = [
    pytest.param(
        arch,
        exporter,
        id=f"{arch}-{exporter}-none",
    )
    for arch in cases.ARCHS
    for exporter in cases.EXPORTERS
    if cases.supported(arch, exporter, "none")
]


@pytest.mark.parametrize("arch, exporter", UNDEGRADED)
def test_undegraded_exports_are_tagged_exactly(arch, exporter, built_cases, tmp_path):
    case = built_cases[(arch, exporter, "none")]
    output = tmp_path / "tagged.onnx"
    retag(case.path, output)
    score = cases.score(load(output), case)
    assert score.with_truth > 0
    assert score.accuracy == 1.0, f"{score.correct}/{score.with_truth} correct; correct by source {score.correct_by_source}"


# --------------------------------------------------------------------------------------------
# models that never saw PyTorch


def test_sklearn_pipeline_without_scope_evidence_falls_back_to_root_and_says_so(tmp_path):
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    source, output = tmp_path / "sklearn.onnx", tmp_path / "sklearn.tagged.onnx"
    onnx.save(to_onnx(pipeline, x[:1]), source)

    summary = retag(source, output)

    nodes = list(every_node(load(output)))
    assert {"Scaler", "LinearClassifier"} <= {n.op_type for n in nodes}  # ai.onnx.ml ops, no scopes anywhere
    assert all(props(n) == {"hierarchy.module": "", "hierarchy.tag": "/", "hierarchy.source": "fallback"} for n in nodes)
    assert summary.nodes == summary.fallback == len(nodes) and summary.direct == summary.inherited == 0
    assert any("no scope evidence" in note for note in summary.notes)


def test_tensorflow_style_scopes_become_dotted_module_paths(tmp_path):
    scope = "StatefulPartitionedCall/model/dense"
    weight = numpy_helper.from_array(np.ones((4, 3), np.float32), f"{scope}/MatMul/ReadVariableOp:0")
    bias = numpy_helper.from_array(np.zeros(3, np.float32), f"{scope}/BiasAdd/ReadVariableOp:0")
    nodes = [
        helper.make_node("MatMul", ["input_1", weight.name], [f"{scope}/MatMul:0"], name=f"{scope}/MatMul"),
        helper.make_node("Add", [f"{scope}/MatMul:0", bias.name], [f"{scope}/BiasAdd:0"], name=f"{scope}/BiasAdd"),
        helper.make_node("Relu", [f"{scope}/BiasAdd:0"], ["dense"], name=f"{scope}/Relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "tf2onnx",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("dense", TensorProto.FLOAT, [1, 3])],
        [weight, bias],
    )
    source, output = tmp_path / "tf.onnx", tmp_path / "tf.tagged.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), source)

    summary = retag(source, output)

    tags = [props(n) for n in load(output).graph.node]
    assert [t["hierarchy.module"] for t in tags] == ["StatefulPartitionedCall.model.dense"] * 3
    assert {t["hierarchy.source"] for t in tags} == {"name"}
    assert summary.fallback == 0


def test_keras_numbered_layers_stay_distinct_modules(tmp_path):
    """Keras names a model's second Dense layer `dense_1`: a layer of its own, not a second call."""
    source, output = tmp_path / "keras.onnx", tmp_path / "keras.tagged.onnx"
    onnx.save(chain_model(["model/dense/Relu", "model/dense_1/Relu"]), source)
    retag(source, output)
    assert [props(n)["hierarchy.module"] for n in load(output).graph.node] == ["model.dense", "model.dense_1"]


def test_flat_old_torch_names_fall_back_to_root_and_are_listed(tmp_path):
    names = ["Conv_124", "Relu_125", "Conv_126"]
    inits = [
        numpy_helper.from_array(np.ones((2, 1, 1, 1), np.float32), "201"),
        numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "202"),
    ]
    nodes = [
        helper.make_node("Conv", ["input.1", "201"], ["124"], name=names[0]),
        helper.make_node("Relu", ["124"], ["125"], name=names[1]),
        helper.make_node("Conv", ["125", "202"], ["output"], name=names[2]),
    ]
    graph = helper.make_graph(
        nodes,
        "torch-jit-export",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2, 4, 4])],
        inits,
    )
    source, output = tmp_path / "old.onnx", tmp_path / "old.tagged.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)]), source)

    summary = retag(source, output)

    assert [props(n)["hierarchy.module"] for n in load(output).graph.node] == ["", "", ""]
    assert [props(n)["hierarchy.source"] for n in load(output).graph.node] == ["fallback"] * 3
    assert [ref.name for ref in summary.fallback_nodes] == names
    listing = summary.to_text().split("fallback nodes (3):", 1)[1]
    assert all(name in listing for name in names)


# --------------------------------------------------------------------------------------------
# report: analysis only


@pytest.mark.parametrize(
    "key",
    [("bert", "dynamo", "none"), ("bert", "torchscript", "none"), ("gpt2", "dynamo", "onnxslim")],
    ids=lambda key: "-".join(key),
)
def test_report_cli_writes_nothing_and_its_counts_add_up(key, built_cases):
    case = built_cases[key]
    directory = case.path.parent

    def listing():
        return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()}

    before = listing()
    result = run_cli("report", case.path, "--json", cwd=directory)
    assert result.returncode == 0, result.stderr
    assert listing() == before
    data = json.loads(result.stdout)
    assert data["nodes"] == data["direct"] + data["inherited"] + data["fallback"]
    assert data["nodes"] == len(list(every_node(load(case.path))))
