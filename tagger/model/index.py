"""A flat, positional index of every node in a model: main graph, control-flow bodies, functions.

Tags are addressed by position, never by name (names may be empty or duplicated). The index keeps
references to the original `NodeProto`s so the writer can put tags back on the very same objects.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import onnx

from tagger.model.keys import read_entries

__all__ = [
    "GraphScope",
    "ModelIndex",
    "NodeView",
    "STANDARD_DOMAINS",
    "build_index",
    "dataflow",
    "graphs_within",
    "may_hold_tensors",
    "may_own_bodies",
    "subgraphs",
]


@dataclass(slots=True)
class NodeView:
    """A node's fields read once into plain Python: every source and rule reads these many
    times, and protobuf field access costs far more than a tuple's."""

    name: str
    op_type: str
    domain: str
    input: tuple[str, ...]
    output: tuple[str, ...]
    metadata: dict[str, str] | None
    """The node's `metadata_props` entries the tagger reads (`READ_KEYS`), None without any."""

    @classmethod
    def of(cls, node: onnx.NodeProto, shared: dict[str, str]) -> NodeView:
        """`shared` keeps one copy of the strings many nodes repeat (op types, domains, and
        the values of `SHARED_VALUE_KEYS`): a quarter fewer page faults indexing a large model."""
        metadata = read_entries(node.metadata_props, shared)
        op_type, domain = node.op_type, node.domain
        return cls(
            node.name,
            shared.setdefault(op_type, op_type),
            shared.setdefault(domain, domain),
            tuple(node.input),
            tuple(node.output),
            metadata,
        )


@dataclass
class GraphScope:
    """One graph whose nodes share a namespace of tensors.

    `kind` is `main`, `subgraph` (an If/Loop/Scan body, owned by node `owner`) or `function`
    (a model-local function body, identified by `function_key`).
    """

    kind: str
    node_ids: range = range(0)
    """Positions of the graph's nodes in the index: consecutive, so a range (no int per node)."""
    owner: int | None = None
    attribute: str = ""
    """The owner's attribute that holds this body (`then_branch`, `body`; `branches[1]` in a list)."""
    function_key: tuple[str, str, str] | None = None
    initializers: frozenset[str] = frozenset()
    matrices: frozenset[str] = frozenset()
    """Initializers of rank >= 2 (weights, as opposed to shapes, axes and scalars)."""
    indices: frozenset[str] = frozenset()
    """INT64 initializers: index buffers (`position_ids`), never a learned parameter."""
    inputs: frozenset[str] = frozenset()


class NodeProtos(Sequence):
    """The original NodeProtos by position, read from their graphs when asked for.

    No Python wrapper per node is held: with upb a held wrapper costs about 160 bytes (the
    object and its entry in upb's object cache), 49 MB at 300k nodes, for protos the writer
    reaches once at the end. Each graph's repeated field is kept, with its first position."""

    def __init__(self) -> None:
        self._fields: list[Sequence[onnx.NodeProto]] = []
        self._starts: list[int] = []
        self._size = 0

    def add_graph(self, nodes: Sequence[onnx.NodeProto]) -> None:
        """Append the nodes of one graph (its repeated `node` field)."""
        self._fields.append(nodes)
        self._starts.append(self._size)
        self._size += len(nodes)

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, position):  # type: ignore[override]
        if isinstance(position, slice):
            return [self[i] for i in range(*position.indices(self._size))]
        if position < 0:
            position += self._size
        if not 0 <= position < self._size:
            raise IndexError("node position out of range")
        k = bisect.bisect_right(self._starts, position) - 1  # the last graph starting there: empty ones are passed
        return self._fields[k][position - self._starts[k]]

    def __iter__(self) -> Iterator[onnx.NodeProto]:
        return itertools.chain.from_iterable(self._fields)


@dataclass
class ModelIndex:
    """Every node of the model with its graph; `nodes[i]` is the original NodeProto (for the
    writer), `views[i]` the same node's fields as plain Python (for everything else)."""

    model: onnx.ModelProto
    nodes: NodeProtos = field(default_factory=NodeProtos)
    views: list[NodeView] = field(default_factory=list)
    graph_of: list[int] = field(default_factory=list)
    graphs: list[GraphScope] = field(default_factory=list)

    def graph_label(self, graph_id: int) -> str:
        """A readable address for a graph, used in reports: `main`, `function dom::name`, or a body
        as its owner and attribute (`If optimum::if/then_branch`), nested ones joined by ` > `."""
        scope = self.graphs[graph_id]
        if scope.kind == "main":
            return "main"
        if scope.kind == "function":
            domain, name, overload = scope.function_key or ("", "", "")
            return f"function {domain}::{name}" + (f":{overload}" if overload else "")
        labels = []
        while scope.kind == "subgraph" and scope.owner is not None:
            owner, outer = self.nodes[scope.owner], self.graph_of[scope.owner]
            name = owner.name or f"#{self.graphs[outer].node_ids.index(scope.owner)}"
            labels.append(f"{owner.op_type} {name}/{scope.attribute}")
            scope = self.graphs[outer]
        if scope.kind == "function":
            labels.append(self.graph_label(self.graphs.index(scope)))
        return " > ".join(reversed(labels)) or "body"


def build_index(model: onnx.ModelProto) -> ModelIndex:
    """Index the main graph, every nested body, and every model-local function."""
    index = ModelIndex(model=model)
    shared: dict[str, str] = {}
    _add_graph(index, model.graph, GraphScope(kind="main"), shared)
    for function in model.functions:
        key = (function.domain, function.name, getattr(function, "overload", ""))
        scope = GraphScope(kind="function", function_key=key, inputs=frozenset(function.input))
        _add_nodes(index, function.node, scope, shared)
    return index


def _add_graph(index: ModelIndex, graph: onnx.GraphProto, scope: GraphScope, shared: dict[str, str]) -> None:
    names = [t.name for t in graph.initializer]  # read once: both sets share the strings
    scope.initializers = frozenset(names) | frozenset(t.values.name for t in graph.sparse_initializer)
    scope.matrices = frozenset(itertools.compress(names, [len(t.dims) >= 2 for t in graph.initializer]))
    scope.indices = frozenset(t.name for t in graph.initializer if t.data_type == onnx.TensorProto.INT64)
    scope.inputs = frozenset(i.name for i in graph.input)
    _add_nodes(index, graph.node, scope, shared)


_GRAPH_OPS = frozenset({"If", "Loop", "Scan", "SequenceMap"})
"""The operators of the standard domain with graph-valued attributes (the spec allows no others)."""
_TENSOR_OPS = _GRAPH_OPS | {"Constant", "ConstantOfShape"}
"""... and those with tensor-valued attributes, or bodies that may hold some."""
STANDARD_DOMAINS = frozenset({"", "ai.onnx"})
"""The names of the ONNX standard domain (an empty domain is `ai.onnx`)."""


def may_own_bodies(op_type: str, domain: str) -> bool:
    """Whether a node can have graph attributes: by the spec, only If, Loop, Scan and SequenceMap
    of the standard domain; any operator of another domain (onnxruntime's contrib ops do)."""
    return op_type in _GRAPH_OPS or domain not in STANDARD_DOMAINS


def may_hold_tensors(op_type: str, domain: str) -> bool:
    """Whether a node can have tensor attributes, directly or in its bodies (same rule)."""
    return op_type in _TENSOR_OPS or domain not in STANDARD_DOMAINS


def _add_nodes(index: ModelIndex, nodes, scope: GraphScope, shared: dict[str, str]) -> None:
    """Each node's view is read while no one holds its Python wrapper: upb gives a wrapper whose
    empty `metadata_props` was read a table that lives as long as the wrapper (360 bytes a node,
    36 MB at 100k nodes without metadata); `index.nodes` holds no wrapper either (`NodeProtos`)."""
    graph_id = len(index.graphs)
    index.graphs.append(scope)
    first = len(index.nodes)
    views = _views(nodes, shared)
    index.nodes.add_graph(nodes)
    index.views.extend(views)
    index.graph_of.extend([graph_id] * len(views))
    scope.node_ids = range(first, first + len(views))
    bodies = not _GRAPH_OPS.isdisjoint({view.op_type for view in views}) or not {view.domain for view in views} <= STANDARD_DOMAINS
    for node_id, view in enumerate(views, first) if bodies else ():  # a graph without any spares a loop
        if may_own_bodies(view.op_type, view.domain):
            for attribute, body in _named_bodies(index.nodes[node_id]):
                _add_graph(index, body, GraphScope(kind="subgraph", owner=node_id, attribute=attribute), shared)


def _views(nodes: Iterable[onnx.NodeProto], shared: dict[str, str]) -> list[NodeView]:
    """`NodeView.of` for every node, in one loop (a 100k-node model spends more on calls than on
    reading fields); `read_entries` only for a node that has metadata."""
    views: list[NodeView] = []
    append, intern = views.append, shared.setdefault
    for node in nodes:
        props = node.metadata_props
        op_type, domain = node.op_type, node.domain
        append(
            NodeView(
                node.name,
                intern(op_type, op_type),
                intern(domain, domain),
                tuple(node.input[:]),  # a slice is read in one call: a quarter faster than iterating
                tuple(node.output[:]),
                read_entries(props, shared) if props else None,
            )
        )
    return views


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The bodies a node owns (If branches, Loop/Scan bodies, any graph-valued attribute)."""
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.g
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            yield from attribute.graphs


def _named_bodies(node: onnx.NodeProto) -> Iterator[tuple[str, onnx.GraphProto]]:
    """`subgraphs`, each with the attribute that holds it (`branches[1]` inside a list)."""
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.name, attribute.g
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            for k, graph in enumerate(attribute.graphs):
                yield f"{attribute.name}[{k}]", graph


def dataflow(nodes: Iterable[NodeView] | Iterable[onnx.NodeProto]) -> tuple[dict[str, int], dict[str, list[int]]]:
    """By position: the node producing each tensor (the first, if a broken graph has several) and
    the nodes reading it."""
    producer: dict[str, int] = {}
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.output:
            if name:
                producer.setdefault(name, i)
        for name in node.input:
            if name:
                consumers.setdefault(name, []).append(i)
    return producer, consumers


def graphs_within(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """`graph` and every body nested in it, depth first (bodies looked for where `may_own_bodies`)."""
    yield graph
    for node in graph.node:
        if may_own_bodies(node.op_type, node.domain):
            for body in subgraphs(node):
                yield from graphs_within(body)
