"""Kernel times attributed to the nodes and modules of the graph that ran.

1. A kernel names nodes of the graph that ran (`tagger.commands.profiling.executed`); one that names no
   node is counted under `unmatched` with the reason, never guessed; one that stands for several
   nodes counts for their common module.
2. Control flow: the kernel of an If/Loop/Scan node lasts as long as the body kernels it runs,
   which onnxruntime also reports, each under its own node. The body kernels count for the body
   nodes' modules; the control-flow node keeps only its own time (its time less its bodies'),
   charged to no module (the report's control-flow overhead), so nothing is counted twice.
3. Per module: `self` is the time of its own nodes, `total` that of its nodes and everything
   below it; `share` is `total` over the summed kernel time of the run. Each module's
   `providers` splits its total by provider.
4. Providers and partitions: a kernel that stands for several nodes (a partition an execution
   provider runs as one kernel: CUDA graphs, TensorRT, DirectML; `partitions` names their nodes
   where onnxruntime does not) counts its time for the common module of its nodes, and each of
   its nodes, in its own module, as placed on the kernel's provider: a module's
   `provider_nodes` counts its subtree's nodes by the provider that ran them, its `providers`
   its time.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tagger.commands.profiling.executed import ExecutedGraph, kernel_module, narrowed, partitioned, placed_by_order, unnamed_kernel
from tagger.commands.profiling.report import ModuleTime, NodeTime, ProfileReport
from tagger.commands.profiling.trace import Measured
from tagger.model.paths import ancestors
from tagger.reporting.certainty import Certainty, by_module
from tagger.text import natural

__all__ = ["Attribution", "module_times", "without_bodies"]


class Attribution:
    """Kernel times per run, attributed to the nodes and modules of the graph that ran."""

    def __init__(
        self, graph: ExecutedGraph, runs: int, compiled: bool = False, partitions: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        self.graph = partitioned(graph, partitions) if partitions else graph
        self.runs = runs
        self.compiled = compiled
        index = graph.tags.index
        self.owners = {scope.owner for scope in index.graphs if scope.owner is not None}

    def report(self, model: str, measured: Measured, providers: list[str]) -> ProfileReport:
        self.graph = graph = placed_by_order(narrowed(self.graph, set(measured.totals)), measured.sequences())
        runs = self.runs
        matched: dict[str, Counter[str]] = {}
        unmatched: dict[str, float] = {}
        for name, by_provider in measured.totals.items():
            if name in graph.kernels:
                matched[name] = Counter({p: us / runs for p, us in by_provider.items()})
            else:
                unmatched[name] = sum(by_provider.values()) / runs
        own_us = without_bodies(graph, {name: sum(c.values()) for name, c in matched.items()})
        self_us: Counter[str] = Counter()
        self_providers: dict[str, Counter[str]] = defaultdict(Counter)
        placed: dict[str, Counter[str]] = defaultdict(Counter)
        node_times: list[NodeTime] = []
        for name, by_provider in matched.items():
            time = self._node_time(name, own_us[name], by_provider)
            node_times.append(time)
            if not time.control_flow:  # a control-flow node's own time is overhead (point 5)
                self_us[time.module] += time.us
                self_providers[time.module].update(by_provider)
            for node_id in graph.kernels[name]:  # each node where it is, on its kernel's provider (point 4)
                placed[graph.tags.nodes[node_id].module][time.provider] += 1
        control_us = sum(t.us for t in node_times if t.control_flow)
        tags = graph.tags.nodes
        own = by_module((t.module for t in tags), (t.kind for t in tags))
        kernel_us = sum(own_us.values()) + sum(unmatched.values())
        provider_us: Counter[str] = Counter()  # a control-flow kernel's own time only: its bodies' are theirs
        for name, by_provider in measured.totals.items():
            raw = sum(by_provider.values())
            part = own_us[name] / (raw / runs) if name in own_us and raw else 1.0
            provider_us.update({p: part * us / runs for p, us in by_provider.items()})
        nodes = sorted(node_times, key=lambda n: -n.us)
        return ProfileReport(
            model=model,
            runs=runs,
            warmup=0,
            optimization="",
            retagged=False,
            kernel_us=kernel_us,
            run_us=measured.run_us,
            unmatched_us=sum(unmatched.values()),
            control_flow_us=control_us,
            modules=module_times(_Own(self_us, self_providers, placed, own), {t.module: t.tag for t in tags}, kernel_us),
            nodes=nodes,
            unmatched=dict(sorted(unmatched.items(), key=lambda item: -item[1])),
            unmatched_why={n: self._why(n, measured.providers.get(n, ""), measured.ops.get(n, "")) for n in unmatched},
            graph_nodes=graph.nodes,
            graph_written=graph.written,
            providers=list(providers),
            provider_us=dict(provider_us.most_common()),
            elsewhere=[n for n in nodes if n.provider != providers[0]] if providers else [],
        )

    def _node_time(self, name: str, us: float, by_provider: Counter[str]) -> NodeTime:
        ids = self.graph.kernels[name]
        tags = [self.graph.tags.nodes[i] for i in ids]
        ops = "+".join(dict.fromkeys(t.op_type for t in tags))
        provider = by_provider.most_common(1)[0][0] if by_provider else ""
        control = any(i in self.owners for i in ids)
        return NodeTime(name, ops, kernel_module(self.graph, ids), us, provider, len(ids), control)

    def _why(self, name: str, provider: str, op: str) -> str:
        if self.compiled and provider != "CPUExecutionProvider":
            return f"a partition {provider} compiled; onnxruntime does not name its nodes"
        if self.graph.written and unnamed_kernel(name, op):
            return (
                f"a node onnxruntime made without a name (profiled as <op>_<its node index>, on {provider}), "
                "whose place in the run does not line up with one unnamed node of the graph it wrote"
            )
        if self.graph.written:
            return f"no node of the graph onnxruntime wrote is named so (on {provider})"
        return f"no node of the file is named so (on {provider}); fused or renamed by onnxruntime"


def without_bodies(graph: ExecutedGraph, kernel_us: dict[str, float]) -> dict[str, float]:
    """Each control-flow kernel's time less the time of the kernels its bodies ran (never below 0):
    its kernel encloses theirs, and they are counted under the body nodes."""
    index = graph.tags.index
    body_us: Counter[int] = Counter()
    for name, us in kernel_us.items():
        owners = {index.graphs[index.graph_of[i]].owner for i in graph.kernels[name]} - {None}
        for owner in owners:
            body_us[owner] += us / len(owners)
    return {name: max(0.0, us - sum(body_us.get(i, 0.0) for i in graph.kernels[name])) for name, us in kernel_us.items()}


@dataclass
class _Own:
    """Per module, what its own nodes account for: time, time by provider, nodes by the provider
    their kernel ran on, nodes by kind."""

    us: Counter[str]
    providers: dict[str, Counter[str]]
    placed: dict[str, Counter[str]]
    kinds: dict[str, Certainty]


def module_times(own: _Own, tag_of: dict[str, str], kernel_us: float) -> list[ModuleTime]:
    """Every module with its subtree's totals, depth-first, children in natural order."""
    total_us: Counter[str] = Counter()
    total_nodes: Counter[str] = Counter()
    providers: dict[str, Counter[str]] = defaultdict(Counter)
    placed: dict[str, Counter[str]] = defaultdict(Counter)
    for module in set(own.kinds) | set(own.us):
        for path in [*ancestors(module), module]:
            total_us[path] += own.us.get(module, 0.0)
            total_nodes[path] += own.kinds[module].nodes if module in own.kinds else 0
            providers[path].update(own.providers.get(module, {}))
            placed[path].update(own.placed.get(module, {}))
    children: dict[str, list[str]] = defaultdict(list)
    for path in total_nodes:
        if path:
            children[path.rpartition(".")[0]].append(path)
    ordered: list[ModuleTime] = []

    def visit(path: str) -> None:
        share = total_us[path] / kernel_us if kernel_us else 0.0
        mine = own.kinds.get(path, Certainty())
        time = ModuleTime(path, tag_of.get(path, ""), total_nodes[path], own.us.get(path, 0.0), total_us[path], share, mine)
        time.providers.update(providers[path].most_common())
        time.provider_nodes.update(placed[path].most_common())
        ordered.append(time)
        for child in sorted(children.get(path, []), key=natural):
            visit(child)

    if total_nodes:
        visit("")
    return ordered
