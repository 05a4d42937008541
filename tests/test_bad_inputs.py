"""Bad input gets one clear line, a documented exit code, and leaves every file as it was.

The cases are `bench.robustness.CASES`, run through the CLI's `main` (a few also as a real
subprocess); the table in docs/robustness.md is refreshed from these very runs. The sweeps cut
and bit-flip a small model at every position: each result is refused as bad input (exit 2) or
is a model that tags completely and losslessly — never an internal error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from bench import robustness
from bench.docs import ROOT
from tagger import InputError, retag
from tagger.errors import EXIT_CODES
from tests.graphs import function_model

CASES = {case.id: case for case in robustness.CASES}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, robustness.Outcome]:
    return {case.id: robustness.run(case, tmp_path_factory.mktemp(case.id)) for case in robustness.CASES}


@pytest.mark.parametrize("case_id", list(CASES))
def test_each_input_gets_its_exit_code_and_one_clear_line(case_id, outcomes):
    case, outcome = CASES[case_id], outcomes[case_id]
    assert outcome.exit_code == case.exit_code, outcome
    assert case.message in outcome.answer(case.message), outcome
    assert "Traceback" not in outcome.stderr + outcome.stdout
    if case.exit_code:
        assert outcome.stderr.count("\n") == 1 and outcome.stderr.startswith("tagger: error: "), outcome.stderr
        assert outcome.changed == [] and outcome.created == [], "a refused input must leave every file as it was"
    else:
        assert outcome.stderr == ""
        written = {"m.tagged.onnx"} if case_id == "output-symlink-force" else set()
        assert set(outcome.changed) == written, "only the output may change"
        assert len(outcome.created) == 1 and outcome.created[0].endswith(".tagged.onnx") or written


def test_every_exit_code_is_documented(outcomes):
    assert {o.exit_code for o in outcomes.values()} <= set(EXIT_CODES)


def test_forced_output_replaces_the_link_and_never_writes_its_target(tmp_path):
    outcome = robustness.run(CASES["output-symlink-force"], tmp_path)
    assert outcome.exit_code == 0
    assert (tmp_path / "elsewhere" / "precious.onnx").read_bytes() == b"precious"
    assert not (tmp_path / "m.tagged.onnx").is_symlink()
    assert onnx.load(tmp_path / "m.tagged.onnx").graph.node[0].metadata_props


@pytest.mark.parametrize("case_id", ["missing-path", "cycle", "output-symlink"])
def test_a_real_process_gives_the_same_line_and_exit_code(case_id, outcomes, tmp_path):
    argv = CASES[case_id].build(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "tagger", *argv], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == outcomes[case_id].exit_code
    assert result.stderr.replace(str(tmp_path) + os.sep, "") == outcomes[case_id].stderr


def test_the_docs_table_is_refreshed_from_these_runs(outcomes):
    table = robustness.publish_table(outcomes)
    assert table in (ROOT / "docs" / "robustness.md").read_text(encoding="utf-8")
    assert all(f"| {case.what} |" in table for case in robustness.CASES)


# --------------------------------------------------------------------------------------------
# every cut and every bit flip of a small model: refused as bad input, or tagged completely


def _sample_model() -> onnx.ModelProto:
    """Small, but with every part a cut can land in: nodes with metadata, a function, model metadata."""
    model = function_model()
    model.graph.node[0].metadata_props.add(key="pkg.torch.onnx.name_scopes", value="['', 'encoder', 'encoder.layer.0', 'block']")
    model.metadata_props.add(key="note", value="tail field")
    return model


def _refused_or_tagged(data: bytes, work: Path) -> str:
    """'refused' (InputError) or 'tagged' (every node tagged, nothing else changed); fails otherwise."""
    source, output = work / "in.onnx", work / "out.onnx"
    source.write_bytes(data)
    try:
        summary = retag(source, output)
    except InputError:
        assert source.read_bytes() == data
        assert not output.exists()
        return "refused"
    assert source.read_bytes() == data
    parsed = onnx.ModelProto()
    parsed.ParseFromString(data)
    tagged = onnx.load(output)
    nodes = [*tagged.graph.node, *(n for f in tagged.functions for n in f.node)]
    assert summary.nodes == len(nodes)
    keys = ("hierarchy.module", "hierarchy.tag", "hierarchy.source")
    for node in nodes:
        assert sorted(p.key for p in node.metadata_props if p.key in keys) == sorted(keys)
        for position in reversed(range(len(node.metadata_props))):  # by position: other entries may be undecodable
            if node.metadata_props[position].key in keys:
                del node.metadata_props[position]
    assert tagged.SerializeToString() == parsed.SerializeToString()
    output.unlink()
    return "tagged"


def test_every_truncation_is_refused_or_tagged(tmp_path):
    data = _sample_model().SerializeToString()
    answers = {cut: _refused_or_tagged(data[:cut], tmp_path) for cut in range(len(data))}
    assert answers[0] == answers[len(data) // 2] == "refused"
    assert list(answers.values()).count("refused") > 0.95 * len(data)


def test_every_single_bit_flip_is_refused_or_tagged(tmp_path):
    data = _sample_model().SerializeToString()
    answers = [
        _refused_or_tagged(data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1 :], tmp_path)
        for i in range(len(data))
        for bit in range(8)
    ]
    assert {"refused", "tagged"} == set(answers)


# --------------------------------------------------------------------------------------------
# cycles in real exports


def _depends_on(model: onnx.ModelProto, later: int, earlier: int) -> bool:
    """Whether node `later` reads, through any chain, an output of node `earlier`."""
    producer = {name: i for i, node in enumerate(model.graph.node) for name in node.output}
    stack, seen = [later], set()
    while stack:
        i = stack.pop()
        if i == earlier:
            return True
        if i not in seen:
            seen.add(i)
            stack += [producer[name] for name in model.graph.node[i].input if name in producer]
    return False


@pytest.mark.parametrize("key", [("bert", "dynamo", "none"), ("gpt2", "torchscript", "onnxslim")], ids="-".join)
def test_a_back_edge_in_a_real_export_is_a_cycle_exactly_when_a_path_closes_it(key, built_cases):
    from tagger import tag_proto

    source = onnx.load(built_cases[key].path, load_external_data=False)
    rng = np.random.default_rng(0)
    count = len(source.graph.node)
    answers = set()
    for _ in range(30):
        a, b = sorted(int(i) for i in rng.choice(count, size=2, replace=False))
        model = onnx.ModelProto()
        model.CopyFrom(source)
        model.graph.node[a].input.append(model.graph.node[b].output[0])  # a now also reads b's output
        if _depends_on(model, b, a):
            with pytest.raises(InputError, match="not a DAG"):
                tag_proto(model)
            assert not any(p.key.startswith("hierarchy.") for n in model.graph.node for p in n.metadata_props)
            answers.add("cycle")
        else:
            assert any("topological order" in note for note in tag_proto(model).notes)
            answers.add("unsorted")
    assert answers == {"cycle", "unsorted"}
