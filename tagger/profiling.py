"""`tagger profile MODEL`: latency per module, from onnxruntime's own profiler.

How the numbers are made:

1. The model runs in onnxruntime (CPU) with `SessionOptions.enable_profiling`; its JSON trace
   holds one `cat == "Node"` event per executed kernel, named `<node name>_kernel_time`, with
   its duration in microseconds. Only events inside the measured `model_run`s count (the first
   `warmup` runs allocate memory and are left out); times are means per run.
2. Graph optimizations are off by default (`ORT_DISABLE_ALL`), so every kernel is one node of
   the file under its own name. With `optimize=True` onnxruntime fuses and renames nodes; a
   kernel whose name is no node's is counted under `unmatched`, never guessed.
3. Every kernel must name one node, so nodes run under unique names in an in-memory copy when
   theirs are not: a body node whose name recurs in another body (the two branches of an
   optimum merged decoder repeat every name) runs as `<name>@<body>`; a node without a name, or
   sharing one inside its own graph, under a stand-in (onnxruntime would call it `<op>_<index>`,
   which can collide with real names). Weights stay in their external data file.
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
   holds the executor's own work between kernels.
7. Inputs: an `.npz` file whose arrays are named after the graph inputs, or feeds generated from
   the model (`tagger.feeds`: shared symbols, sizes tied to weights, sizes stated by the config
   files beside the model, `--dim`; when onnxruntime refuses them, the plan's other image sizes
   are tried, each in a session of its own, and the report shows the sizes that ran); a run onnxruntime
   refuses is bad input (`tagger.feeds.refusal`), and so is a model it cannot load
   (`tagger.feeds.load_refusal`: a tool wrote a file onnxruntime refuses).

onnxruntime is imported only when a profile runs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from bisect import bisect_right
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from tagger.certainty import MARK, Certainty, by_module
from tagger.errors import MissingDependency, TaggerError
from tagger.feeds import DimSettings, Feeds, first_that_runs, load_refusal, model_feeds, parse_dim_option, refusal
from tagger.index import ModelIndex, build_index
from tagger.modelio import load_model, save_text
from tagger.nodetags import model_tags
from tagger.options import check_integer
from tagger.paths import ancestors
from tagger.text import LIST_LIMIT, JsonReport, markdown, natural, pct, terminal

__all__ = ["ModuleTime", "NodeTime", "ProfileReport", "profile"]

_KERNEL_SUFFIX = "_kernel_time"
_STAND_IN = "_tagger_profile_node_"


@dataclass(frozen=True)
class NodeTime:
    """Mean kernel time of one node per run."""

    name: str
    op_type: str
    module: str
    us: float


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

    def summary(self) -> str:
        lines = [
            f"{terminal(self.model)}: {self.runs} runs (+{self.warmup} warm-up), graph optimizations {self.optimization}; "
            f"mean run {self.run_us:.1f} µs, kernels {self.kernel_us:.1f} µs, unmatched {self.unmatched_us:.1f} µs "
            f"({pct(self.unmatched_us, self.kernel_us)})"
            + (
                f", control-flow overhead {self.control_flow_us:.1f} µs ({pct(self.control_flow_us, self.kernel_us)})"
                if self.control_flow_us
                else ""
            )
        ]
        if self.retagged:
            lines.append("note: the model has untagged nodes; tags were decided in memory")
        lines += [f"note: {terminal(n)}" for n in self.notes]
        lines += [f"note: {self.choices_note()}"] if self.choices_note() else []
        return "\n".join(lines)

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
        lines = [f"{'module':<{width}}  {'self µs':>10}  {'total µs':>10}  {'share':>6}  {'nodes':>5}  {'chosen':>7}"]
        for label, m in zip(labels, shown, strict=True):
            lines.append(
                f"{label:<{width}}  {m.self_us:>10.1f}  {m.total_us:>10.1f}  {100 * m.share:>5.1f}%  {m.nodes:>5}  {_chosen(m):>7}"
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
        ]
        if self.retagged:
            rows += ["> the model has untagged nodes; tags were decided in memory", ""]
        if self.choices_note():
            rows += [f"> {markdown(self.choices_note())}", ""]
        rows += ["| module | self µs | total µs | share | nodes | own nodes by kind |", "|---|---:|---:|---:|---:|---|"]
        for m in self.modules:
            indent = "&nbsp;&nbsp;" * _depth(m.module)
            label = markdown(_label(m.module) + m.certainty.mark)
            own = m.certainty.counts() if m.certainty.nodes else ""
            rows.append(f"| {indent}{label} | {m.self_us:.1f} | {m.total_us:.1f} | {100 * m.share:.1f}% | {m.nodes} | {own} |")
        rows += ["", "## Slowest nodes", "", "| µs | op | node | module |", "|---:|---|---|---|"]
        rows += [
            f"| {n.us:.1f} | {markdown(n.op_type)} | {markdown(n.name) or '(unnamed)'} | {markdown(n.module) or '(root)'} |"
            for n in self.nodes[:LIST_LIMIT]
        ]
        return "\n".join(rows) + "\n"


def profile(
    model: str | os.PathLike,
    inputs: str | os.PathLike | None = None,
    runs: int = 10,
    warmup: int = 1,
    dim: DimSettings | int | str | dict = 1,
    optimize: bool = False,
    threads: int = 0,
    trace: str | os.PathLike | None = None,
) -> ProfileReport:
    """Run `model` `warmup + runs` times in onnxruntime with profiling on; time per module.

    `inputs`: an `.npz` of arrays named after the graph inputs (default: feeds generated from the
    model, dynamic sizes from `dim`: N for all, `"NAME=VALUE,..."`, a dict or `DimSettings` per name). `optimize=True` lets
    onnxruntime fuse nodes (kernels then may not match nodes). `threads`: intra-op threads
    (0: onnxruntime's default). `trace` keeps the raw onnxruntime trace at that path.
    """
    for name, value, least in (("runs", runs, 1), ("warmup", warmup, 0), ("threads", threads, 0)):
        check_integer(name, value, least)
    settings = dim if isinstance(dim, DimSettings) else parse_dim_option(dim)
    source = Path(model)
    proto = load_model(source)
    tags = model_tags(proto, base_dir=source.parent)
    names = _run_names(tags.index)
    run_names = names.run_names if names.changed else None
    feeds, events = first_that_runs(
        model_feeds(proto, inputs, settings, base_dir=source.parent),
        lambda feeds: _profiled_events(source, proto, run_names, feeds, runs + warmup, optimize, threads, trace),
    )
    kernels, run_us = _measured(events, warmup)

    node_of = {name: i for i, name in enumerate(names.run_names)}
    node_us: dict[int, float] = {}
    unmatched: dict[str, float] = {}
    for name, total in kernels.items():
        node_id = node_of.get(name)
        if node_id is None:
            unmatched[name] = total / runs
        else:
            node_us[node_id] = total / runs
    node_us = _without_bodies(tags.index, node_us)
    owners = {scope.owner for scope in tags.index.graphs if scope.owner is not None}
    self_us: Counter[str] = Counter()
    node_times: list[NodeTime] = []
    for node_id, mean in node_us.items():
        tag = tags.nodes[node_id]
        if node_id not in owners:  # a control-flow node's own time is overhead (point 5)
            self_us[tag.module] += mean
        node_times.append(NodeTime(tag.name, tag.op_type, tag.module, mean))
    control_us = sum(node_us.get(owner, 0.0) for owner in owners)
    own = by_module((t.module for t in tags.nodes), (t.kind for t in tags.nodes))
    kernel_us = sum(node_us.values()) + sum(unmatched.values())
    tag_of = {t.module: t.tag for t in tags.nodes}
    report = ProfileReport(
        model=source.name,
        runs=runs,
        warmup=warmup,
        optimization="on (ORT_ENABLE_ALL)" if optimize else "off (ORT_DISABLE_ALL)",
        retagged=tags.retagged,
        kernel_us=kernel_us,
        run_us=run_us,
        unmatched_us=sum(unmatched.values()),
        control_flow_us=control_us,
        modules=_module_times(self_us, own, tag_of, kernel_us),
        nodes=sorted(node_times, key=lambda n: -n.us),
        unmatched=dict(sorted(unmatched.items(), key=lambda item: -item[1])),
        inputs={name: list(array.shape) for name, array in feeds.items()},
        dims=dict(feeds.dims),
        trace=None if trace is None else str(trace),
    )
    if names.stand_ins:
        report.notes.append(f"{names.stand_ins} unnamed or duplicate-named nodes ran under stand-in names")
    if names.qualified:
        report.notes.append(f"{names.qualified} body nodes whose names recur in another body ran as <name>@<body>")
    if unmatched:
        report.notes.append(f"{len(unmatched)} kernels match no node of the file (fused or renamed by onnxruntime)")
    if owners:
        report.notes.append(
            f"{len(owners)} control-flow nodes: their bodies' kernels count for the body nodes; their own time "
            "(the body executor's work between kernels) is control-flow overhead, charged to no module"
        )
    return report


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


def _without_bodies(index: ModelIndex, node_us: dict[int, float]) -> dict[int, float]:
    """Each control-flow node's time less the time of the kernels its bodies ran (never below 0):
    its kernel encloses theirs, and they are counted under the body nodes."""
    body_us: Counter[int] = Counter()
    for node_id, us in node_us.items():
        owner = index.graphs[index.graph_of[node_id]].owner
        if owner is not None:
            body_us[owner] += us
    return {node_id: max(0.0, us - body_us.get(node_id, 0.0)) for node_id, us in node_us.items()}


def _profiled_events(
    source: Path,
    model: onnx.ModelProto,
    run_names: list[str] | None,
    feeds: Feeds,
    runs: int,
    optimize: bool,
    threads: int,
    trace: str | os.PathLike | None,
) -> list[dict]:
    """Run the model with profiling on and return the trace's events."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependency("profiling", "onnxruntime") from None
    workdir = Path(tempfile.mkdtemp(prefix="tagger-profile-"))
    try:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(workdir / "trace")
        options.log_severity_level = 4  # a refused run is reported in one line, not logged too
        options.intra_op_num_threads = threads
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        )
        payload: str | bytes = str(source)
        if run_names is not None:
            payload = _renamed(model, run_names)
            options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(source.parent))
        try:
            session = ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise load_refusal(source, exc) from None
        arrays = dict(feeds)
        try:
            for _ in range(runs):
                session.run(None, arrays)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise refusal(model, feeds, exc) from None
        trace_file = Path(session.end_profiling())
        text = trace_file.read_text(encoding="utf-8")
        if trace is not None:
            save_text(text, Path(trace))
        return json.loads(text)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _renamed(model: onnx.ModelProto, run_names: list[str]) -> bytes:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for node, name in zip(build_index(copy).nodes, run_names, strict=True):
        node.name = name
    return copy.SerializeToString()


def _measured(events: list[dict], warmup: int) -> tuple[dict[str, float], float]:
    """Summed kernel µs per node name inside the measured runs, and the mean run µs."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    measured = runs[warmup:]
    if not measured:
        raise TaggerError("the onnxruntime trace holds no measured model_run")
    starts = [start for start, _ in measured]
    kernels: dict[str, float] = defaultdict(float)
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith(_KERNEL_SUFFIX):
            continue
        if _inside(event["ts"], starts, measured):
            kernels[name[: -len(_KERNEL_SUFFIX)]] += float(event["dur"])
    return dict(kernels), sum(end - start for start, end in measured) / len(measured)


def _inside(ts: float, starts: list[float], runs: list[tuple[float, float]]) -> bool:
    position = bisect_right(starts, ts) - 1
    return position >= 0 and ts <= runs[position][1]


def _module_times(self_us: Counter[str], own: dict[str, Certainty], tag_of: dict[str, str], kernel_us: float) -> list[ModuleTime]:
    total_us: Counter[str] = Counter()
    total_nodes: Counter[str] = Counter()
    for module in set(own) | set(self_us):
        for path in [*ancestors(module), module]:
            total_us[path] += self_us.get(module, 0.0)
            total_nodes[path] += own[module].nodes if module in own else 0
    children: dict[str, list[str]] = defaultdict(list)
    for path in total_nodes:
        if path:
            children[path.rpartition(".")[0]].append(path)
    ordered: list[ModuleTime] = []

    def visit(path: str) -> None:
        share = total_us[path] / kernel_us if kernel_us else 0.0
        mine = own.get(path, Certainty())
        time = ModuleTime(path, tag_of.get(path, ""), total_nodes[path], self_us.get(path, 0.0), total_us[path], share, mine)
        ordered.append(time)
        for child in sorted(children.get(path, []), key=natural):
            visit(child)

    if total_nodes:
        visit("")
    return ordered


def _chosen(m: ModuleTime) -> str:
    """`chosen/own` nodes of a module with own nodes, else empty."""
    return f"{m.certainty.chosen}/{m.certainty.nodes}" if m.certainty.nodes else ""


def _depth(module: str) -> int:
    return module.count(".") + 1 if module else 0


def _label(module: str) -> str:
    return module.rpartition(".")[2] if module else "(root)"
