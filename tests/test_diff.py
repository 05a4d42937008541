"""`tagger diff A B`: the tags of a model before and after a real tool, compared by module.

Each check recomputes what it asserts from the two tagged models themselves (module counts from
the `hierarchy.module` of every node, name matches from the node names), not from the diff.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import onnx
import pytest

from tagger import diff, tag_proto

REPO_ROOT = Path(__file__).resolve().parents[1]
PAIRS = [(exporter, tool) for exporter in ("torchscript", "dynamo") for tool in ("onnxslim", "ort_optimizer")]


def tagged_nodes(path: Path) -> list[onnx.NodeProto]:
    """The main-graph nodes of `path`, tagged in memory (these models have no subgraphs)."""
    model = onnx.load(path, load_external_data=False)
    tag_proto(model)
    assert not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in model.graph.node for a in n.attribute)
    return list(model.graph.node)


def module(node: onnx.NodeProto) -> str:
    return next(p.value for p in node.metadata_props if p.key == "hierarchy.module")


def unique_names(nodes) -> dict[str, onnx.NodeProto]:
    counts = Counter(n.name for n in nodes)
    return {n.name: n for n in nodes if n.name and counts[n.name] == 1}


@pytest.fixture(params=PAIRS, ids=["-".join(p) for p in PAIRS])
def pair(request, built_cases):
    exporter, tool = request.param
    before = built_cases[("bert", exporter, "none")].path
    after = built_cases[("bert", exporter, tool)].path
    return before, after, diff(before, after)


def test_module_counts_equal_the_tags_of_each_model(pair):
    before, after, result = pair
    count_a = Counter(module(n) for n in tagged_nodes(before))
    count_b = Counter(module(n) for n in tagged_nodes(after))
    assert {m.module: m.a for m in result.modules if m.a} == dict(count_a)
    assert {m.module: m.b for m in result.modules if m.b} == dict(count_b)
    assert result.disappeared == sorted(set(count_a) - set(count_b), key=[m.module for m in result.modules].index)
    assert set(result.appeared) == set(count_b) - set(count_a)
    assert (result.nodes_a, result.nodes_b) == (sum(count_a.values()), sum(count_b.values()))


def test_nodes_with_a_unique_common_name_are_matched_by_name(pair):
    before, after, result = pair
    names_a = unique_names(tagged_nodes(before))
    names_b = unique_names(tagged_nodes(after))
    common = names_a.keys() & names_b.keys()
    assert result.matched_by_name == len(common) > 0
    moved = {name for name in common if module(names_a[name]) != module(names_b[name])}
    assert {c.name_a for c in result.changes if c.matched_by == "name"} == moved


def test_output_matches_share_an_output_tensor(pair):
    before, after, result = pair
    outputs_a = {n.name: set(n.output) for n in tagged_nodes(before)}
    outputs_b = {n.name: set(n.output) for n in tagged_nodes(after)}
    for change in result.changes:
        if change.matched_by == "output":
            assert outputs_a[change.name_a] & outputs_b[change.name_b]
    assert result.matched_by_output > 0  # both tools rename or fuse some nodes


def test_every_node_is_accounted_for_once_per_module(pair):
    _, _, result = pair
    for m in result.modules:
        assert m.a == m.kept + m.removed + m.moved_out, m
        assert m.b == m.kept + m.added + m.moved_in, m
    assert result.matched + result.removed == result.nodes_a
    assert result.matched + result.added == result.nodes_b
    assert len(result.changes) == sum(m.moved_out for m in result.modules) == sum(m.moved_in for m in result.modules)


def test_a_model_compared_with_itself_is_identical(built_cases):
    path = built_cases[("bert", "dynamo", "onnxslim")].path
    result = diff(path, path)
    assert result.identical and result.matched == result.nodes_a and not result.disappeared


def test_cli_json_and_markdown(built_cases):
    before = built_cases[("bert", "dynamo", "none")].path
    after = built_cases[("bert", "dynamo", "ort_optimizer")].path
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    run = [sys.executable, "-m", "tagger", "diff", before, after]
    data = json.loads(subprocess.run([*run, "--json"], capture_output=True, text=True, env=env, check=True).stdout)
    fused = {(c["op_a"], c["op_b"]) for c in data["changes"]}
    assert ("Gelu", "BiasGelu") in fused  # onnxruntime fused the dense layer's bias into the activation
    text = subprocess.run([*run, "--markdown"], capture_output=True, text=True, env=env, check=True).stdout
    assert text.startswith("# Tag diff:") and "## Nodes whose module changed" in text


def test_changes_on_chosen_tags_suggest_the_reference_and_vanish_with_it(built_cases):
    before = built_cases[("bert", "dynamo", "none")].path
    after = built_cases[("bert", "dynamo", "onnxslim")].path  # onnxslim drops the metadata: B's tags are inferred
    alone = diff(before, after)
    assert alone.changes and alone.chosen_changes == sum(c.chosen for c in alone.changes)
    assert all("chosen" in (c.kind_a, c.kind_b) or "certain" in (c.kind_a, c.kind_b) for c in alone.changes if c.chosen)
    assert alone.mostly_chosen and f"as its reference: reference {before}" in alone.summary()  # the CLI: --reference
    assert all(line.endswith("(chosen)") for line in alone.to_text().splitlines()[-len(alone.changes) :])
    referenced = diff(before, after, reference=before)
    assert referenced.chosen_changes < alone.chosen_changes and not referenced.notes


def test_a_tool_that_keeps_the_names_changes_no_chosen_tag(built_cases):
    before = built_cases[("bert", "torchscript", "none")].path
    result = diff(before, built_cases[("bert", "torchscript", "onnxslim")].path)
    assert result.chosen_changes == 0 and not result.notes and "as its reference" not in result.summary()
