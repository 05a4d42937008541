"""The graph onnxruntime executes, tagged, and which of its nodes each profiled kernel stands for.

`profile` measures kernels; this module says which nodes (and so which modules) they ran:

1. **Levels.** `--optimize off|basic|extended|layout|all` is onnxruntime's
   `GraphOptimizationLevel` (`ORT_DISABLE_ALL` ... `ORT_ENABLE_ALL`, a session's default); `all`
   is the default, `True` (a bare `--optimize`) means `all` and `False` means `off`.
2. **Off.** Every kernel is a node of the file: the graph is the file itself (under the unique run
   names of `tagger.commands.profiling.session`), tagged as read or decided in memory (`tagger.commands.nodetags`).
3. **On.** The session writes the graph it optimized (`SessionOptions.optimized_model_filepath`,
   initializers into an external data file beside it, so a model of any size can be written)
   into a temporary directory. That graph is tagged with the model that ran as its reference
   (`tagger.transfer.reference`, the machinery of `--reference`): nodes onnxruntime kept are
   matched by name or output, fused ones take the module that wrote their output or the common
   ancestor of the nodes they replaced, as transfer decides. Tag entries onnxruntime copied onto
   the nodes (a fused node would carry several nodes' entries, the last read) are dropped first,
   so the reference decides; a graph the reference check refuses is tagged on its own, noted.
4. **Kernels.** A kernel's name (`<name>_kernel_time`, or `args.node_name` where onnxruntime
   writes it) names nodes of that graph. Most name one node. A name several nodes share (onnxruntime
   names the fused nodes of both branches of an If alike) stands for those of them in graphs that
   ran (a graph ran when a kernel named one of its nodes alone); a kernel that still stands for
   several nodes (both branches ran, or a partition an execution provider compiled from many
   nodes) counts for their common module.
5. **Compiled partitions.** onnxruntime refuses to write a graph holding partitions a provider
   compiled (TensorRT, OpenVINO, QNN, CoreML: "contains compiled nodes"). The session is then
   made again without writing; the file's nodes are the graph, and a partition's kernel, whose
   nodes onnxruntime does not name, is unmatched with that reason. (Not run here: only the CPU
   and Azure providers are installed.)
6. **Partitions given.** Where the nodes of each compiled partition are known (a kernel name and
   the names of the nodes it holds, `partitioned`), its kernel stands for those nodes like any
   kernel of several nodes: it counts for their common module, and each node is placed on the
   kernel's provider. (Tested on constructed events: no provider here compiles partitions.)
7. **Nodes onnxruntime made without a name.** Where no kernel exists for an op (Softmax in fp16
   on the CPU), onnxruntime inlines the op's function body: nodes without a name, which it
   profiles as `<op>_<its node index>`, an index the graph it writes does not hold. Such a kernel
   (its name is its op and a number, and names no node) is placed by execution order
   (`placed_by_order`): onnxruntime runs a graph's nodes in the order it writes them, so the
   unnamed kernels between two kernels matched by name to one node each are the unnamed nodes
   between those two nodes of the same graph, one for one, when every node there is unnamed and
   their ops are the kernels' ops in order. A gap that does not line up so, or a kernel placed
   on different nodes in different runs, stays unmatched, with that reason.
8. **Modules.** The graph that ran is tagged within the file's modules (its tags' paths and
   their ancestors, and the modules of its `hierarchy.modules` map): onnxruntime renames some
   tensors it rewrites (an fp16 weight cast back to float once becomes `FusedBack_<name>`), and
   such a name is no module of the model.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import onnx

from tagger.commands.nodetags import ModelTags, model_tags
from tagger.errors import InputError, ParameterError
from tagger.evidence import EXTERNAL, read_module_map
from tagger.model.keys import MODULE_MAP_KEY, READ_KEYS
from tagger.model.paths import lca_all

__all__ = [
    "LEVELS",
    "OPTIMIZED_NAME",
    "ExecutedGraph",
    "Level",
    "executed_graph",
    "file_modules",
    "kernel_module",
    "narrowed",
    "optimization_level",
    "partitioned",
    "placed_by_order",
    "unnamed_kernel",
]

OPTIMIZED_NAME = "optimized.onnx"
_DATA_SUFFIX = ".data"
_COMPILED = "contains compiled nodes"

LEVELS: dict[str, str] = {
    "off": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "layout": "ORT_ENABLE_LAYOUT",
    "all": "ORT_ENABLE_ALL",
}
_ALIASES = {"disable": "off", "none": "off", "on": "all", "enable": "all"}


@dataclass(frozen=True)
class Level:
    """One graph optimization level: `name` (off, basic, ...) and onnxruntime's constant."""

    name: str
    constant: str

    @property
    def fuses(self) -> bool:
        return self.name != "off"

    def __str__(self) -> str:
        return f"{self.name} ({self.constant})"


def optimization_level(value: object) -> Level:
    """The level `--optimize` names: off, basic, extended, layout, all; True is all, False off."""
    if value is True or value is False:
        name = "all" if value else "off"
    elif isinstance(value, str) and value.strip().lower() in {**LEVELS, **_ALIASES}:
        name = _ALIASES.get(value.strip().lower(), value.strip().lower())
    else:
        raise ParameterError("optimize", f"takes one of {', '.join(LEVELS)} (default all), got {value!r}")
    return Level(name, LEVELS[name])


def session_options(options, level: Level, workdir: Path, write: bool) -> None:
    """Set the level on onnxruntime `SessionOptions`; with `write`, have it write the graph it
    optimized into `workdir` (weights in an external data file beside it)."""
    import onnxruntime as ort

    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level.constant)
    if write and level.fuses:
        options.optimized_model_filepath = str(workdir / OPTIMIZED_NAME)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", OPTIMIZED_NAME + _DATA_SUFFIX)


def refuses_to_write(exc: BaseException) -> bool:
    """Whether onnxruntime refused to write its graph because a provider compiled partitions."""
    return _COMPILED in str(exc)


@dataclass
class ExecutedGraph:
    """The tagged graph that ran, and the nodes each kernel name stands for."""

    tags: ModelTags
    kernels: dict[str, tuple[int, ...]]
    written: bool
    """Whether this is the graph onnxruntime wrote (else the file's, under its run names)."""
    notes: list[str] = field(default_factory=list)

    @property
    def nodes(self) -> int:
        return len(self.tags.nodes)


def executed_graph(
    file_tags: ModelTags | None,
    run_names: list[str],
    ran: onnx.ModelProto,
    source: Path,
    workdir: Path,
) -> ExecutedGraph:
    """The graph behind the kernels: onnxruntime's written graph in `workdir` tagged with `ran`
    (the model the session loaded; its weights beside `source`) as reference, or, when none was
    written, the file's nodes under `run_names` (`file_tags`, tagged here if not given)."""
    written = workdir / OPTIMIZED_NAME
    if not written.exists():
        tags = file_tags if file_tags is not None else model_tags(ran, base_dir=source.parent)
        return ExecutedGraph(tags, _by_name(run_names), written=False)
    from tagger.api import reference_source
    from tagger.model.modelio import load_model

    graph = load_model(written)
    _drop_copied_entries(graph)
    decided = file_tags.result if file_tags is not None and file_tags.index.model is ran else None  # tagged once
    reference = reference_source(source, workdir, model=ran, tagged=decided)
    notes: list[str] = []
    try:
        tags = model_tags(graph, [reference], base_dir=workdir, tree=file_modules(file_tags) if file_tags is not None else None)
        notes += reference.notes
        if file_tags is not None and reference.matching is not None:
            tags = _with_file_kinds(tags, reference.matching.images, file_tags)
    except InputError as exc:  # the reference check refused the graph onnxruntime wrote
        tags = model_tags(graph, base_dir=workdir)
        notes.append(f"the graph onnxruntime ran was tagged without the file as reference: {exc}")
    return ExecutedGraph(tags, _by_name([view.name for view in tags.index.views]), written=True, notes=notes)


def file_modules(file_tags: ModelTags) -> dict[str, str | None]:
    """The modules the graph that ran is tagged within (rule 8): those of the file's
    `hierarchy.modules` map, with their classes, and every module its nodes are tagged with."""
    tree: dict[str, str | None] = {}
    for prop in file_tags.index.model.metadata_props:
        if prop.key == MODULE_MAP_KEY:
            tree.update(read_module_map(prop.value) or {})
    for tag in file_tags.nodes:
        tree.setdefault(tag.module, None)
    return tree


def _with_file_kinds(tags: ModelTags, images: dict[int, int], file_tags: ModelTags) -> ModelTags:
    """A node carried over from the file by name or output keeps the file node's kind: a tag the
    tagger chose in the file is still a choice on the graph that ran, not reference evidence.
    (The reference is the file itself, `ran`: same node order, so positions line up.)"""
    nodes = list(tags.nodes)
    for node_id, image in images.items():
        if nodes[node_id].source in EXTERNAL and image < len(file_tags.nodes):
            nodes[node_id] = replace(nodes[node_id], kind=file_tags.nodes[image].kind)
    return replace(tags, nodes=nodes)


def _by_name(names: list[str]) -> dict[str, tuple[int, ...]]:
    ids: dict[str, list[int]] = defaultdict(list)
    for node_id, name in enumerate(names):
        ids[name].append(node_id)
    return {name: tuple(found) for name, found in ids.items()}


def _drop_copied_entries(model: onnx.ModelProto) -> None:
    """Remove the tag and scope entries onnxruntime copied onto the nodes of its graph."""
    from tagger.model.index import build_index

    for node in build_index(model).nodes:
        kept = [entry for entry in node.metadata_props if entry.key not in READ_KEYS]
        if len(kept) != len(node.metadata_props):
            del node.metadata_props[:]
            node.metadata_props.extend(kept)


def narrowed(graph: ExecutedGraph, names: set[str]) -> ExecutedGraph:
    """`graph` with each kernel name that several nodes share (onnxruntime names fused nodes alike
    in both branches of an If) narrowed to the nodes of graphs that ran: those holding a node that
    a kernel of `names` names alone. A name whose nodes all lie in graphs that ran stays whole."""
    graph_of = graph.tags.index.graph_of
    ran = {graph_of[ids[0]] for name, ids in graph.kernels.items() if name in names and len(ids) == 1}
    kernels = dict(graph.kernels)
    for name, ids in graph.kernels.items():
        if len(ids) > 1 and name in names:
            kernels[name] = tuple(i for i in ids if graph_of[i] in ran) or ids
    return ExecutedGraph(graph.tags, kernels, graph.written, graph.notes)


def unnamed_kernel(name: str, op: str) -> bool:
    """Whether a kernel's name is the one onnxruntime gives a node without a name: `<op>_<index>`."""
    return bool(op) and name.startswith(op + "_") and name[len(op) + 1 :].isdigit()


_START = -1
"""The anchor of a kernel sequence's first kernels: the start of a graph."""


def placed_by_order(graph: ExecutedGraph, runs: Sequence[Sequence[tuple[str, str]]]) -> ExecutedGraph:
    """`graph` with the kernels of nodes onnxruntime made without a name placed on those nodes by
    execution order (rule 7); `runs`: each measured run's kernels, `(name, op)` in the order they ran."""
    views = graph.tags.index.views
    if all(view.name for view in views):
        return graph
    found: dict[str, set[int]] = defaultdict(set)
    for sequence in runs:
        for name, node_id in _aligned(graph, sequence):
            found[name].add(node_id)
    if not found:
        return graph
    kernels = dict(graph.kernels)
    kernels.update({name: (next(iter(ids)),) for name, ids in found.items() if len(ids) == 1})
    return ExecutedGraph(graph.tags, kernels, graph.written, graph.notes)


def _aligned(graph: ExecutedGraph, sequence: Sequence[tuple[str, str]]) -> Iterator[tuple[str, int]]:
    """(kernel name, node id) of each unnamed kernel of one run that lines up with an unnamed node."""
    anchor: int | None = _START  # the node of the last kernel matched by name to one node; None: unknown
    gap: list[tuple[str, str]] | None = []  # the unnamed kernels since; None: a kernel no rule places broke it
    for name, op in sequence:
        ids = graph.kernels.get(name)
        if ids is None:
            if gap is not None and unnamed_kernel(name, op):
                gap.append((name, op))
            else:
                gap = None
            continue
        node = ids[0] if len(ids) == 1 else None
        if gap and anchor is not None and node is not None:
            yield from _fill(graph, anchor, node, gap)
        anchor, gap = node, []
    if gap and anchor is not None and anchor != _START:
        yield from _fill(graph, anchor, None, gap)


def _fill(graph: ExecutedGraph, before: int, after: int | None, gap: list[tuple[str, str]]) -> Iterator[tuple[str, int]]:
    """Pair `gap` with the nodes strictly between `before` and `after` (`_START`: the start of
    `after`'s graph; None: the end of `before`'s) when they are all unnamed, in one graph, of the
    same ops in the same order."""
    index = graph.tags.index
    graph_id = index.graph_of[after if before == _START and after is not None else before]
    span = index.graphs[graph_id].node_ids
    if after is not None and index.graph_of[after] != graph_id:
        return
    start = span.start if before == _START else before + 1
    stop = span.stop if after is None else after
    nodes = range(start, stop)
    views = index.views
    if len(nodes) != len(gap) or any(views[i].name or views[i].op_type != op for i, (_, op) in zip(nodes, gap, strict=True)):
        return
    yield from ((name, node_id) for (name, _), node_id in zip(gap, nodes, strict=True))


def partitioned(graph: ExecutedGraph, partitions: Mapping[str, Sequence[str]]) -> ExecutedGraph:
    """`graph` with each partition's kernel standing for the nodes it holds (rule 6): `partitions`
    maps a kernel name to the names of its nodes in that graph. A name no node has is noted; a
    partition none of whose nodes the graph has is left unmatched."""
    kernels = dict(graph.kernels)
    notes = list(graph.notes)
    missing: list[str] = []
    for kernel, members in partitions.items():
        ids = sorted({i for name in members for i in graph.kernels.get(name, ())})
        missing += [name for name in members if name not in graph.kernels]
        if ids:
            kernels[kernel] = tuple(ids)
    if missing:
        notes.append(f"{len(missing)} nodes named in the partitions are not in the graph that ran: " + ", ".join(missing[:5]))
    return ExecutedGraph(graph.tags, kernels, graph.written, notes)


def kernel_module(graph: ExecutedGraph, node_ids: tuple[int, ...]) -> str:
    """The module a kernel counts for: its node's, or the common module of the nodes it stands for."""
    modules = {graph.tags.nodes[i].module for i in node_ids}
    if len(modules) == 1:
        return next(iter(modules))
    return lca_all(sorted(modules)) or ""


def kernel_name(event: dict, suffix: str) -> str:
    """The node name of a kernel event: `args.node_name` where given, else its name less `suffix`."""
    named = event.get("args", {}).get("node_name")
    if isinstance(named, str) and named:
        return named
    return event["name"][: -len(suffix)]


def remove_written(workdir: Path) -> None:
    """Forget a graph an earlier attempt wrote (the next feeds run in a new session)."""
    for name in (OPTIMIZED_NAME, OPTIMIZED_NAME + _DATA_SUFFIX):
        path = workdir / name
        if path.exists():
            os.remove(path)
