"""Certainty in every output people read: each node is direct, certain, chosen or fallback
(`tagger.reporting.certainty`), counted per module, and a module whose own nodes are mostly chosen is marked.

Real exports only (`tests/conftest.py`): a TorchScript BERT (every node named: all direct), and
exports stripped of names and metadata by `bench.cases.strip_all` (most nodes inherited, some
of them by choice).
"""

from __future__ import annotations

import re
from collections import Counter

import onnx

from tagger import report, retag
from tagger.commands.nodetags import model_tags
from tagger.model.keys import MODULE_KEY, SOURCE_KEY
from tagger.reporting.certainty import KINDS, MARK

STRIPPED = ("bert", "dynamo", "strip_all")
EXPORT = ("bert", "torchscript", "none")
_TREE_LINE = re.compile(r"  (\d+) \((\d+) own(?:: ([^)]*))?\)( \[mostly chosen\])?$")


def load(path) -> onnx.ModelProto:
    return onnx.load(path, load_external_data=False)


def test_the_kinds_of_each_module_add_up_to_its_nodes_and_agree_with_the_inherited_records(built_cases):
    result = report(built_cases[STRIPPED].path)
    chosen = Counter(r.module for r in result.inferred if not r.certain)
    certain = Counter(r.module for r in result.inferred if r.certain)
    for module, count in result.modules.items():
        own = result.certainty(module)
        assert own.nodes == count
        assert (own.certain, own.chosen) == (certain[module], chosen[module])
    whole = result.certainty()
    assert whole.nodes == result.nodes and whole.chosen == sum(chosen.values()) > 0
    assert f"certain {100 * whole.share:.1f}%" in result.summary()


def test_the_tree_counts_own_nodes_by_kind_and_marks_the_modules_mostly_chosen(built_cases):
    result = report(built_cases[STRIPPED].path)
    marked = 0
    for line in result.tree().splitlines():
        match = _TREE_LINE.search(line)
        assert match, line
        own = int(match[2])
        kinds = {kind: int(n) for n, kind in (part.split() for part in match[3].split(", "))} if match[3] else {}
        assert set(kinds) <= set(KINDS) and sum(kinds.values()) == own
        assert bool(match[4]) == (kinds.get("chosen", 0) > own / 2)
        marked += bool(match[4])
    assert marked == sum(result.certainty(m).mostly_chosen for m in result.modules) > 0
    assert MARK in result.to_text() and "of which chosen" in result.to_markdown()


def test_an_export_with_scoped_names_rests_on_no_choice(built_cases):
    result = report(built_cases[EXPORT].path)
    assert result.certainty().share == 1.0 and result.certainty().chosen == 0
    assert MARK not in result.tree() and "certain 100.0%" in result.summary()


def test_a_tagged_file_read_back_gives_each_inherited_tag_the_certainty_of_its_retag(built_cases, tmp_path):
    source = built_cases[STRIPPED].path
    output = tmp_path / "tagged.onnx"
    retag(source, output)
    fresh = model_tags(load(source), base_dir=source.parent)
    kept = model_tags(load(output), base_dir=output.parent)
    assert fresh.retagged and not kept.retagged
    assert [n.kind for n in kept.nodes] == [n.kind for n in fresh.nodes]
    assert Counter(n.kind for n in kept.nodes)["chosen"] > 0
    assert report(output).certainty() == report(source).certainty()


def test_an_inherited_tag_moved_by_hand_is_no_longer_certain(built_cases, tmp_path):
    source = built_cases[STRIPPED].path
    output = tmp_path / "tagged.onnx"
    retag(source, output)
    model = load(output)
    kinds = [n.kind for n in model_tags(model, base_dir=tmp_path).nodes]
    position = next(i for i, kind in enumerate(kinds) if kind == "certain")
    entries = {p.key: p for p in model.graph.node[position].metadata_props}
    assert entries[SOURCE_KEY].value == "inherited"
    entries[MODULE_KEY].value = "m.encoder" if entries[MODULE_KEY].value != "m.encoder" else "m"
    moved = model_tags(model, base_dir=tmp_path).nodes[position]
    assert (moved.module, moved.kind) == (entries[MODULE_KEY].value, "chosen")


def test_the_html_page_marks_the_modules_mostly_chosen(built_cases):
    result = report(built_cases[STRIPPED].path)
    page = result.to_html()
    assert page.count('<span class="mark">') == sum(result.certainty(m).mostly_chosen for m in result.modules) > 0
    assert "<th>of which chosen</th>" in page and f"<td>{100 * result.certainty().share:.1f}%</td>" in page
