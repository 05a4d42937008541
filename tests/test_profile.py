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
def test_module_totals_add_up_to_the_profiled_total_with_optimizations_off(degradation, built_cases, tmp_path):
    case = built_cases[("bert", "dynamo", degradation)]
    trace = tmp_path / "trace.json"
    result = profile(case.path, runs=5, warmup=1, trace=trace, optimize="off")
    assert result.optimization == "off (ORT_DISABLE_ALL)" and not result.graph_written
    assert result.graph_nodes == result.file_nodes == case.nodes
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
    from tagger.inputs.feeds import make_feeds

    path = pipeline_model("merged_decoder")
    feeds = make_feeds(onnx_structure(path))
    np.savez(tmp_path / "inputs.npz", **{**feeds.arrays, "use_cache_branch": np.array([use_cache])})
    trace = tmp_path / "trace.json"
    result = profile(path, inputs=tmp_path / "inputs.npz", runs=5, warmup=1, trace=trace, optimize=False)
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
    from tagger.reporting.certainty import MARK

    path = built_cases[("bert", "dynamo", "strip_all")].path
    result, coverage = profile(path, runs=1, optimize="off"), report(path)  # the file's nodes, as report counts them
    own = {m.module: m.certainty for m in result.modules if m.certainty.nodes}
    assert own == {module: coverage.certainty(module) for module in coverage.modules}
    marked = [m for m in result.modules if m.certainty.mostly_chosen]
    assert marked and all(f"{m.module.rpartition('.')[2] or '(root)'}{m.certainty.mark}" in result.tree() for m in marked)
    assert result.tree().count(MARK) == len(marked)
    assert f"{coverage.certainty().chosen} of {coverage.nodes} nodes are tagged by the tagger's choice" in result.summary()
    data = json.loads(result.to_json())
    assert sum(m["certainty"]["chosen"] for m in data["modules"]) == coverage.certainty().chosen


def test_chosen_tags_stay_chosen_on_the_graph_onnxruntime_runs(built_cases):
    """The executed graph is tagged with the file as its reference; a node carried over by name
    keeps the file node's kind, so the default profile does not show the file's choices as evidence."""
    from tagger import report

    path = built_cases[("bert", "dynamo", "strip_all")].path
    result, coverage = profile(path, runs=1), report(path)
    assert result.optimization.endswith("all") or "ENABLE_ALL" in result.optimization
    chosen = sum(m.certainty.chosen for m in result.modules)
    assert 0 < chosen <= coverage.certainty().chosen


# ------------------------------------------------------------------------------------------
# The graph onnxruntime executes (default: ORT_ENABLE_ALL), providers, files for viewers


def kernel_events(trace: Path, warmup: int) -> list[dict]:
    """The kernel events of the measured runs, straight from onnxruntime's trace."""
    events = json.loads(trace.read_text())
    starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    return [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= starts[warmup]]


def test_default_profile_runs_the_fused_graph_and_attributes_every_kernel(built_cases, tmp_path):
    case = built_cases[("bert", "dynamo", "none")]
    trace = tmp_path / "trace.json"
    result = profile(case.path, runs=3, warmup=1, trace=trace)
    assert result.optimization == "all (ORT_ENABLE_ALL)" and result.graph_written
    assert result.file_nodes == case.nodes and result.graph_nodes < case.nodes  # onnxruntime fused nodes
    ops = {n.op_type for n in result.nodes}
    assert {"SkipLayerNormalization", "FusedMatMul"} <= ops and not ops & {"LayerNormalization", "Erf"}
    assert result.unmatched_us == 0 and not result.unmatched and not result.unmatched_why
    kernels = kernel_events(trace, warmup=1)
    assert {e["name"].removesuffix("_kernel_time") for e in kernels} == {n.name for n in result.nodes}
    expected = sum(e["dur"] for e in kernels) / 3
    root = result.modules[0]
    assert root.total_us == pytest.approx(expected) == pytest.approx(result.kernel_us)
    assert sum(m.self_us for m in result.modules) == pytest.approx(result.kernel_us)  # every µs in one module
    assert root.nodes == result.graph_nodes and root.share == pytest.approx(1.0)
    by_path = {m.module: m for m in result.modules}
    fused = {n.module for n in result.nodes if n.op_type == "SkipLayerNormalization"}
    assert "m.encoder.layer.0.output.LayerNorm" in fused and all(m in by_path for m in fused)
    assert "graph run: onnxruntime's optimized graph" in result.summary()


@pytest.mark.parametrize("arch", ["bert", "gpt2", "vit"])
@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_every_kernel_of_the_optimized_benchmark_models_matches_a_node(arch, exporter, built_cases):
    result = profile(built_cases[(arch, exporter, "none")].path, runs=1, warmup=0)
    assert result.graph_written and result.unmatched == {}, result.unmatched_why
    assert sum(m.self_us for m in result.modules) == pytest.approx(result.kernel_us)


def test_optimize_off_keeps_the_files_view_and_true_means_all(built_cases):
    path = built_cases[("bert", "dynamo", "none")].path
    off = profile(path, runs=1, warmup=0, optimize="off")
    assert off.graph_nodes == off.file_nodes and "graph run: the file's 82 nodes" in off.summary()
    assert {n.name for n in off.nodes} <= {n.name for n in onnx_structure(path).graph.node}
    assert profile(path, runs=1, warmup=0, optimize=True).optimization == "all (ORT_ENABLE_ALL)"
    basic = profile(path, runs=1, warmup=0, optimize="basic")
    assert basic.optimization == "basic (ORT_ENABLE_BASIC)" and basic.graph_written and not basic.unmatched


def test_kernels_on_another_provider_than_the_first_listed_are_listed(built_cases):
    """The Azure provider (installed with onnxruntime) runs none of these ops: every kernel falls
    back to the CPU provider, which is not the first listed."""
    result = profile(built_cases[("bert", "dynamo", "none")].path, runs=1, warmup=0, provider="Azure,CPU")
    assert result.providers == ["AzureExecutionProvider", "CPUExecutionProvider"]
    assert result.provider_us == {"CPUExecutionProvider": pytest.approx(result.kernel_us)}
    assert len(result.elsewhere) == len(result.nodes) and {n.provider for n in result.elsewhere} == {"CPUExecutionProvider"}
    assert any("ran on another provider than AzureExecutionProvider" in note for note in result.notes)
    root = result.modules[0]
    assert root.providers == {"CPUExecutionProvider": pytest.approx(root.total_us)}
    assert "AzureExecutionProvider (no kernel)" in result.summary()
    default = profile(built_cases[("bert", "dynamo", "none")].path, runs=1, warmup=0)
    assert default.providers[0] == "CPUExecutionProvider" and not default.elsewhere


def test_a_kernel_name_shared_by_both_branches_of_an_if_counts_for_the_branch_that_ran(pipeline_model, tmp_path):
    """onnxruntime names the fused nodes of both branches of optimum's merged decoder alike: such a
    kernel stands for the node of the branch that ran, or, when that cannot be told, for the
    common module of all its nodes (as a partition standing for many nodes would)."""
    import onnxruntime as ort

    from tagger.commands.nodetags import model_tags
    from tagger.commands.profiling.executed import executed_graph, kernel_module, narrowed, optimization_level, session_options
    from tagger.model.paths import lca_all

    path = pipeline_model("merged_decoder")
    proto = onnx_structure(path)
    options = ort.SessionOptions()
    session_options(options, optimization_level("all"), tmp_path, write=True)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    graph = executed_graph(model_tags(proto, base_dir=path.parent), [], proto, path, tmp_path)
    shared = {name: ids for name, ids in graph.kernels.items() if len(ids) > 1}
    assert graph.written and shared
    for ids in shared.values():
        assert kernel_module(graph, ids) == lca_all(graph.tags.nodes[i].module for i in ids)
    index = graph.tags.index
    branch = index.graph_of[next(iter(shared.values()))[0]]
    ran = {name for name, ids in graph.kernels.items() if all(index.graph_of[i] in (0, branch) for i in ids)}
    narrow = narrowed(graph, ran | set(shared))
    assert all(len(narrow.kernels[name]) == 1 for name in shared)
    assert all(index.graph_of[narrow.kernels[name][0]] == branch for name in shared)


def test_the_merged_decoder_optimized_counts_each_kernel_once(pipeline_model):
    result = profile(pipeline_model("merged_decoder"), runs=2, warmup=1)
    assert result.graph_written and not result.unmatched
    assert all(n.nodes == 1 for n in result.nodes)  # shared names narrowed to the branch that ran
    assert sum(m.self_us for m in result.modules) + result.control_flow_us == pytest.approx(result.kernel_us)
    assert sum(result.provider_us.values()) == pytest.approx(result.kernel_us)


def spans_nest(events: list[dict]) -> None:
    """Complete events on one thread nest: any two are disjoint, or one lies within the other."""

    def within(inner: dict, outer: dict) -> bool:
        return outer["ts"] <= inner["ts"] and inner["ts"] + inner["dur"] <= outer["ts"] + outer["dur"]

    for i, a in enumerate(events):
        for b in events[i + 1 :]:
            disjoint = a["ts"] + a["dur"] <= b["ts"] or b["ts"] + b["dur"] <= a["ts"]
            assert disjoint or within(a, b) or within(b, a), (a, b)


def test_perfetto_and_speedscope_files_nest_module_spans_around_the_kernels(built_cases, tmp_path):
    timeline, flame = tmp_path / "timeline.json", tmp_path / "flame.json"
    result = profile(built_cases[("bert", "dynamo", "none")].path, runs=2, warmup=1, perfetto=timeline, speedscope=flame)
    assert result.perfetto == str(timeline) and result.speedscope == str(flame)

    events = json.loads(timeline.read_text())["traceEvents"]
    complete = [e for e in events if e["ph"] == "X"]
    assert all({"name", "ts", "dur", "pid", "tid", "args"} <= e.keys() for e in complete)
    assert {(e["pid"], e["tid"]) for e in complete} == {(1, 1)}
    kernels = [e for e in complete if e["cat"] == "kernel"]
    assert len(kernels) == 2 * len(result.nodes)  # each kernel of each measured run
    assert sum(e["dur"] for e in kernels) / 2 == pytest.approx(result.kernel_us)
    spans_nest(complete)
    modules = {e["args"]["module"]: e for e in complete if e["cat"] == "module"}
    for kernel in kernels:  # each kernel lies in a span of its module and of each ancestor
        module = kernel["args"]["module"]
        paths = [*([""] + [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]), module]
        for path in paths:
            assert any(
                s["args"]["module"] == path and s["ts"] <= kernel["ts"] and kernel["ts"] + kernel["dur"] <= s["ts"] + s["dur"]
                for s in complete
                if s["cat"] == "module"
            ), (path, kernel)
    assert "m.encoder.layer.1.attention.self" in modules
    assert sum(1 for e in complete if e["cat"] == "run") == 2

    document = json.loads(flame.read_text())
    assert document["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    frames = document["shared"]["frames"]
    (profile_,) = document["profiles"]
    assert profile_["type"] == "evented" and profile_["unit"] == "microseconds"
    stack: list[int] = []
    last = profile_["startValue"]
    for event in profile_["events"]:
        assert event["at"] >= last and 0 <= event["frame"] < len(frames)  # ordered
        last = event["at"]
        if event["type"] == "O":
            stack.append(event["frame"])
        else:
            assert event["type"] == "C" and stack.pop() == event["frame"]  # balanced, last opened first closed
    assert not stack and last <= profile_["endValue"]
    names = {frame["name"] for frame in frames}
    assert {"(root)", "m.encoder.layer.0", "model_run"} <= names


def test_cli_writes_the_trace_under_its_older_name_timeline_and_names_the_level(built_cases, tmp_path):
    case = built_cases[("bert", "dynamo", "none")]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [
        sys.executable,
        "-m",
        "tagger",
        "profile",
        case.path,
        "--runs",
        "1",
        "--optimize",
        "off",
        "--timeline",
        tmp_path / "t.json",
    ]
    result = subprocess.run(list(map(str, command)), capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert "graph optimizations off (ORT_DISABLE_ALL)" in result.stdout
    assert json.loads((tmp_path / "t.json").read_text())["traceEvents"]


def test_compare_unoptimized_shows_each_module_at_both_levels_in_one_table(built_cases):
    case = built_cases[("bert", "dynamo", "none")]
    result = profile(case.path, runs=2, warmup=1, compare_unoptimized=True)
    comparison = result.comparison
    assert comparison.level == "all (ORT_ENABLE_ALL)" and comparison.optimized_kernel_us == result.kernel_us
    by_path = {m.module: m for m in comparison.modules}
    assert [m.module for m in comparison.modules][:2] == ["", "m"]  # depth-first from the root
    root = by_path[""]
    assert root.unoptimized_us == pytest.approx(comparison.unoptimized_kernel_us)  # no unmatched kernel at off
    assert root.unoptimized_nodes == case.nodes and root.optimized_nodes == result.graph_nodes < case.nodes
    for module in result.modules:
        assert by_path[module.module].optimized_us == module.total_us
    assert by_path["m.embeddings"].optimized_nodes < by_path["m.embeddings"].unoptimized_nodes  # the embedding fusion
    assert "graph optimizations off vs all (ORT_ENABLE_ALL):" in result.to_text()
    assert "## Graph optimizations off vs all" in result.to_markdown()
    assert json.loads(result.to_json())["comparison"]["modules"][0]["module"] == ""
