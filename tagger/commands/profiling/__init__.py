"""`tagger profile MODEL`: latency per module, from onnxruntime's own profiler.

How the numbers are made:

1. The model runs in onnxruntime (`provider`: the CPU provider unless told) with
   `SessionOptions.enable_profiling`; its JSON trace holds one `cat == "Node"` event per executed
   kernel, named `<node name>_kernel_time`, with its duration in microseconds and its provider
   (`args.provider`). Only events inside the measured `model_run`s count (the first `warmup`
   runs allocate memory and are left out); times are means per run.
2. Graph optimizations run at the session's default level (`ORT_ENABLE_ALL`) unless told
   (`optimize`: off, basic, extended, layout, all). Kernels are matched to the graph onnxruntime
   executed (`tagger.commands.profiling.executed`): when it optimizes, the graph it writes, tagged with the file as
   its reference and within the file's modules (fused kernels take the module transfer gives a
   fused node; nodes onnxruntime made without a name, such as an inlined function body, are
   found by execution order); at `off`, the file's own nodes. A kernel whose name is no node's
   is counted under `unmatched` with the reason, never guessed; one that stands for several
   nodes counts for their common module.
3. Every kernel must name one node, so nodes run under unique names in an in-memory copy when
   theirs are not: a body node whose name recurs in another body (the two branches of an
   optimum merged decoder repeat every name) runs as `<name>@<body>`; a node without a name, or
   sharing one inside its own graph, under a stand-in (onnxruntime would call it `<op>_<index>`,
   which can collide with real names). Weights stay in their external data file. That copy is
   also the reference of the optimized graph (its stand-ins carry no name evidence).
4. Tags come from the file, or are decided in memory when a node has none (`tagger.commands.nodetags`).
   Each module's own nodes are counted by kind (direct, certain, chosen, fallback:
   `tagger.reporting.certainty`), and a module whose own nodes are mostly chosen is marked: its self time
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
   the model (`tagger.inputs.feeds`: shared symbols, sizes tied to weights, sizes stated by the config
   files beside the model, `--dim`; when onnxruntime refuses them, the plan's other image sizes
   are tried, each in a session of its own, and the report shows the sizes that ran); a run onnxruntime
   refuses is bad input (`tagger.inputs.feeds.refusal`), and so is a model it cannot load
   (`tagger.inputs.feeds.load_refusal`: a tool wrote a file onnxruntime refuses).
8. Files for viewers (`tagger.commands.profiling.views`): `perfetto` (Trace Event Format: module spans
   nest around the kernels; `timeline` is its older name), `speedscope` (speedscope's evented
   format: a per-module flame graph) and `node_data` (Model Explorer node data: each node's
   kernel time on the file's nodes, module totals beside them).

onnxruntime is imported only when a profile runs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

from tagger.commands.nodetags import ModelTags, model_tags
from tagger.commands.options import check_integer
from tagger.commands.profiling.attribution import Attribution
from tagger.commands.profiling.comparison import ModuleGain, OptimizationComparison, compare
from tagger.commands.profiling.executed import ExecutedGraph, Level, executed_graph, optimization_level
from tagger.commands.profiling.report import ModuleTime, NodeTime, ProfileReport
from tagger.commands.profiling.session import DEFAULT_PROVIDER, RunNames, Session, provider_names, renamed, run_names
from tagger.commands.profiling.trace import Measured, measured
from tagger.commands.profiling.views import write_views
from tagger.errors import InputError, param
from tagger.inputs.feeds import DimSettings, Feeds, first_that_runs, model_feeds, parse_dim_option
from tagger.model.modelio import load_model
from tagger.text import LIST_LIMIT, terminal

__all__ = [
    "DEFAULT_PROVIDER",
    "ModuleGain",
    "ModuleTime",
    "NodeTime",
    "OptimizationComparison",
    "ProfileReport",
    "profile",
    "provider_names",
]


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
    perfetto: str | os.PathLike | None = None,
    speedscope: str | os.PathLike | None = None,
    node_data: str | os.PathLike | None = None,
    compare_unoptimized: bool = False,
    timeline: str | os.PathLike | None = None,
    partitions: Mapping[str, Sequence[str]] | None = None,
) -> ProfileReport:
    """Run `model` `warmup + runs` times in onnxruntime with profiling on; time per module.

    `inputs`: an `.npz` of arrays named after the graph inputs (default: feeds generated from the
    model, dynamic sizes from `dim`: N for all, `"NAME=VALUE,..."`, a dict or `DimSettings` per name).
    `optimize`: onnxruntime's graph optimization level, `off`, `basic`, `extended`, `layout` or
    `all` (the default, what a session runs; True is `all`, False `off`): kernels are attributed
    on the graph onnxruntime executed (`tagger.commands.profiling.executed`). `threads`: intra-op threads (0:
    onnxruntime's default). `provider`: execution providers in order (`"A,B"` or a list; the
    suffix `ExecutionProvider` may be left out). `trace` keeps the raw onnxruntime trace at that
    path; `perfetto` writes the module trace (Trace Event Format; `timeline` is the same file's
    older name), `speedscope` speedscope's format and `node_data` Model Explorer node data
    (`tagger.commands.profiling.views`). `compare_unoptimized` runs the model again with optimizations
    off, on the same inputs, and sets `comparison` (`tagger.commands.profiling.comparison`). `partitions`
    names the nodes each compiled partition's kernel holds, where onnxruntime does not
    (`tagger.commands.profiling.attribution`, point 4).
    """
    for name, value, least in (("runs", runs, 1), ("warmup", warmup, 0), ("threads", threads, 0)):
        check_integer(name, value, least)
    perfetto = _one_path("perfetto", perfetto, "timeline", timeline)
    level = optimization_level(optimize)
    if compare_unoptimized and not level.fuses:
        raise InputError(f"{param('compare_unoptimized')} compares a level that optimizes with off; {param('optimize')} is off")
    providers = provider_names(provider)
    settings = dim if isinstance(dim, DimSettings) else parse_dim_option(dim)
    source = Path(model)
    proto = load_model(source)
    file_tags = model_tags(proto, base_dir=source.parent)
    names = run_names(file_tags.index)
    ran = renamed(proto, names.run_names) if names.changed else proto
    run = _Run(source, ran, file_tags, names, providers, threads, runs, warmup, dict(partitions or {}))
    feeds = model_feeds(proto, inputs, settings, base_dir=source.parent)
    report, attribution, kernels, feeds = run.at(level, feeds, trace)
    report.inputs = {name: list(array.shape) for name, array in feeds.items()}
    report.dims = dict(feeds.dims)
    report.trace = None if trace is None else str(trace)
    if compare_unoptimized:
        off, *_ = run.at(optimization_level("off"), Feeds(feeds.arrays, feeds.dims, feeds.origin), None)
        report.comparison = compare(
            str(level), (off.modules, off.kernel_us, off.run_us), (report.modules, report.kernel_us, report.run_us)
        )
    write_views(report, kernels, attribution.graph, (file_tags.index, names.run_names), perfetto, speedscope, node_data)
    return report


@dataclass(frozen=True)
class _Run:
    """One model profiled at a level: everything but the level and the inputs is fixed."""

    source: Path
    ran: onnx.ModelProto
    file_tags: ModelTags
    names: RunNames
    providers: tuple[str, ...]
    threads: int
    runs: int
    warmup: int
    partitions: dict[str, Sequence[str]]

    def at(self, level: Level, feeds: Feeds, trace) -> tuple[ProfileReport, Attribution, Measured, Feeds]:
        """Run at `level` on `feeds` (or the next feeds that run), attribute the kernels."""
        with tempfile.TemporaryDirectory(prefix="tagger-profile-") as workdir:
            session = Session(
                self.source,
                self.ran,
                self.names.changed,
                level,
                self.providers,
                self.threads,
                trace,
                Path(workdir),
                self.runs + self.warmup,
            )
            feeds, events = first_that_runs(feeds, session.events)
            graph = executed_graph(self.file_tags, self.names.run_names, self.ran, self.source, Path(workdir))
        kernels = measured(events, self.warmup)
        attribution = Attribution(graph, self.runs, session.compiled, self.partitions)
        report = attribution.report(self.source.name, kernels, session.used or list(self.providers))
        report.runs, report.warmup, report.optimization = self.runs, self.warmup, str(level)
        report.retagged, report.file_nodes = self.file_tags.retagged, len(self.file_tags.nodes)
        report.notes = _notes(self.names, graph, session.notes, report)
        return report, attribution, kernels, feeds


def _notes(names: RunNames, graph: ExecutedGraph, session_notes: list[str], report: ProfileReport) -> list[str]:
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


def _one_path(name: str, value, alias: str, alias_value):
    """`value`, or `alias_value` under the option's older name; both, naming different files, is bad input."""
    if value is not None and alias_value is not None and str(value) != str(alias_value):
        raise InputError(f"{param(alias)} is the older name of {param(name)}: give one of them")
    return value if value is not None else alias_value
