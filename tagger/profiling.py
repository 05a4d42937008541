"""`tagger profile MODEL`: latency per module, from onnxruntime's own profiler.

How the numbers are made:

1. The model runs in onnxruntime (`provider`: the CPU provider unless told) with
   `SessionOptions.enable_profiling`; its JSON trace holds one `cat == "Node"` event per executed
   kernel, named `<node name>_kernel_time`, with its duration in microseconds and its provider
   (`args.provider`). Only events inside the measured `model_run`s count (the first `warmup`
   runs allocate memory and are left out); times are means per run.
2. Graph optimizations run at the session's default level (`ORT_ENABLE_ALL`) unless told
   (`optimize`: off, basic, extended, layout, all). Kernels are matched to the graph onnxruntime
   executed (`tagger.executed`): when it optimizes, the graph it writes, tagged with the file as
   its reference (fused kernels take the module transfer gives a fused node); at `off`, the
   file's own nodes. A kernel whose name is no node's is counted under `unmatched` with the
   reason, never guessed; one that stands for several nodes counts for their common module.
3. Every kernel must name one node, so nodes run under unique names in an in-memory copy when
   theirs are not: a body node whose name recurs in another body (the two branches of an
   optimum merged decoder repeat every name) runs as `<name>@<body>`; a node without a name, or
   sharing one inside its own graph, under a stand-in (onnxruntime would call it `<op>_<index>`,
   which can collide with real names). Weights stay in their external data file. That copy is
   also the reference of the optimized graph (its stand-ins carry no name evidence).
4. Tags come from the file, or are decided in memory when a node has none (`tagger.nodetags`).
   Each module's own nodes are counted by kind (direct, certain, chosen, fallback:
   `tagger.certainty`), and a module whose own nodes are mostly chosen is marked: its self time
   rests on the tagger's choices, not on evidence or facts.
5. Control flow: the kernel of an If/Loop/Scan node lasts as long as the body kernels it runs,
   which onnxruntime also reports, each under its own node. The body kernels count for the body
   nodes' modules; the control-flow node keeps only its own time (its time less its bodies'),
   so nothing is counted twice. That own time is the body executor's work between kernels
   (allocations, feeding and fetching each body node: measured ~3.5 µs per body node run on
   optimum's T5 merged decoder, 55% of the If's time), the same kind of time as `run_us` less
   `kernel_us` in the main graph: it is shown apart as control-flow overhead, charged to no
   module (an If of a merged decoder would otherwise put half the run on the root).
6. Per module: `self` is the time of its own nodes, `total` that of its nodes and everything
   below it; `share` is `total` over the summed kernel time of the run, so the top-level modules'
   shares, the unmatched share and the control-flow overhead add up to 100%. `run_us` is the wall time of a run, which also
   holds the executor's own work between kernels. Each module's `providers` splits its total by
   provider, and kernels that ran on another provider than the first listed are listed apart.
7. Inputs: an `.npz` file whose arrays are named after the graph inputs, or feeds generated from
   the model (`tagger.feeds`: shared symbols, sizes tied to weights, sizes stated by the config
   files beside the model, `--dim`; when onnxruntime refuses them, the plan's other image sizes
   are tried, each in a session of its own, and the report shows the sizes that ran); a run onnxruntime
   refuses is bad input (`tagger.feeds.refusal`), and so is a model it cannot load
   (`tagger.feeds.load_refusal`: a tool wrote a file onnxruntime refuses).
8. Files for viewers (`tagger.timeline`): `timeline` (Trace Event Format: module spans nest
   around the kernels) and `speedscope` (speedscope's evented format: a per-module flame graph).

onnxruntime is imported only when a profile runs.
"""

from __future__ import annotations

import json
import os
import tempfile
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from tagger.certainty import MARK, Certainty, by_module
from tagger.errors import InputError, MissingDependency, TaggerError
from tagger.executed import (
    ExecutedGraph,
    Level,
    executed_graph,
    kernel_module,
    kernel_name,
    narrowed,
    optimization_level,
    refuses_to_write,
    remove_written,
    session_options,
)
from tagger.feeds import DimSettings, Feeds, first_that_runs, load_refusal, model_feeds, parse_dim_option, refusal
from tagger.index import ModelIndex, build_index
from tagger.modelio import load_model, save_text
from tagger.nodetags import model_tags
from tagger.options import check_integer
from tagger.paths import ancestors
from tagger.text import LIST_LIMIT, JsonReport, markdown, natural, pct, terminal
from tagger.timeline import DrawnKernel, steps, trace_events, write_json
from tagger.timeline import speedscope as speedscope_document

__all__ = ["DEFAULT_PROVIDER", "ModuleTime", "NodeTime", "ProfileReport", "profile", "provider_names"]

DEFAULT_PROVIDER = "CPUExecutionProvider"
_PROVIDER_SUFFIX = "ExecutionProvider"
_KERNEL_SUFFIX = "_kernel_time"
_STAND_IN = "_tagger_profile_node_"


@dataclass(frozen=True)
class NodeTime:
    """Mean time per run of one kernel: one node of the graph that ran, or several (`nodes`: a
    name shared by several nodes, a partition) counted for their common module."""

    name: str
    op_type: str
    module: str
    us: float
    provider: str = ""
    """The execution provider it ran on (`args.provider` of its events)."""
    nodes: int = 1
    control_flow: bool = False
    """An If/Loop/Scan node: `us` is its own time (less its bodies' kernels), charged to no module."""


@dataclass(frozen=True)
class ModuleTime:
    """Mean time per run of a module's own nodes (`self_us`) and of its whole subtree (`total_us`)."""

    module: str
    tag: str
    nodes: int
    self_us: float
    total_us: float
    share: float
    """`total_us` as a fraction of the run's summed kernel time."""
    certainty: Certainty = field(default_factory=Certainty)
    """The module's own nodes (those `self_us` is the time of) by kind."""
    providers: dict[str, float] = field(default_factory=dict)
    """`total_us` by execution provider, most first."""

    def provider_shares(self) -> str:
        """`CPU 80% / CUDA 20%`: the subtree's time by provider ('' when none ran)."""
        return " / ".join(f"{_short(p)} {pct(us, self.total_us)}" for p, us in self.providers.items() if us)


@dataclass
class ProfileReport(JsonReport):
    """Where the time of one model's runs went, by module."""

    model: str
    runs: int
    warmup: int
    optimization: str
    retagged: bool
    kernel_us: float
    """Mean summed kernel time per run (every node event in the measured runs)."""
    run_us: float
    """Mean wall time per run (`model_run` events)."""
    unmatched_us: float
    modules: list[ModuleTime]
    """Depth-first, children in natural order."""
    nodes: list[NodeTime]
    """Slowest first."""
    control_flow_us: float = 0.0
    """Mean own time per run of If/Loop/Scan nodes (their time less their bodies' kernels): the
    body executor's work, charged to no module; part of `kernel_us`."""
    unmatched: dict[str, float] = field(default_factory=dict)
    """Kernel names that match no node, with their mean time."""
    inputs: dict[str, list[int]] = field(default_factory=dict)
    dims: dict[str, int] = field(default_factory=dict)
    """The size used per symbolic dim of the inputs (generated feeds only)."""
    trace: str | None = None
    notes: list[str] = field(default_factory=list)
    unmatched_why: dict[str, str] = field(default_factory=dict)
    """Why each unmatched kernel matches no node."""
    graph_nodes: int = 0
    """Nodes of the graph the kernels ran (onnxruntime's optimized graph, or the file's)."""
    file_nodes: int = 0
    graph_written: bool = False
    """Whether the kernels were attributed on the graph onnxruntime wrote (`tagger.executed`)."""
    providers: list[str] = field(default_factory=list)
    """The session's execution providers, in order (the first is the one asked for first)."""
    provider_us: dict[str, float] = field(default_factory=dict)
    """Mean kernel time per run by provider."""
    elsewhere: list[NodeTime] = field(default_factory=list)
    """Kernels that ran on another provider than the first listed, slowest first."""
    timeline: str | None = None
    speedscope: str | None = None

    def summary(self) -> str:
        lines = [
            f"{terminal(self.model)}: {self.runs} runs (+{self.warmup} warm-up), graph optimizations {self.optimization}; "
            f"mean run {self.run_us:.1f} µs, kernels {self.kernel_us:.1f} µs, unmatched {self.unmatched_us:.1f} µs "
            f"({pct(self.unmatched_us, self.kernel_us)})"
            + (
                f", control-flow overhead {self.control_flow_us:.1f} µs ({pct(self.control_flow_us, self.kernel_us)})"
                if self.control_flow_us
                else ""
            ),
            f"graph run: {self.graph_description()}; providers: {self.provider_description()}",
        ]
        if self.retagged:
            lines.append("note: the model has untagged nodes; tags were decided in memory")
        lines += [f"note: {terminal(n)}" for n in self.notes]
        lines += [f"note: {self.choices_note()}"] if self.choices_note() else []
        return "\n".join(lines)

    def graph_description(self) -> str:
        """Which graph the kernels were matched to."""
        if self.graph_written:
            return f"onnxruntime's optimized graph, {self.graph_nodes} nodes (the file: {self.file_nodes})"
        return f"the file's {self.graph_nodes} nodes"

    def provider_description(self) -> str:
        """The providers asked for, in order, with their share of the kernel time."""
        return ", ".join(
            terminal(p) + (f" {pct(self.provider_us[p], self.kernel_us)}" if p in self.provider_us else " (no kernel)")
            for p in [*self.providers, *(p for p in self.provider_us if p not in self.providers)]
        )

    def choices_note(self) -> str:
        """How many nodes' tags are choices, and which mark says so ('' when none is)."""
        chosen = sum(m.certainty.chosen for m in self.modules)
        if not chosen:
            return ""
        nodes = sum(m.certainty.nodes for m in self.modules)
        marked = sum(m.certainty.mostly_chosen for m in self.modules)
        return (
            f"{chosen} of {nodes} nodes are tagged by the tagger's choice, not by evidence or facts; "
            f"{marked} modules whose own nodes are mostly chosen are marked {MARK}"
        )

    def tree(self, depth: int | None = None) -> str:
        """The module tree with self and total time and share, down to `depth` levels."""
        shown = [m for m in self.modules if depth is None or _depth(m.module) <= depth]
        labels = [("  " * _depth(m.module)) + terminal(_label(m.module)) + m.certainty.mark for m in shown]
        width = max([len(label) for label in labels] + [6])
        several = len(self.provider_us) > 1
        lines = [f"{'module':<{width}}  {'self µs':>10}  {'total µs':>10}  {'share':>6}  {'nodes':>5}  {'chosen':>7}"]
        lines[0] += "  providers" if several else ""
        for label, m in zip(labels, shown, strict=True):
            lines.append(
                f"{label:<{width}}  {m.self_us:>10.1f}  {m.total_us:>10.1f}  {100 * m.share:>5.1f}%  {m.nodes:>5}  {_chosen(m):>7}"
                + (f"  {m.provider_shares()}" if several else "")
            )
        if self.unmatched_us:
            share = 100 * self.unmatched_us / self.kernel_us
            label = "(unmatched kernels)"
            time = f"{self.unmatched_us:>10.1f}"
            lines.append(f"{label:<{width}}  {time}  {time}  {share:>5.1f}%  {len(self.unmatched):>5}")
        if self.control_flow_us:
            share = 100 * self.control_flow_us / self.kernel_us
            label = "(control-flow overhead)"
            time = f"{self.control_flow_us:>10.1f}"
            lines.append(f"{label:<{width}}  {time}  {time}  {share:>5.1f}%  {'':>5}")
        return "\n".join(lines)

    def to_text(self, depth: int | None = None) -> str:
        parts = [self.summary(), "", self.tree(depth), "", "slowest nodes:"]
        for node in self.nodes[:10]:
            parts.append(
                f"  {node.us:>10.1f} µs  {terminal(node.op_type):<20} {terminal(node.name) or '(unnamed)'}  "
                f"[{terminal(node.module) or '(root)'}]"
            )
        return "\n".join(parts)

    def to_markdown(self) -> str:
        rows = [
            f"# Latency by module: `{markdown(self.model)}`",
            "",
            f"{self.runs} runs after {self.warmup} warm-up, graph optimizations {self.optimization}: mean run "
            f"{self.run_us:.1f} µs, kernels {self.kernel_us:.1f} µs, unmatched kernels {self.unmatched_us:.1f} µs"
            + (f", control-flow overhead {self.control_flow_us:.1f} µs." if self.control_flow_us else "."),
            "",
            f"Graph run: {markdown(self.graph_description())}. Providers: {markdown(self.provider_description())}.",
            "",
        ]
        if self.retagged:
            rows += ["> the model has untagged nodes; tags were decided in memory", ""]
        if self.choices_note():
            rows += [f"> {markdown(self.choices_note())}", ""]
        rows += [
            "| module | self µs | total µs | share | nodes | own nodes by kind | providers |",
            "|---|---:|---:|---:|---:|---|---|",
        ]
        for m in self.modules:
            indent = "&nbsp;&nbsp;" * _depth(m.module)
            label = markdown(_label(m.module) + m.certainty.mark)
            own = m.certainty.counts() if m.certainty.nodes else ""
            rows.append(
                f"| {indent}{label} | {m.self_us:.1f} | {m.total_us:.1f} | {100 * m.share:.1f}% | {m.nodes} | {own} "
                f"| {markdown(m.provider_shares())} |"
            )
        if self.unmatched:
            rows += ["", "## Unmatched kernels", "", "| µs | kernel | why |", "|---:|---|---|"]
            rows += [
                f"| {us:.1f} | {markdown(name)} | {markdown(self.unmatched_why.get(name, ''))} |"
                for name, us in list(self.unmatched.items())[:LIST_LIMIT]
            ]
        rows += ["", "## Slowest kernels", "", "| µs | op | node | module | provider |", "|---:|---|---|---|---|"]
        rows += [
            f"| {n.us:.1f} | {markdown(n.op_type)} | {markdown(n.name) or '(unnamed)'} | {markdown(n.module) or '(root)'} "
            f"| {markdown(_short(n.provider))} |"
            for n in self.nodes[:LIST_LIMIT]
        ]
        return "\n".join(rows) + "\n"


def profile(
    model: str | os.PathLike,
    inputs: str | os.PathLike | None = None,
    runs: int = 10,
    warmup: int = 1,
    dim: DimSettings | int | str | dict = 1,
    optimize: str | bool = "all",
    threads: int = 0,
    trace: str | os.PathLike | None = None,
    provider: str | Sequence[str] = DEFAULT_PROVIDER,
    timeline: str | os.PathLike | None = None,
    speedscope: str | os.PathLike | None = None,
) -> ProfileReport:
    """Run `model` `warmup + runs` times in onnxruntime with profiling on; time per module.

    `inputs`: an `.npz` of arrays named after the graph inputs (default: feeds generated from the
    model, dynamic sizes from `dim`: N for all, `"NAME=VALUE,..."`, a dict or `DimSettings` per name).
    `optimize`: onnxruntime's graph optimization level, `off`, `basic`, `extended`, `layout` or
    `all` (the default, what a session runs; True is `all`, False `off`): kernels are attributed
    on the graph onnxruntime executed (`tagger.executed`). `threads`: intra-op threads (0:
    onnxruntime's default). `provider`: execution providers in order (`"A,B"` or a list; the
    suffix `ExecutionProvider` may be left out). `trace` keeps the raw onnxruntime trace at that
    path; `timeline` writes the module trace (Trace Event Format) and `speedscope` speedscope's
    format (`tagger.timeline`).
    """
    for name, value, least in (("runs", runs, 1), ("warmup", warmup, 0), ("threads", threads, 0)):
        check_integer(name, value, least)
    level = optimization_level(optimize)
    providers = provider_names(provider)
    settings = dim if isinstance(dim, DimSettings) else parse_dim_option(dim)
    source = Path(model)
    proto = load_model(source)
    file_tags = model_tags(proto, base_dir=source.parent)
    names = _run_names(file_tags.index)
    ran = _renamed(proto, names.run_names) if names.changed else proto
    with tempfile.TemporaryDirectory(prefix="tagger-profile-") as workdir:
        session = _Session(source, ran, names.changed, level, providers, threads, trace, Path(workdir), runs + warmup)
        feeds, events = first_that_runs(model_feeds(proto, inputs, settings, base_dir=source.parent), session.events)
        graph = executed_graph(file_tags, names.run_names, ran, source, Path(workdir))
    measured = _measured(events, warmup)
    report = _Attribution(graph, runs, session.compiled).report(source.name, measured, session.used or list(providers))
    report.runs, report.warmup, report.optimization = runs, warmup, str(level)
    report.retagged, report.file_nodes = file_tags.retagged, len(file_tags.nodes)
    report.inputs = {name: list(array.shape) for name, array in feeds.items()}
    report.dims = dict(feeds.dims)
    report.trace = None if trace is None else str(trace)
    report.notes = _notes(names, graph, session.notes, report)
    _write_views(report, measured, timeline, speedscope)
    return report


def provider_names(provider: str | Sequence[str]) -> tuple[str, ...]:
    """Execution provider names in order, from `"A,B"` or a list; `CUDA` means `CUDAExecutionProvider`."""
    if isinstance(provider, str):
        parts = provider.split(",")
    elif isinstance(provider, list | tuple) and all(isinstance(p, str) for p in provider):
        parts = list(provider)
    else:
        raise InputError(f"--provider takes provider names (A or A,B), got {provider!r}")
    names = [p.strip() for p in parts if p.strip()]
    if not names:
        raise InputError(f"--provider takes provider names (A or A,B), got {provider!r}")
    return tuple(dict.fromkeys(n if n.endswith(_PROVIDER_SUFFIX) else n + _PROVIDER_SUFFIX for n in names))


def _notes(names: _RunNames, graph: ExecutedGraph, session_notes: list[str], report: ProfileReport) -> list[str]:
    notes = list(session_notes)
    if names.stand_ins:
        notes.append(f"{names.stand_ins} unnamed or duplicate-named nodes ran under stand-in names")
    if names.qualified:
        notes.append(f"{names.qualified} body nodes whose names recur in another body ran as <name>@<body>")
    if graph.written:
        notes.append(
            f"kernels attributed on the graph onnxruntime executed ({graph.nodes} nodes; the file has "
            f"{report.file_nodes}), tagged with the file as its reference"
        )
    notes += graph.notes
    if report.unmatched:
        notes.append(f"{len(report.unmatched)} kernels match no node of the graph that ran: " + _listed(report.unmatched_why))
    groups = sum(1 for n in report.nodes if n.nodes > 1)
    if groups:
        notes.append(f"{groups} kernels stand for several nodes each and count for the common module of their nodes")
    if report.elsewhere:
        us = sum(n.us for n in report.elsewhere)
        notes.append(
            f"{len(report.elsewhere)} kernels ({us:.1f} µs) ran on another provider than {report.providers[0]}: "
            + ", ".join(sorted({n.provider for n in report.elsewhere}))
        )
    if report.control_flow_us:
        owners = sum(1 for n in report.nodes if n.control_flow)
        notes.append(
            f"{owners} control-flow nodes: their bodies' kernels count for the body nodes; their own time "
            "(the body executor's work between kernels) is control-flow overhead, charged to no module"
        )
    return notes


def _listed(why: dict[str, str]) -> str:
    shown = [f"{terminal(name)} ({reason})" for name, reason in list(why.items())[:LIST_LIMIT]]
    more = len(why) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def _write_views(report: ProfileReport, measured: _Measured, timeline, speedscope) -> None:
    """Write the module trace and the speedscope file, when asked."""
    if timeline is None and speedscope is None:
        return
    module_of = {n.name: (n.module, n.op_type) for n in report.nodes if not n.control_flow}
    drawn = []
    for kernel in measured.kernels:
        if kernel.name in report.unmatched:
            drawn.append(DrawnKernel(kernel.run, kernel.ts, kernel.dur, kernel.name, kernel.op, None, kernel.provider))
        elif kernel.name in module_of:
            module, op = module_of[kernel.name]
            drawn.append(DrawnKernel(kernel.run, kernel.ts, kernel.dur, kernel.name, op, module, kernel.provider))
    spans = steps(drawn, measured.runs)
    if timeline is not None:
        write_json(trace_events(spans, report.model), timeline)
        report.timeline = str(timeline)
    if speedscope is not None:
        write_json(speedscope_document(spans, report.model), speedscope)
        report.speedscope = str(speedscope)


class _Attribution:
    """Kernel times per run, attributed to the nodes and modules of the graph that ran."""

    def __init__(self, graph: ExecutedGraph, runs: int, compiled: bool = False) -> None:
        self.graph = graph
        self.runs = runs
        self.compiled = compiled
        index = graph.tags.index
        self.owners = {scope.owner for scope in index.graphs if scope.owner is not None}

    def report(self, model: str, measured: _Measured, providers: list[str]) -> ProfileReport:
        self.graph = graph = narrowed(self.graph, set(measured.totals))
        runs = self.runs
        matched: dict[str, Counter[str]] = {}
        unmatched: dict[str, float] = {}
        for name, by_provider in measured.totals.items():
            if name in graph.kernels:
                matched[name] = Counter({p: us / runs for p, us in by_provider.items()})
            else:
                unmatched[name] = sum(by_provider.values()) / runs
        own_us = _without_bodies(graph, {name: sum(c.values()) for name, c in matched.items()})
        self_us: Counter[str] = Counter()
        self_providers: dict[str, Counter[str]] = defaultdict(Counter)
        node_times: list[NodeTime] = []
        for name, by_provider in matched.items():
            time = self._node_time(name, own_us[name], by_provider)
            node_times.append(time)
            if not time.control_flow:  # a control-flow node's own time is overhead (point 5)
                self_us[time.module] += time.us
                self_providers[time.module].update(by_provider)
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
            modules=_module_times(self_us, self_providers, own, {t.module: t.tag for t in tags}, kernel_us),
            nodes=nodes,
            unmatched=dict(sorted(unmatched.items(), key=lambda item: -item[1])),
            unmatched_why={name: self._why(name, measured.providers.get(name, "")) for name in unmatched},
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

    def _why(self, name: str, provider: str) -> str:
        if self.compiled and provider != "CPUExecutionProvider":
            return f"a partition {provider} compiled; onnxruntime does not name its nodes"
        if self.graph.written:
            return f"no node of the graph onnxruntime wrote is named so (on {provider})"
        return f"no node of the file is named so (on {provider}); fused or renamed by onnxruntime"


@dataclass(frozen=True)
class _RunNames:
    """A unique name per indexed node, and how many were changed (qualified by body, stand-ins)."""

    run_names: list[str]
    qualified: int
    stand_ins: int

    @property
    def changed(self) -> bool:
        return bool(self.qualified or self.stand_ins)


def _run_names(index: ModelIndex) -> _RunNames:
    """Own names where unique; `<name>@<body>` where unique only inside the body; else a stand-in."""
    names = [view.name for view in index.views]
    counts = Counter(names)
    per_graph = Counter(zip(names, index.graph_of, strict=True))
    run_names: list[str] = []
    qualified = stand_ins = 0
    for node_id, name in enumerate(names):
        graph_id = index.graph_of[node_id]
        if name and counts[name] == 1 and not name.startswith(_STAND_IN):
            run_names.append(name)
        elif name and per_graph[name, graph_id] == 1 and index.graphs[graph_id].kind == "subgraph":
            run_names.append(f"{name}@{_STAND_IN}body{graph_id}")
            qualified += 1
        else:
            run_names.append(f"{_STAND_IN}{node_id}")
            stand_ins += 1
    return _RunNames(run_names, qualified, stand_ins)


def _without_bodies(graph: ExecutedGraph, kernel_us: dict[str, float]) -> dict[str, float]:
    """Each control-flow kernel's time less the time of the kernels its bodies ran (never below 0):
    its kernel encloses theirs, and they are counted under the body nodes."""
    index = graph.tags.index
    body_us: Counter[int] = Counter()
    for name, us in kernel_us.items():
        owners = {index.graphs[index.graph_of[i]].owner for i in graph.kernels[name]} - {None}
        for owner in owners:
            body_us[owner] += us / len(owners)
    return {name: max(0.0, us - sum(body_us.get(i, 0.0) for i in graph.kernels[name])) for name, us in kernel_us.items()}


class _Session:
    """Runs the model in onnxruntime sessions with profiling on, one per feeds tried."""

    def __init__(
        self,
        source: Path,
        ran: onnx.ModelProto,
        renamed: bool,
        level: Level,
        providers: tuple[str, ...],
        threads: int,
        trace: str | os.PathLike | None,
        workdir: Path,
        runs: int,
    ) -> None:
        self.runs = runs
        self.source, self.ran, self.renamed = source, ran, renamed
        self.level, self.providers, self.threads = level, providers, threads
        self.trace, self.workdir = trace, workdir
        self.used: list[str] = []
        """The providers the last session used, in order (onnxruntime adds the CPU provider)."""
        self.notes: list[str] = []
        self.compiled = False
        """Whether onnxruntime refused to write its graph: a provider compiled partitions."""

    def events(self, feeds: Feeds) -> list[dict]:
        """Run the model on `feeds` (warm-up and measured runs) and return the trace's events."""
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependency("profiling", "onnxruntime") from None
        _check_available(self.providers, ort.get_available_providers())
        remove_written(self.workdir)
        session = self._session(ort, write=True)
        arrays = dict(feeds)
        try:
            for _ in range(self.runs):
                session.run(None, arrays)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise refusal(self.ran, feeds, exc) from None
        trace_file = Path(session.end_profiling())
        text = trace_file.read_text(encoding="utf-8")
        trace_file.unlink()
        if self.trace is not None:
            save_text(text, Path(self.trace))
        return json.loads(text)

    def _session(self, ort, write: bool):
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(self.workdir / "trace")
        options.log_severity_level = 4  # a refused run is reported in one line, not logged too
        options.intra_op_num_threads = self.threads
        session_options(options, self.level, self.workdir, write)
        payload: str | bytes = str(self.source)
        if self.renamed:
            payload = self.ran.SerializeToString()
            options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(self.source.parent))
        try:
            session = ort.InferenceSession(payload, options, providers=list(self.providers))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            if write and self.level.fuses and refuses_to_write(exc):
                self.compiled = True
                self.notes.append(
                    "onnxruntime does not write a graph holding partitions a provider compiled: kernels are "
                    "matched to the file's nodes, a partition's kernel is unmatched"
                )
                return self._session(ort, write=False)
            refused = load_refusal(self.source, exc)
            if self.level.fuses:  # a file onnxruntime loads only unoptimized is still bad input, as sessions optimize
                raise InputError(
                    f"{refused} (graph optimizations {self.level.name}; --optimize off profiles it unoptimized)"
                ) from None
            raise refused from None
        self.used = list(session.get_providers())
        return session


def _check_available(providers: tuple[str, ...], available: list[str]) -> None:
    missing = [p for p in providers if p not in available]
    if missing:
        raise InputError(f"--provider {missing[0]} is not in this onnxruntime; it has {', '.join(available)}")


def _renamed(model: onnx.ModelProto, run_names: list[str]) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for node, name in zip(build_index(copy).nodes, run_names, strict=True):
        node.name = name
    return copy


@dataclass(frozen=True)
class _Kernel:
    """One kernel event of a measured run."""

    run: int
    ts: float
    dur: float
    name: str
    op: str
    provider: str


@dataclass
class _Measured:
    """The kernel events of the measured runs, their sums per node name and provider, the runs."""

    kernels: list[_Kernel]
    runs: list[tuple[float, float]]
    totals: dict[str, Counter[str]]
    providers: dict[str, str]
    """Kernel name -> the provider it ran on (the last event's)."""

    @property
    def run_us(self) -> float:
        return sum(end - start for start, end in self.runs) / len(self.runs)


def _measured(events: list[dict], warmup: int) -> _Measured:
    """The kernel events inside the measured runs (after `warmup`), and those runs."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    measured = runs[warmup:]
    if not measured:
        raise TaggerError("the onnxruntime trace holds no measured model_run")
    starts = [start for start, _ in measured]
    kernels: list[_Kernel] = []
    totals: dict[str, Counter[str]] = defaultdict(Counter)
    providers: dict[str, str] = {}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith(_KERNEL_SUFFIX):
            continue
        run = _run_of(event["ts"], starts, measured)
        if run is None:
            continue
        args = event.get("args", {})
        name, provider = kernel_name(event, _KERNEL_SUFFIX), str(args.get("provider", ""))
        kernels.append(_Kernel(run, float(event["ts"]), float(event["dur"]), name, str(args.get("op_name", "")), provider))
        totals[name][provider] += float(event["dur"])
        providers[name] = provider
    return _Measured(kernels, measured, dict(totals), providers)


def _run_of(ts: float, starts: list[float], runs: list[tuple[float, float]]) -> int | None:
    position = bisect_right(starts, ts) - 1
    return position if position >= 0 and ts <= runs[position][1] else None


def _module_times(
    self_us: Counter[str],
    self_providers: dict[str, Counter[str]],
    own: dict[str, Certainty],
    tag_of: dict[str, str],
    kernel_us: float,
) -> list[ModuleTime]:
    total_us: Counter[str] = Counter()
    total_nodes: Counter[str] = Counter()
    providers: dict[str, Counter[str]] = defaultdict(Counter)
    for module in set(own) | set(self_us):
        for path in [*ancestors(module), module]:
            total_us[path] += self_us.get(module, 0.0)
            total_nodes[path] += own[module].nodes if module in own else 0
            providers[path].update(self_providers.get(module, {}))
    children: dict[str, list[str]] = defaultdict(list)
    for path in total_nodes:
        if path:
            children[path.rpartition(".")[0]].append(path)
    ordered: list[ModuleTime] = []

    def visit(path: str) -> None:
        share = total_us[path] / kernel_us if kernel_us else 0.0
        mine = own.get(path, Certainty())
        time = ModuleTime(path, tag_of.get(path, ""), total_nodes[path], self_us.get(path, 0.0), total_us[path], share, mine)
        time.providers.update(providers[path].most_common())
        ordered.append(time)
        for child in sorted(children.get(path, []), key=natural):
            visit(child)

    if total_nodes:
        visit("")
    return ordered


def _chosen(m: ModuleTime) -> str:
    """`chosen/own` nodes of a module with own nodes, else empty."""
    return f"{m.certainty.chosen}/{m.certainty.nodes}" if m.certainty.nodes else ""


def _short(provider: str) -> str:
    """`CPU` for `CPUExecutionProvider`."""
    return provider.removesuffix(_PROVIDER_SUFFIX) or provider


def _depth(module: str) -> int:
    return module.count(".") + 1 if module else 0


def _label(module: str) -> str:
    return module.rpartition(".")[2] if module else "(root)"
