"""`tagger profile`: onnxruntime's per-kernel times joined with the tags, summed per module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import cases
from tagger import profile

REPO_ROOT = Path(__file__).resolve().parents[1]


def measured_kernel_us(trace: Path, warmup: int, runs: int) -> float:
    """Mean summed kernel time per run, read straight from onnxruntime's trace."""
    events = json.loads(trace.read_text())
    starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    assert len(starts) == warmup + runs
    first = starts[warmup]
    total = sum(e["dur"] for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first)
    return total / runs


@pytest.mark.parametrize("degradation", ["none", "strip_all"])
def test_module_totals_add_up_to_the_profiled_total(degradation, built_cases, tmp_path):
    case = built_cases[("bert", "dynamo", degradation)]
    trace = tmp_path / "trace.json"
    result = profile(case.path, runs=5, warmup=1, trace=trace)
    expected = measured_kernel_us(trace, warmup=1, runs=5)
    root = result.modules[0]
    assert root.module == ""
    assert root.total_us == pytest.approx(expected, rel=0.05)
    assert result.unmatched_us == 0 and not result.unmatched  # every kernel is one node of the file
    assert root.nodes == case.nodes and root.share == pytest.approx(1.0)


def test_each_module_total_is_its_self_time_plus_its_children(built_cases):
    result = profile(built_cases[("bert", "dynamo", "none")].path, runs=3)
    by_path = {m.module: m for m in result.modules}
    for m in result.modules:
        children = [c for c in result.modules if c.module and c.module.rpartition(".")[0] == m.module and c.module != m.module]
        assert m.total_us == pytest.approx(m.self_us + sum(c.total_us for c in children), abs=1e-6)
        assert m.share == pytest.approx(m.total_us / result.kernel_us)
    assert by_path["m.encoder.layer.0"].total_us > 0 and by_path["m.encoder.layer.1"].total_us > 0
    assert sum(n.us for n in result.nodes) == pytest.approx(result.kernel_us)


def test_cli_with_inputs_from_npz_prints_json(built_cases, tmp_path):
    case = built_cases[("bert", "torchscript", "onnxslim")]
    inputs = cases.sample_inputs("bert")
    np.savez(tmp_path / "inputs.npz", **inputs)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "tagger", "profile", case.path, "--inputs", tmp_path / "inputs.npz", "--runs", "2", "--json"]
    result = subprocess.run(list(map(str, command)), capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["inputs"] == {name: list(array.shape) for name, array in inputs.items()}
    assert data["runs"] == 2 and data["modules"][0]["share"] == pytest.approx(1.0)


def test_inputs_missing_a_graph_input_exit_2(built_cases, tmp_path):
    case = built_cases[("bert", "torchscript", "none")]
    np.savez(tmp_path / "partial.npz", input_ids=cases.sample_inputs("bert")["input_ids"])
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "tagger", "profile", case.path, "--inputs", tmp_path / "partial.npz"]
    result = subprocess.run(list(map(str, command)), capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 2 and "lacks model inputs ['attention_mask']" in result.stderr


def test_the_report_renders_as_a_tree_markdown_and_json(built_cases):
    result = profile(built_cases[("vit", "dynamo", "none")].path, runs=2)
    tree = result.tree(depth=1).splitlines()
    assert tree[0].split()[:2] == ["module", "self"] and tree[1].startswith("(root)") and tree[2].startswith("  m ")
    assert len(tree) == 3
    assert result.to_markdown().startswith("# Latency by module:")
    assert json.loads(result.to_json())["modules"][0]["module"] == ""


def main_graph_kernel_us(trace: Path, model: Path, warmup: int, runs: int) -> float:
    """Mean summed time per run of the main graph's kernels only (a body's kernels run inside
    their If's kernel), read straight from onnxruntime's trace."""
    import onnx

    main_nodes = {node.name for node in onnx.load(model, load_external_data=False).graph.node}
    events = json.loads(trace.read_text())
    starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    first = starts[warmup]
    total = sum(
        e["dur"]
        for e in events
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["name"][: -len("_kernel_time")] in main_nodes
        if e["ts"] >= first
    )
    return total / runs


@pytest.mark.parametrize("use_cache", [True, False], ids=["with-past-branch", "first-step-branch"])
def test_merged_decoder_counts_each_kernel_once_and_adds_up_to_the_run(use_cache, pipeline_model, tmp_path):
    from tagger.feeds import make_feeds

    path = pipeline_model("merged_decoder")
    feeds = make_feeds(onnx_structure(path))
    np.savez(tmp_path / "inputs.npz", **{**feeds.arrays, "use_cache_branch": np.array([use_cache])})
    trace = tmp_path / "trace.json"
    result = profile(path, inputs=tmp_path / "inputs.npz", runs=5, warmup=1, trace=trace)
    root = result.modules[0]
    main_us = main_graph_kernel_us(trace, path, warmup=1, runs=5)
    assert root.total_us + result.control_flow_us == pytest.approx(main_us, rel=0.05)
    # kernels run one after another inside a run: their sum cannot exceed it (how close it comes is
    # wall-clock time, which a loaded machine stretches: measured in the docs, not asserted here)
    assert root.total_us <= result.run_us
    assert not result.unmatched and not any("stand-in" in note for note in result.notes)
    if_node = next(n for n in result.nodes if n.op_type == "If")
    layers = {m.module: m for m in result.modules}
    body_us = sum(n.us for n in result.nodes if n.op_type != "If")
    assert body_us == pytest.approx(root.total_us)  # the modules hold the branch's kernels once
    assert result.control_flow_us > 0
    assert result.control_flow_us == pytest.approx(if_node.us)  # the If's own time: overhead, no module's
    assert "(control-flow overhead)" in result.tree()
    assert layers["m.model.layers.0"].total_us > 0 and layers["m.model.layers.1"].total_us > 0


def onnx_structure(path: Path):
    import onnx

    return onnx.load(path, load_external_data=False)


def test_a_stripped_export_shows_each_modules_chosen_nodes_and_marks_its_guesses(built_cases):
    from tagger import report
    from tagger.certainty import MARK

    path = built_cases[("bert", "dynamo", "strip_all")].path
    result, coverage = profile(path, runs=1), report(path)
    own = {m.module: m.certainty for m in result.modules if m.certainty.nodes}
    assert own == {module: coverage.certainty(module) for module in coverage.modules}
    marked = [m for m in result.modules if m.certainty.mostly_chosen]
    assert marked and all(f"{m.module.rpartition('.')[2] or '(root)'}{m.certainty.mark}" in result.tree() for m in marked)
    assert result.tree().count(MARK) == len(marked)
    assert f"{coverage.certainty().chosen} of {coverage.nodes} nodes are tagged by the tagger's choice" in result.summary()
    data = json.loads(result.to_json())
    assert sum(m["certainty"]["chosen"] for m in data["modules"]) == coverage.certainty().chosen
