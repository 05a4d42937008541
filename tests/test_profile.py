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
