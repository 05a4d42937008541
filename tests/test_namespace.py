"""`tagger retag --namespace`: Model Explorer's `namespace` entry, checked through its real adapter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from tagger import retag
from tagger.writing.namespace import namespace_of

REPO_ROOT = Path(__file__).resolve().parents[1]
FOUR_KEYS = ("hierarchy.module", "hierarchy.tag", "hierarchy.source", "namespace")


def load(path: Path) -> onnx.ModelProto:
    return onnx.load(path, load_external_data=False)


def props(node: onnx.NodeProto) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


def strip(model: onnx.ModelProto, keys) -> None:
    for node in model.graph.node:
        kept = [(p.key, p.value) for p in node.metadata_props if p.key not in keys]
        del node.metadata_props[:]
        for key, value in kept:
            node.metadata_props.add(key=key, value=value)


@pytest.fixture(scope="module")
def stripped(built_cases, tmp_path_factory):
    """A dynamo BERT without names or metadata, retagged with --namespace by the CLI."""
    case = built_cases[("bert", "dynamo", "strip_all")]
    output = tmp_path_factory.mktemp("namespace") / "bert.namespaced.onnx"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "tagger", "retag", str(case.path), "--output", str(output), "--namespace"]
    subprocess.run(command, check=True, capture_output=True, env=env)
    return case, output


def test_model_explorer_nests_every_node_by_its_tag(stripped):
    pytest.importorskip("model_explorer_onnx")  # the `explorer` extra: a large install, kept out of `test`
    from model_explorer_onnx.main import ONNXAdapter  # the real adapter, no browser

    _, output = stripped
    graphs = ONNXAdapter().convert(str(output), {})["graphs"]
    main = graphs[0]
    pseudo = {"Input", "Output", "Initializer", "InitializedInput"}
    shown = [n for n in main.nodes if n.label not in pseudo]
    nodes = load(output).graph.node
    assert [n.label for n in shown] == [n.op_type for n in nodes]  # the adapter keeps the graph's order
    checked = 0
    for shown_node, node in zip(shown, nodes, strict=True):
        if node.op_type == "Constant":  # the adapter moves constants next to their users
            continue
        expected = "/".join(filter(None, [main.id, props(node)["hierarchy.tag"].strip("/")]))
        assert shown_node.namespace == expected, (node.op_type, props(node))
        checked += 1
    assert checked >= len(nodes) - 2
    layers = {n.namespace for n in shown}
    assert f"{main.id}/m/encoder/layer.1/attention/self" in layers


def test_removing_four_keys_gives_the_input_back(stripped):
    case, output = stripped
    after = load(output)
    assert all(props(n)["namespace"] == namespace_of(props(n)["hierarchy.tag"]) for n in after.graph.node)
    strip(after, FOUR_KEYS)
    assert after.SerializeToString() == load(case.path).SerializeToString()


def test_retag_with_namespace_of_its_own_output_is_byte_identical(stripped, tmp_path):
    _, output = stripped
    again = tmp_path / "again.onnx"
    retag(output, again, namespace=True)
    assert again.read_bytes() == output.read_bytes()


def test_an_exporters_own_namespace_stays_untouched(built_cases, tmp_path):
    case = built_cases[("bert", "dynamo", "none")]
    before = load(case.path)
    assert all("namespace" in props(n) for n in before.graph.node)
    output = tmp_path / "tagged.onnx"
    retag(case.path, output, namespace=True)
    after = load(output)
    assert [props(n)["namespace"] for n in after.graph.node] == [props(n)["namespace"] for n in before.graph.node]
    strip(after, FOUR_KEYS[:3])
    assert after.SerializeToString() == before.SerializeToString()


def test_a_namespace_written_by_an_earlier_retag_follows_a_changed_tag(tmp_path):
    from tests.graphs import chain_model

    model = chain_model(["/enc/a/Relu", "/enc/b/Relu"])
    model.graph.node[1].metadata_props.add(key="namespace", value="enc/old")
    model.graph.node[1].metadata_props.add(key="hierarchy.tag", value="/enc/old")
    onnx.save(model, tmp_path / "in.onnx")
    retag(tmp_path / "in.onnx", tmp_path / "out.onnx", namespace=True)
    assert [props(n)["namespace"] for n in load(tmp_path / "out.onnx").graph.node] == ["enc/a", "enc/b"]
