"""The files `profile` writes for viewers, from the measured kernels and their attribution.

1. `perfetto` (Trace Event Format, Perfetto and chrome://tracing) and `speedscope` (speedscope's
   file format) are drawn from one walk over the measured kernels (`tagger.commands.profiling.timeline`).
2. `node_data` (Model Explorer node data, `tagger.reporting.node_data`) holds each node's mean kernel time
   per run, in µs, on the nodes of the file, the graph a user opens. At `--optimize off` every
   kernel is one node of the file. On onnxruntime's optimized graph a kernel's node is found in
   the file by its name, else by an output the file's node writes too (a fused node writes the
   tensor of the last node it replaced); a kernel standing for several nodes is split evenly
   between them. Kernels whose nodes are not in the file (onnxruntime's own nodes, such as a
   layout transpose), unmatched kernels and control-flow overhead are on no node: their time
   is counted in the report's notes. Module totals (`ModuleTime.total_us`) are written beside
   the node values (`"modules"`).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass

from tagger.commands.profiling.executed import ExecutedGraph
from tagger.commands.profiling.report import ProfileReport
from tagger.commands.profiling.timeline import DrawnKernel, steps, trace_events, write_json
from tagger.commands.profiling.timeline import speedscope as speedscope_document
from tagger.commands.profiling.trace import Measured
from tagger.model.index import ModelIndex
from tagger.reporting.node_data import explorer_ids, merge, node_data, write_node_data

__all__ = ["Placed", "file_node_times", "write_views"]


@dataclass
class Placed:
    """Mean kernel time per run on each node of the file (by index position), and the time on none."""

    us: dict[int, float]
    elsewhere_us: float = 0.0
    """Kernels whose nodes are not in the file, or whose nodes' ids cannot be predicted."""
    kernels_elsewhere: int = 0


def write_views(
    report: ProfileReport,
    kernels: Measured,
    graph: ExecutedGraph,
    file: tuple[ModelIndex, list[str]],
    perfetto: str | os.PathLike | None,
    speedscope: str | os.PathLike | None,
    node_data_path: str | os.PathLike | None,
) -> None:
    """Write the files asked for (`file`: the file's index and its nodes' run names)."""
    if perfetto is not None or speedscope is not None:
        spans = steps(_drawn(report, kernels), kernels.runs)
        if perfetto is not None:
            write_json(trace_events(spans, report.model), perfetto)
            report.perfetto = str(perfetto)
        if speedscope is not None:
            write_json(speedscope_document(spans, report.model), speedscope)
            report.speedscope = str(speedscope)
    if node_data_path is not None:
        index, names = file
        placed = file_node_times(report, graph, index, names)
        _write_node_data(report, placed, index, node_data_path)


def _drawn(report: ProfileReport, kernels: Measured) -> list[DrawnKernel]:
    module_of = {n.name: (n.module, n.op_type) for n in report.nodes if not n.control_flow}
    drawn = []
    for kernel in kernels.kernels:
        if kernel.name in report.unmatched:
            drawn.append(DrawnKernel(kernel.run, kernel.ts, kernel.dur, kernel.name, kernel.op, None, kernel.provider))
        elif kernel.name in module_of:
            module, op = module_of[kernel.name]
            drawn.append(DrawnKernel(kernel.run, kernel.ts, kernel.dur, kernel.name, op, module, kernel.provider))
    return drawn


def file_node_times(report: ProfileReport, graph: ExecutedGraph, index: ModelIndex, run_names: list[str]) -> Placed:
    """Each matched kernel's time on the file's nodes (rule 2 of the module docstring)."""
    image = _file_images(graph, index, run_names)
    placed = Placed(defaultdict(float))
    for node in report.nodes:
        if node.control_flow:
            continue
        ids = graph.kernels.get(node.name, ())
        share = node.us / len(ids) if ids else node.us
        for node_id in ids or (None,):
            target = image.get(node_id) if node_id is not None else None
            if target is None:
                placed.elsewhere_us += share
            else:
                placed.us[target] += share
        placed.kernels_elsewhere += any(image.get(i) is None for i in ids) or not ids
    placed.us = dict(placed.us)
    return placed


def _file_images(graph: ExecutedGraph, index: ModelIndex, run_names: list[str]) -> dict[int, int]:
    """Node of the graph that ran -> node of the file: itself at `off`; else by name, by output, by a
    name derived from a file node's (onnxruntime names a fused node `<first node>/<fusion>`), and
    last by the one file node its readers were found at (the Reshape before a fused Gemm)."""
    if not graph.written:
        return {i: i for i in range(len(index.views))}
    by_name = {name: i for i, name in enumerate(run_names)}
    writer = {output: i for i, view in enumerate(index.views) for output in view.output if output}
    views = graph.tags.index.views
    images: dict[int, int] = {}
    for node_id, view in enumerate(views):
        found = by_name.get(view.name)
        if found is None:
            found = next((writer[o] for o in view.output if o in writer), None)
        if found is None:
            found = _derived(view.name, by_name)
        if found is not None:
            images[node_id] = found
    _by_readers(views, images)
    return images


def _by_readers(views, images: dict[int, int]) -> None:
    """A node not found yet goes where all of its readers were found, when that is one file node."""
    readers: dict[str, list[int]] = defaultdict(list)
    for node_id, view in enumerate(views):
        for name in view.input:
            readers[name].append(node_id)
    for node_id, view in enumerate(views):
        if node_id not in images:
            found_at = {images.get(r) for o in view.output for r in readers.get(o, ())}
            if len(found_at) == 1 and None not in found_at:
                images[node_id] = found_at.pop()


def _derived(name: str, by_name: dict[str, int]) -> int | None:
    """The file node whose name is the longest prefix of `name` ending before a `/` or `_`."""
    for cut in range(len(name) - 1, 0, -1):
        if name[cut] in "/_" and name[:cut] in by_name:
            return by_name[name[:cut]]
    return None


def _write_node_data(report: ProfileReport, placed: Placed, index: ModelIndex, path: str | os.PathLike) -> None:
    ids = explorer_ids(index)
    by_graph: dict[str, dict[str, float]] = defaultdict(dict)
    unseen = 0.0
    for node_id, us in placed.us.items():
        where = ids[node_id]
        if where is None:
            unseen += us
        else:
            by_graph[where.graph][where.node] = round(us, 3)
    main = index.model.graph.name
    by_graph.setdefault(main, {})
    label = f"µs per run (tagger profile, graph optimizations {report.optimization.split(' ')[0]})"
    modules = {m.module: round(m.total_us, 3) for m in report.modules}
    documents = [node_data(values, graph_id, modules if graph_id == main else None, label) for graph_id, values in by_graph.items()]
    write_node_data(merge(*documents), path)
    report.node_data = str(path)
    nodes = Counter(ids[i] is not None for i in placed.us)
    note = f"node data: {nodes[True]} nodes of the file hold {sum(placed.us.values()) - unseen:.1f} µs of {report.kernel_us:.1f} µs"
    if placed.elsewhere_us:
        note += f"; {placed.kernels_elsewhere} kernels ({placed.elsewhere_us:.1f} µs) ran nodes the file does not have"
    if unseen:
        note += f"; {nodes[False]} nodes ({unseen:.1f} µs) have no id Model Explorer's ONNX adapter is known to give"
    report.notes.append(note)
