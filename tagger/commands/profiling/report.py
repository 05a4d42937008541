"""`ProfileReport`: where the time of a model's runs went, by module, as text, Markdown and JSON.

1. `NodeTime` is one kernel's mean time per run, with the nodes it stands for and its provider.
2. `ModuleTime` is a module's `self` and `total` time, its share of the summed kernel time, its
   own nodes by kind (`tagger.reporting.certainty`: a module whose own nodes are mostly chosen is marked),
   and its time by provider.
3. The report's summary names the level that ran, the graph the kernels were matched to and the
   providers' shares; unmatched kernels and control-flow overhead are shown apart, so the
   top-level modules' shares, the unmatched share and that overhead add up to 100%.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tagger.commands.profiling.comparison import OptimizationComparison
from tagger.reporting.certainty import MARK, Certainty
from tagger.text import LIST_LIMIT, JsonReport, markdown, pct, terminal

__all__ = ["PROVIDER_SUFFIX", "ModuleTime", "NodeTime", "ProfileReport", "depth_of", "short_provider"]

PROVIDER_SUFFIX = "ExecutionProvider"


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
    provider_nodes: dict[str, int] = field(default_factory=dict)
    """The subtree's nodes by the provider their kernel ran on, most first (nodes no kernel ran
    are in none)."""

    def provider_shares(self) -> str:
        """`CUDA 80% (30 nodes) / CPU 20% (3 nodes)`: the subtree's time and nodes by provider ('' when none ran)."""
        names = list(dict.fromkeys([*self.providers, *self.provider_nodes]))
        return " / ".join(
            f"{short_provider(p)} {pct(self.providers.get(p, 0.0), self.total_us)} ({self.provider_nodes.get(p, 0)} nodes)"
            for p in names
        )


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
    """Whether the kernels were attributed on the graph onnxruntime wrote (`tagger.commands.profiling.executed`)."""
    providers: list[str] = field(default_factory=list)
    """The session's execution providers, in order (the first is the one asked for first)."""
    provider_us: dict[str, float] = field(default_factory=dict)
    """Mean kernel time per run by provider."""
    elsewhere: list[NodeTime] = field(default_factory=list)
    """Kernels that ran on another provider than the first listed, slowest first."""
    perfetto: str | None = None
    """The Trace Event Format file written (`--perfetto`, alias `--timeline`)."""
    speedscope: str | None = None
    node_data: str | None = None
    """The Model Explorer node data file written."""
    comparison: OptimizationComparison | None = None
    """Per module, the time with graph optimizations off and at the level that ran (`compare_unoptimized`)."""

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
        shown = [m for m in self.modules if depth is None or depth_of(m.module) <= depth]
        labels = [("  " * depth_of(m.module)) + terminal(_label(m.module)) + m.certainty.mark for m in shown]
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
        if self.comparison is not None:
            parts += ["", self.comparison.table(depth)]
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
            indent = "&nbsp;&nbsp;" * depth_of(m.module)
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
            f"| {markdown(short_provider(n.provider))} |"
            for n in self.nodes[:LIST_LIMIT]
        ]
        if self.comparison is not None:
            rows += ["", self.comparison.to_markdown().rstrip("\n")]
        return "\n".join(rows) + "\n"


def _chosen(m: ModuleTime) -> str:
    """`chosen/own` nodes of a module with own nodes, else empty."""
    return f"{m.certainty.chosen}/{m.certainty.nodes}" if m.certainty.nodes else ""


def short_provider(provider: str) -> str:
    """`CPU` for `CPUExecutionProvider`."""
    return provider.removesuffix(PROVIDER_SUFFIX) or provider


def depth_of(module: str) -> int:
    return module.count(".") + 1 if module else 0


def _label(module: str) -> str:
    return module.rpartition(".")[2] if module else "(root)"
