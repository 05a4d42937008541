"""Inference for nodes without evidence: topological context inheritance, both directions.

Exporters emit nodes in execution order, and a module's forward runs as one stretch of that
order with its children's stretches nested inside. For an untagged node between the nearest
tagged nodes before it (`P`) and after it (`N`), the module it ran in lies within
`bound = lca(P, N)`. Dataflow then says where inside the bound. The context rule works in two
passes; the first takes only confident decisions, which then serve as context for the second:

Confident (repeated until nothing changes):
  1. The node's nearest tagged producers lie in several modules, or in a module that has
     children: it combines their results, so it runs in their LCA.
  2. Two or more tagged nodes of the same leaf module (a `Linear`, a `LayerNorm`) and nothing
     else inside the bound feed it: it joins that leaf's own branches (a quantized MatMul's
     rescale). Producers outside the bound (a residual input) are ignored by rules 1-2.
  3. It is a matrix product or convolution with a weight-like constant (an unnamed initializer
     of rank >= 2, a folded or transposed parameter) and feeds one node of a leaf tagged by
     evidence (through untagged nodes): it is that leaf's head (a Linear's MatMul before its
     bias Add). A node fed by a leaf and feeding only that same leaf lies inside it.
  4. A node with no inputs (a Constant) is made where it is used: in the module of its direct
     consumers, once they agree.
  5. A Reshape or Flatten directly before or after a tagged `Gemm` (a 2-D-only op that
     exporters and tools wrap in reshapes to apply a Linear to N-D input) belongs to it.
Then, for what is left:
  6. A single producer leaf: the node runs in the leaf's parent, if that parent is still open
     (the next tagged node lies inside it, or the node's result goes no further than the
     parent's parent — the parent's own output).
  7. The nearest tagged consumers sit in one module that has already started (the next tagged
     node is inside it): the node prepares their input inside it (its parent, if a leaf).
  8. Otherwise the bound itself (values a caller computes and passes down, like masks) — widened
     to include the consumers when the node depends on nothing tagged and feeds nothing inside
     the bound (a tool moved a mask computation into another module's stretch).
Finally, a constant decided by context follows its first direct consumer. Module lists own no
op: an inferred list becomes its parent (`tagging.py`).

The confident rules are tried most specific first (4, 5, 3, then 1-2). Each rule was kept
because it raised accuracy against exporter truth in `bench/accuracy.py` without lowering any
other case. Nothing here knows a model or a layer name. `STRATEGIES` also holds the baselines the
accuracy benchmark compares against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tagger.index import NodeView
from tagger.paths import is_within, lca, lca_all, parent

__all__ = ["Flow", "GraphFacts", "STRATEGIES", "infer_graph"]

_CONFIDENT_ROUNDS = 4
_GEMM_RESHAPES = frozenset({"Reshape", "Flatten"})
_WEIGHTED_OPS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose", "MatMulInteger", "ConvInteger", "QLinearMatMul"})


@dataclass(frozen=True)
class GraphFacts:
    """What inference may know beyond labels: modules with children, weight-like constants,
    and module lists (which own no op: an inferred list becomes its parent)."""

    containers: set[str] = field(default_factory=set)
    weights: frozenset[str] = frozenset()
    sequences: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Flow:
    """The nearest tagged nodes on one side: their modules (a few, then their LCA) and which
    tagged nodes they are (a few), so rules can tell one source from several."""

    modules: frozenset[str]
    origins: frozenset[int]

    @property
    def module(self) -> str:
        return lca_all(self.modules) or ""

    @property
    def spread(self) -> bool:
        return len(self.modules) > 1

    def inside(self, bound: str) -> frozenset[str]:
        """The modules that lie within `bound` (the others came in from outside)."""
        return frozenset(m for m in self.modules if is_within(m, bound))


_MAX_MODULES = 8
_MAX_ORIGINS = 3


def _origin(label: str, node: int, memo: dict[int, Flow]) -> Flow:
    """The flow of one tagged node, memoised per pass (the same origins are met again and again)."""
    flow = memo.get(node)
    if flow is None:
        flow = memo[node] = Flow(frozenset((label,)), frozenset((node,)))
    return flow


def _merge(a: Flow | None, b: Flow | None) -> Flow | None:
    if a is None:
        return b
    if b is None or a == b:
        return a
    modules = a.modules | b.modules
    if len(modules) > _MAX_MODULES:
        modules = frozenset((lca_all(modules) or "",))
    origins = a.origins | b.origins
    if len(origins) > _MAX_ORIGINS:
        origins = frozenset(sorted(origins)[:_MAX_ORIGINS])
    return Flow(modules, origins)


def _producer_flows(nodes: Sequence[NodeView], labels: list[str | None]) -> list[Flow | None]:
    """For each position, the nearest tagged producers (through untagged chains)."""
    producer: dict[str, int] = {}
    flows: list[Flow | None] = [None] * len(nodes)
    memo: dict[int, Flow] = {}
    for i, node in enumerate(nodes):
        flow: Flow | None = None
        for name in node.input:
            j = producer.get(name)
            if j is None:
                continue
            label = labels[j]
            flow = _merge(flow, _origin(label, j, memo) if label is not None else flows[j])
        flows[i] = flow
        for name in node.output:
            if name:
                producer[name] = i
    return flows


def _producers(nodes: Sequence[NodeView]) -> list[list[int]]:
    """For each position, the earlier positions whose outputs it reads."""
    producer: dict[str, int] = {}
    result: list[list[int]] = []
    for i, node in enumerate(nodes):
        result.append([producer[name] for name in node.input if name in producer])
        for name in node.output:
            if name:
                producer[name] = i
    return result


def _consumers(nodes: Sequence[NodeView]) -> list[list[int]]:
    """For each position, the later positions that read one of its outputs."""
    readers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            if name:
                readers.setdefault(name, []).append(i)
    return [[k for name in node.output for k in readers.get(name, ()) if k > i] for i, node in enumerate(nodes)]


def _consumer_flows(consumers: list[list[int]], labels: list[str | None]) -> list[Flow | None]:
    """For each position, the nearest tagged consumers (through untagged chains)."""
    flows: list[Flow | None] = [None] * len(labels)
    memo: dict[int, Flow] = {}
    for i in range(len(labels) - 1, -1, -1):
        flow: Flow | None = None
        for k in consumers[i]:
            label = labels[k]
            flow = _merge(flow, _origin(label, k, memo) if label is not None else flows[k])
        flows[i] = flow
    return flows


def _neighbours(labels: list[str | None]) -> tuple[list[str | None], list[str | None]]:
    """The nearest tagged label before and after each position."""
    before: list[str | None] = [None] * len(labels)
    after: list[str | None] = [None] * len(labels)
    last: str | None = None
    for i, label in enumerate(labels):
        before[i] = last
        if label is not None:
            last = label
    last = None
    for i in range(len(labels) - 1, -1, -1):
        after[i] = last
        if labels[i] is not None:
            last = labels[i]
    return before, after


def _bound(before: str | None, after: str | None) -> str:
    return lca(before, after) if before is not None and after is not None else ""


def _context_rule(nodes: Sequence[NodeView], labels: list[str | None], facts: GraphFacts) -> list[str | None]:
    gemms = frozenset(i for i, node in enumerate(nodes) if node.op_type == "Gemm")
    edges = _Edges(_producers(nodes), _consumers(nodes), gemms)
    consumers = edges.readers
    current = list(labels)
    for _ in range(_CONFIDENT_ROUNDS):
        if not _confident_pass(nodes, current, labels, edges, facts):
            break
    if all(label is None for label in current):
        return current
    producers = _producer_flows(nodes, current)
    downstream = _consumer_flows(consumers, current)
    before, after = _neighbours(current)
    result = list(current)
    for i, label in enumerate(current):
        if label is None:
            bound = _bound(before[i], after[i])
            result[i] = _contextual(producers[i], downstream[i], after[i], bound, facts.containers)
    _follow_users(nodes, labels, result, edges.readers)
    return result


def _follow_users(
    nodes: Sequence[NodeView], evidence: list[str | None], result: list[str | None], readers: list[list[int]]
) -> None:
    """Constants decided by context move to the module of their (now known) direct consumers;
    a constant shared by several modules stays with its first user, where it was made."""
    for i in range(len(nodes) - 1, -1, -1):
        if evidence[i] is None and not nodes[i].input and readers[i]:
            first = result[min(readers[i])]
            if first is not None:
                result[i] = first


def _confident_pass(
    nodes: Sequence[NodeView],
    labels: list[str | None],
    evidence: list[str | None],
    edges: _Edges,
    facts: GraphFacts,
) -> bool:
    """Rules 1-5, applied to `labels` in place; returns whether anything was decided."""
    producers = _producer_flows(nodes, labels)
    consumers = _consumer_flows(edges.readers, evidence)
    before, after = _neighbours(labels)
    decided: dict[int, str] = {}
    for i, label in enumerate(labels):
        if label is not None or (before[i] is None and after[i] is None):
            continue
        bound = _bound(before[i], after[i])
        choice = _confident(nodes[i], i, producers[i], consumers[i], edges, (labels, evidence), bound, facts)
        if choice is not None:
            decided[i] = choice
    for i, module in decided.items():
        labels[i] = module
    return bool(decided)


def _confident(
    node: NodeView,
    position: int,
    produced: Flow | None,
    consumed: Flow | None,
    edges: _Edges,
    known: tuple[list[str | None], list[str | None]],
    bound: str,
    facts: GraphFacts,
) -> str | None:
    """Rules 1-5, most specific first: a structural fact about the node beats its neighbourhood."""
    labels, evidence = known
    if not node.input:
        users = {labels[k] for k in edges.readers[position]}
        if len(users) == 1 and None not in users:
            (user,) = users
            return user if is_within(user, bound) else None
        return None
    if node.op_type in _GEMM_RESHAPES:
        gemms = {evidence[k] for k in edges.writers[position] + edges.readers[position] if k in edges.gemm}
        leaf = _single_leaf(gemms - {None}, facts.containers)
        if leaf is not None:
            return leaf
    consumer_leaf = _single_leaf(set(consumed.modules), facts.containers) if consumed is not None else None
    if node.op_type in _WEIGHTED_OPS and any(name in facts.weights for name in node.input):
        if consumed is not None and len(consumed.origins) == 1:
            return consumer_leaf
    if produced is None:
        return None
    if consumer_leaf is not None and consumer_leaf in produced.modules:
        return consumer_leaf
    inside = produced.inside(bound)
    if len(inside) > 1 or (inside and next(iter(inside)) in facts.containers):
        return lca_all(inside)
    if len(inside) == 1 and len(produced.origins) >= 2 and not produced.spread:
        return next(iter(inside))
    return None


@dataclass(frozen=True)
class _Edges:
    """Direct dataflow neighbours by position."""

    writers: list[list[int]]
    readers: list[list[int]]
    gemm: frozenset[int] = frozenset()


def _single_leaf(modules: set[str | None], containers: set[str]) -> str | None:
    if len(modules) == 1:
        (module,) = modules
        if module is not None and module not in containers:
            return module
    return None


def _contextual(produced: Flow | None, consumed: Flow | None, nxt: str | None, bound: str, containers: set[str]) -> str:
    """Rules 6-8."""
    inside = produced.inside(bound) if produced is not None else frozenset()
    if len(inside) == 1:
        (module,) = inside
        candidate = module if module in containers else parent(module)
        if _still_open(candidate, nxt, consumed) and is_within(candidate, bound):
            return candidate
    if consumed is not None and not consumed.spread:
        candidate = consumed.module if consumed.module in containers else parent(consumed.module)
        already_open = nxt is None or is_within(nxt, candidate)
        if already_open and is_within(candidate, bound):
            return candidate
    if produced is None and consumed is not None and not consumed.inside(bound):
        return lca(bound, consumed.module) or ""
    return bound


def _still_open(module: str, nxt: str | None, consumed: Flow | None) -> bool:
    """Whether `module` may still be running: the next tagged node is inside it, or the node's
    consumers are inside its parent (its result leaves it as its output, not a later sibling's
    input computed elsewhere)."""
    if nxt is None or is_within(nxt, module):
        return True
    return consumed is not None and bool(module) and is_within(consumed.module, parent(module))


def _producer_rule(nodes: Sequence[NodeView], labels: list[str | None], facts: GraphFacts) -> list[str | None]:
    """Baseline: one-directional inheritance from the nearest tagged producers."""
    flows = _producer_flows(nodes, labels)
    return [label if label is not None else (f.module if f else None) for label, f in zip(labels, flows, strict=True)]


def _two_sided_lca_rule(nodes: Sequence[NodeView], labels: list[str | None], facts: GraphFacts) -> list[str | None]:
    """Baseline: LCA of the nearest tagged producers and consumers."""
    ups = _producer_flows(nodes, labels)
    downs = _consumer_flows(_consumers(nodes), labels)
    result: list[str | None] = []
    for label, up, down in zip(labels, ups, downs, strict=True):
        merged = _merge(up, down)
        result.append(label if label is not None else (merged.module if merged else None))
    return result


def _no_inference(nodes: Sequence[NodeView], labels: list[str | None], facts: GraphFacts) -> list[str | None]:
    """Baseline: nothing inherited, every untagged node falls back to the root."""
    return list(labels)


Rule = Callable[[Sequence[NodeView], list[str | None], GraphFacts], list[str | None]]
STRATEGIES: dict[str, Rule] = {
    "context": _context_rule,
    "producer": _producer_rule,
    "lca": _two_sided_lca_rule,
    "root": _no_inference,
}


def infer_graph(
    nodes: Sequence[NodeView], labels: list[str | None], facts: GraphFacts, strategy: str = "context"
) -> list[str | None]:
    """Fill the `None` labels of one graph's nodes (in graph order); None stays where nothing is known."""
    if None not in labels or all(label is None for label in labels):
        return list(labels)  # nothing to infer, or nothing to infer from
    return STRATEGIES[strategy](nodes, labels, facts)
