"""The tagging pipeline: index -> evidence -> inference -> structure -> fallback.

Produces one `Assignment` per node (by position) without touching the model; the writer and
the report consume the result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

import onnx

from tagger.evidence import Conflict, Context, ExternalSource, build_context, collect
from tagger.evidence.initializers import SOURCE as INITIALIZER_SOURCE
from tagger.evidence.initializers import module_of_parameter
from tagger.infer import GraphFacts, Inferred, infer_graph, tensor_shapes
from tagger.model.index import GraphScope, ModelIndex, NodeView, build_index
from tagger.model.paths import lca, lca_all, parent
from tagger.model.producers import sorted_breadth_first
from tagger.pipeline.alike import refine_alike
from tagger.pipeline.bodies import body_modules, settle_owners
from tagger.pipeline.display import TagFormatter
from tagger.pipeline.fused import widen_residual_norms

__all__ = ["Assignment", "Bound", "Infer", "TaggingResult", "tag_model"]

Infer = Callable[[Sequence[NodeView], list[str | None], GraphFacts], Inferred]
"""An inference function: `infer_graph`, or a baseline the accuracy benchmark compares with."""


@dataclass(frozen=True, slots=True)
class Bound:
    """How sure an inherited tag is: `bound` is the module the node certainly ran in (fact A of
    `tagger.infer`); `certain` says whether the tag itself is (it is the bound, or facts put it
    deeper), or a choice deeper than the bound."""

    bound: str
    certain: bool


@dataclass(frozen=True, slots=True, eq=False)
class Assignment:
    """The decided tag of one node. Nodes with the same tag share one object (`tag_model`), so
    it hashes and compares by identity: counting a model's nodes by tag is C-level work."""

    module: str
    tag: str
    source: str


@dataclass
class TaggingResult:
    """Everything the writer and the report need."""

    index: ModelIndex
    context: Context
    assignments: list[Assignment]
    conflicts: list[Conflict]
    formatter: TagFormatter
    """Display tags of module paths (memoised; the report formats ancestors with it)."""
    bounds: dict[int, Bound] = field(default_factory=dict)
    """Inherited nodes (by id): the bound their tag was chosen in, and whether it is certain."""


@dataclass
class _Labels:
    """What `tag_model` has decided so far, by node position: the module (None: not yet) and
    the source that decided it, and the inference rule with the facts it reads."""

    modules: list[str | None]
    sources: list[str]
    infer: Infer
    facts: GraphFacts
    callers: dict[tuple[str, str], list[int]]
    bounds: dict[int, Bound] = field(default_factory=dict)


def tag_model(
    model: onnx.ModelProto,
    infer: Infer = infer_graph,
    extra: Sequence[ExternalSource] = (),
    base_dir: Path | None = None,
    tree: dict[str, str | None] | None = None,
) -> TaggingResult:
    """Decide a module, display tag and source for every node of `model` (model untouched);
    `infer` places the nodes without evidence (the benchmark passes its baselines here);
    `extra`: evidence sources from outside the file (`tagger.transfer`); `base_dir`: the
    directory of the model's file, where its external data lies (values are read from it only
    to check a few shared parameters, `tagger.evidence.merged_parameters`); `tree`: the model's
    true module paths (`tagger.transfer.module_tree`), when known from outside the file."""
    index = build_index(model)
    context = build_context(index, base_dir, tree)
    decision = collect(index, context, extra)
    count = len(index.nodes)
    for module in set(decision.modules.values()):
        context.modules.add(module)
    context.modules.forget_readings()  # the sources have run
    copies = _copies(index)
    labels = _Labels(
        modules=list(map(decision.modules.get, range(count))),
        sources=list(map(decision.sources.get, range(count), repeat("fallback", count))),
        infer=infer,
        facts=GraphFacts(
            context.modules.containers(),
            _weight_like(index, copies, context.parameters.merged),
            context.modules.sequences(),
            *tensor_shapes(model),
            parameters=_stood_for(copies, context.parameters.owners),
            arguments=frozenset(name for scope in index.graphs for name in scope.inputs - scope.initializers),
            resorted=sorted_breadth_first(model),
        ),
        callers=_function_callers(index),
    )
    conflicts = decision.conflicts
    del decision  # its claims are in `labels` now: two dicts by node (10 MB at 300k nodes) freed before inference
    owners = body_modules(index, labels.modules, labels.facts.sequences)
    functions = [scope for scope in index.graphs if scope.kind == "function"]
    for scope in index.graphs:
        if scope.kind != "function":
            _resolve_graph(index, scope, labels)
            if settle_owners(scope.node_ids, labels.modules, labels.sources, owners):  # placed owners: context for what is open
                _resolve_graph(index, scope, labels)
    pending = functions  # callers first: a function may be listed before the one calling it
    while pending:
        for scope in pending:
            _resolve_graph(index, scope, labels)
            if settle_owners(scope.node_ids, labels.modules, labels.sources, owners):
                _resolve_graph(index, scope, labels)
        still = [scope for scope in pending if any(labels.modules[i] is None for i in scope.node_ids)]
        if len(still) == len(pending):
            break  # nothing more can be learnt from call sites: the rest falls back
        pending = still
    for scope in index.graphs:
        widen_residual_norms(
            index.views,
            scope.node_ids,
            labels.modules,
            labels.sources,
            INITIALIZER_SOURCE,
            "inherited",
            _returned(index, scope),
            labels.facts.sequences,
        )
    _widen_tied_lookups(index, labels.modules, labels.sources, context.parameters.tied_lookups)
    refine_alike(labels.modules, labels.sources, context.alike)
    formatter = TagFormatter(context.classes)
    assignments = _assignments(labels.modules, labels.sources, formatter)
    bounds = {i: bound for i, bound in labels.bounds.items() if labels.sources[i] == "inherited"}
    return TaggingResult(index, context, assignments, conflicts, formatter, bounds)


def _returned(index: ModelIndex, scope) -> frozenset[str]:
    """The tensors the main graph returns (a body's or a function's results are its owner's business)."""
    return frozenset(value.name for value in index.model.graph.output) if scope.kind == "main" else frozenset()


def _widen_tied_lookups(index: ModelIndex, modules: list[str | None], sources: list[str], lookups: frozenset[int]) -> None:
    """A lookup placed by a tied table's name alone (the name may be the head's: `merged_parameters`)
    takes the lowest common ancestor of that name and the next module its graph names directly.
    That ancestor holds the lookup either way: if the name is the embedding's, it contains it; if
    it is the head's, the embedding and the head have a common caller whose stretch runs from the
    lookup to the head, and the next named node runs inside it (fact A of `tagger.infer`)."""
    for i in sorted(lookups):
        if sources[i] != INITIALIZER_SOURCE or modules[i] is None:
            continue
        rest = range(i + 1, index.graphs[index.graph_of[i]].node_ids.stop)  # a graph's ids are consecutive
        named = (j for j in rest if sources[j] not in ("inherited", "fallback") and modules[j] is not None)
        after = next(named, None)
        modules[i] = lca(modules[i], modules[after]) if after is not None else ""


def _assignments(modules: list[str | None], sources: list[str], formatter: TagFormatter) -> list[Assignment]:
    """One shared `Assignment` per distinct (module, source): a model has far fewer of those
    than nodes, and the writer and the report handle each distinct one once."""
    keys = list(zip(modules, sources, strict=True))
    distinct = dict.fromkeys(keys)  # in order of appearance
    formatter.prepare(module if module is not None else "" for module, _ in distinct)
    shared: dict[tuple[str | None, str], Assignment] = {}
    for key in distinct:
        module, source = key
        final = module if module is not None else ""
        shared[key] = Assignment(final, formatter(final), source)
    return list(map(shared.__getitem__, keys))


_STAND_INS = frozenset({"Identity", "DequantizeLinear"})


def _weight_like(index: ModelIndex, copies: list[tuple[str, list[str]]], merged: frozenset[str]) -> frozenset[str]:
    """Weights of no module the file names: unnamed initializers of rank >= 2 (folded or
    transposed parameters, `val_103`), initializers that may stand for merged parameters, and the
    values that stand for one of them (`_stood_for`: `quantize_static` dequantizes each weight
    once, at the top of the graph)."""
    weights = {name for scope in index.graphs for name in scope.matrices if module_of_parameter(name) is None}
    return _stood_for(copies, weights | merged)


def _copies(index: ModelIndex) -> list[tuple[str, list[str]]]:
    """Each `Identity` or `DequantizeLinear` as (the tensor it copies, its outputs), in graph
    order: the values that may stand for another (`_stood_for`), found in one walk."""
    return [(view.input[0], list(view.output)) for view in index.views if view.op_type in _STAND_INS and view.input]


def _stood_for(copies: list[tuple[str, list[str]]], names: Iterable[str]) -> frozenset[str]:
    """`names` and the values that stand for one of them: the `Identity` copies TorchScript's
    deduplication reads them through, and their `DequantizeLinear` (in the QDQ format the pair
    stands for the tensor it quantizes), so inference sees a tensor's reads where the ops read
    its copy (two calls of a module reading its one dequantized weight). `copies` in graph order:
    a copy of a copy follows it."""
    found = set(names)
    for source, outputs in copies:
        if source in found:
            found.update(outputs)
    return frozenset(found)


def _function_callers(index: ModelIndex) -> dict[tuple[str, str], list[int]]:
    """Nodes that call a model-local function, by (domain, name)."""
    keys = {(s.function_key[0], s.function_key[1]) for s in index.graphs if s.function_key}
    callers: dict[tuple[str, str], list[int]] = {key: [] for key in keys}
    if keys:
        for node_id, node in enumerate(index.views):
            key = (node.domain, node.op_type)
            if key in callers:
                callers[key].append(node_id)
    return callers


def _resolve_graph(index: ModelIndex, scope: GraphScope, labels: _Labels) -> None:
    """Inherit inside one graph, then let structure decide what is still unknown."""
    ids = scope.node_ids
    modules, sources, facts = labels.modules, labels.sources, labels.facts
    known = modules[ids.start : ids.stop]  # a graph's nodes are consecutive in the index
    inferred = labels.infer(index.views[ids.start : ids.stop], known, facts)
    bounds: dict[tuple[str, bool], Bound] = {}  # one immutable record per distinct bound (a model has few)
    callers = _Callers(facts.sequences)  # each distinct module's caller past module lists found once
    found = inferred.modules
    for k in [k for k, (before, after) in enumerate(zip(known, found, strict=False)) if before is None and after is not None]:
        node_id = ids.start + k
        after = callers[found[k]]
        modules[node_id], sources[node_id] = after, "inherited"
        bound = inferred.bounds[k]
        key = (callers[bound] if bound is not None else after, inferred.certain[k])
        record = bounds.get(key)
        if record is None:
            record = bounds[key] = Bound(*key)
        labels.bounds[node_id] = record
    structural = _structural_module(scope, modules, labels.callers)
    if structural is None:
        return
    module, source = structural
    for node_id in ids:
        if modules[node_id] is None:
            modules[node_id], sources[node_id] = module, source


class _Callers(dict):
    """A module path, or its nearest ancestor that is no module list (a list runs no op), by path."""

    def __init__(self, sequences: set[str]) -> None:
        super().__init__()
        self._sequences = sequences

    def __missing__(self, path: str) -> str:
        module = path
        while module in self._sequences:
            module = parent(module)
        self[path] = module
        return module


def _structural_module(
    scope: GraphScope, modules: list[str | None], callers: dict[tuple[str, str], list[int]]
) -> tuple[str, str] | None:
    """A body runs inside its owner node; a function body inside its call sites' module."""
    if scope.kind == "subgraph" and scope.owner is not None and modules[scope.owner] is not None:
        return modules[scope.owner], "subgraph"
    if scope.kind == "function" and scope.function_key is not None:
        calls = callers.get(scope.function_key[:2], [])
        known = [modules[i] for i in calls if modules[i] is not None]
        if known:
            return lca_all(known) or "", "function"
    return None
