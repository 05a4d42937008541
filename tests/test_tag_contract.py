"""One reader of the tag contract: a node with a repeated tag key reads the same in every command.

A tool that appends its own `hierarchy.*` entries leaves a node with two of each key; the last
entry is the current one (`tagger.model.keys.read_entries`). retag, report, diff, profile and extract
must all read that node as belonging to the last entry's module.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest

from tagger import diff, extract, profile, report, retag
from tagger.model.keys import MODULE_KEY, SOURCE_KEY, TAG_KEY, read_tags


@dataclass(frozen=True)
class Doubled:
    """A tagged model, and a copy where one node got a second set of tag entries."""

    tagged: Path
    doubled: Path
    node: str
    first: str
    last: str
    own_before: Counter


def _own_counts(path: Path) -> Counter:
    return Counter(read_tags(node.metadata_props)[0] for node in onnx.load(path, load_external_data=False).graph.node)


@pytest.fixture(scope="module")
def doubled(built_cases, tmp_path_factory) -> Doubled:
    directory = tmp_path_factory.mktemp("doubled")
    tagged = directory / "tagged.onnx"
    retag(built_cases[("bert", "torchscript", "none")].path, tagged)
    model = onnx.load(tagged)
    counts = _own_counts(tagged)
    leaves = [m for m, n in counts.items() if m and n >= 2 and not any(o.startswith(m + ".") for o in counts)]
    first, last = leaves[0], leaves[-1]
    node = next(n for n in model.graph.node if n.name and read_tags(n.metadata_props)[0] == first)
    node.metadata_props.add(key=MODULE_KEY, value=last)
    node.metadata_props.add(key=TAG_KEY, value=f"/Appended/{last}")
    node.metadata_props.add(key=SOURCE_KEY, value="metadata")
    path = directory / "doubled.onnx"
    onnx.save(model, path)
    return Doubled(tagged, path, node.name, first, last, counts)


def test_retag_keeps_the_last_entry(doubled, tmp_path):
    output = tmp_path / "retagged.onnx"
    retag(doubled.doubled, output)
    node = next(n for n in onnx.load(output).graph.node if n.name == doubled.node)
    assert [p.value for p in node.metadata_props if p.key == MODULE_KEY] == [doubled.last]


def test_report_counts_the_node_in_the_last_module(doubled):
    modules = report(doubled.doubled).modules
    assert modules[doubled.last] == doubled.own_before[doubled.last] + 1
    assert modules[doubled.first] == doubled.own_before[doubled.first] - 1


def test_diff_reads_the_last_entry(doubled, tmp_path):
    changes = diff(doubled.tagged, doubled.doubled).changes
    assert [(c.name_b, c.module_a, c.module_b) for c in changes] == [(doubled.node, doubled.first, doubled.last)]
    retagged = tmp_path / "retagged.onnx"
    retag(doubled.doubled, retagged)
    assert diff(doubled.doubled, retagged).identical  # the file and its retag are read alike


def test_profile_times_the_node_under_the_last_module(doubled):
    timed = {n.name: n.module for n in profile(doubled.doubled, runs=1, warmup=0, optimize="off").nodes}  # the file's own nodes
    assert timed[doubled.node] == doubled.last


def test_extract_selects_the_node_with_the_last_module(doubled, tmp_path):
    last = extract(doubled.doubled, module=doubled.last, output=tmp_path / "last.onnx")
    first = extract(doubled.doubled, module=doubled.first, output=tmp_path / "first.onnx")
    assert last.nodes == doubled.own_before[doubled.last] + 1
    assert first.nodes == doubled.own_before[doubled.first] - 1
    assert doubled.node in {n.name for n in onnx.load(tmp_path / "last.onnx").graph.node}
