"""The optimum outputs shipped in data/optimum/ (`data/make_optimum_fixtures.py`): what they hold,
and that `tagger retag` tags every node of each, bodies of the merged decoder's `If` included,
without changing anything else. Figures of today's tagger are printed, not asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from tagger.model.index import graphs_within

DATA = Path(__file__).resolve().parents[1] / "data" / "optimum"
FIXTURES = ("t5-decoder_model_merged.onnx", "llama-with-past.onnx", "vit.onnx")
TAG_KEYS = ("hierarchy.module", "hierarchy.tag", "hierarchy.source")


def _all_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Main graph, control-flow bodies and function bodies."""
    return [n for g in graphs_within(model.graph) for n in g.node] + [n for f in model.functions for n in f.node]


def _without_tags(model: onnx.ModelProto) -> bytes:
    for node in _all_nodes(model):
        kept = [(p.key, p.value) for p in node.metadata_props if p.key not in TAG_KEYS]
        del node.metadata_props[:]
        for key, value in kept:
            node.metadata_props.add(key=key, value=value)
    return model.SerializeToString()


def test_the_merged_decoder_is_one_if_whose_branches_hold_the_decoder():
    model = onnx.load(DATA / "t5-decoder_model_merged.onnx")
    assert [n.op_type for n in model.graph.node] == ["If"]
    branches = {a.name: a.g for a in model.graph.node[0].attribute}
    assert set(branches) == {"then_branch", "else_branch"}
    assert all(any(n.name.startswith("/decoder/block.0/") for n in g.node) for g in branches.values())


def test_the_llm_takes_and_returns_its_kv_cache():
    model = onnx.load(DATA / "llama-with-past.onnx")
    inputs = {i.name for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    assert {"past_key_values.0.key", "past_key_values.1.value"} <= inputs
    assert {"logits", "present.0.key", "present.1.value"} <= outputs
    assert any(n.name == "/lm_head/MatMul" for n in model.graph.node)


def test_fixtures_are_small():
    assert sum((DATA / name).stat().st_size for name in FIXTURES) < 3 * 2**20


@pytest.mark.parametrize("name", FIXTURES)
def test_retag_tags_every_node_and_changes_nothing_else(name, tmp_path):
    source = DATA / name
    output, report = tmp_path / "tagged.onnx", tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "tagger", "retag", str(source), "--output", str(output), "--report", str(report)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    tagged = onnx.load(output)
    untagged = [n.name for n in _all_nodes(tagged) if not any(p.key == "hierarchy.module" for p in n.metadata_props)]
    assert not untagged
    assert _without_tags(tagged) == onnx.load(source).SerializeToString()
    summary = json.loads(report.read_text())
    print(name, {k: summary.get(k) for k in ("nodes", "direct", "inherited", "fallback")})
