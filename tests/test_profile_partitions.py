"""Kernels on execution providers: each module's share of time and of nodes per provider, and a
partition (one kernel for many nodes, as CUDA graphs, TensorRT or DirectML run them) counted for
the common module of its nodes. Only the CPU (and Azure) providers run here: the partition case
is a constructed event list on a real model's graph."""

from __future__ import annotations

import pytest

from tagger import profile
from tagger.commands.nodetags import model_tags
from tagger.commands.profiling.attribution import Attribution
from tagger.commands.profiling.executed import executed_graph
from tagger.commands.profiling.trace import measured
from tagger.model.modelio import load_model
from tagger.model.paths import lca_all

TRT = "TensorrtExecutionProvider"
CPU = "CPUExecutionProvider"


def test_on_a_real_cpu_profile_every_node_that_ran_is_placed_on_the_cpu(built_cases):
    result = profile(built_cases[("bert", "dynamo", "none")].path, runs=1, warmup=0, optimize="off", provider="Azure,CPU")
    ran = sum(n.nodes for n in result.nodes)
    root = result.modules[0]
    assert root.provider_nodes == {CPU: ran} and root.providers == {CPU: pytest.approx(root.total_us)}
    for module in result.modules:
        assert set(module.provider_nodes) <= {CPU} and module.provider_nodes.get(CPU, 0) <= module.nodes
    assert "CPU 100.0% (" in root.provider_shares()


def _events(runs: list[tuple[str, str, float]]) -> list[dict]:
    """A warm-up run with no kernel, then one measured run of (kernel name, provider, µs) in order."""
    events = [{"cat": "Session", "name": "model_run", "ts": 0, "dur": 10}]
    start = 100.0
    at = start
    for name, provider, us in runs:
        events.append(
            {"cat": "Node", "name": f"{name}_kernel_time", "ts": at, "dur": us, "args": {"provider": provider, "op_name": "X"}}
        )
        at += us
    events.append({"cat": "Session", "name": "model_run", "ts": start, "dur": at - start})
    return events


@pytest.fixture(scope="module")
def bert_graph(built_cases):
    """BERT's own nodes as the graph that ran (as when a provider compiled partitions)."""
    path = built_cases[("bert", "dynamo", "none")].path
    proto = load_model(path)
    tags = model_tags(proto)
    names = [view.name for view in tags.index.views]
    graph = executed_graph(tags, names, proto, path, path.parent / "no-such-workdir")
    return graph, {name: tag.module for name, tag in zip(names, tags.nodes, strict=True)}


def _report(graph, kernels, partitions=None):
    attribution = Attribution(graph, 1, compiled=True, partitions=partitions)
    return attribution.report("bert", measured(_events(kernels), warmup=1), [TRT, CPU]), attribution.graph.notes


def test_a_partition_kernel_counts_for_the_common_module_of_its_nodes(bert_graph):
    graph, module_of = bert_graph
    members = [name for name, module in module_of.items() if module.startswith("m.encoder.layer.0.")]
    others = [name for name in module_of if name not in members]
    kernels = [("TRTKernel_graph_main_0", TRT, 300.0)] + [(name, CPU, 1.0) for name in others]
    result, _ = _report(graph, kernels, {"TRTKernel_graph_main_0": members})

    assert not result.unmatched
    (partition,) = [n for n in result.nodes if n.name == "TRTKernel_graph_main_0"]
    assert partition.module == lca_all(module_of[name] for name in members) == "m.encoder.layer.0"
    assert partition.nodes == len(members) and partition.provider == TRT and partition.us == 300.0
    by_path = {m.module: m for m in result.modules}
    layer = by_path["m.encoder.layer.0"]
    assert layer.self_us == 300.0 and layer.providers == {TRT: 300.0}
    assert layer.provider_nodes == {TRT: len(members)}  # every node of the layer ran on TensorRT
    inner = by_path["m.encoder.layer.0.attention.self"]
    assert inner.total_us == 0.0 and inner.provider_nodes[TRT] == sum(module_of[n].startswith(inner.module) for n in members)
    root = by_path[""]
    assert root.provider_nodes == {TRT: len(members), CPU: len(others)}
    assert root.providers == {TRT: 300.0, CPU: pytest.approx(len(others))}
    assert sum(result.provider_us.values()) == pytest.approx(result.kernel_us) == pytest.approx(300.0 + len(others))
    assert len(result.elsewhere) == len(others)  # the kernels that fell back from TensorRT to the CPU


def test_a_partition_across_two_layers_counts_for_their_module_list(bert_graph):
    graph, module_of = bert_graph
    members = [name for name, module in module_of.items() if module.startswith("m.encoder.layer.")]
    result, notes = _report(graph, [("TRTKernel_graph_main_1", TRT, 50.0)], {"TRTKernel_graph_main_1": [*members, "no_such_node"]})
    (partition,) = result.nodes
    assert partition.module == "m.encoder.layer" and partition.nodes == len(members)  # layer.0 and layer.1 meet there
    assert "1 nodes named in the partitions are not in the graph that ran: no_such_node" in notes


def test_without_its_nodes_a_partition_kernel_is_unmatched_with_the_reason(bert_graph):
    graph, _ = bert_graph
    result, _ = _report(graph, [("TRTKernel_graph_main_0", TRT, 300.0)])
    assert result.unmatched == {"TRTKernel_graph_main_0": 300.0}
    assert result.unmatched_why["TRTKernel_graph_main_0"] == f"a partition {TRT} compiled; onnxruntime does not name its nodes"
    assert result.modules[0].provider_nodes == {}
