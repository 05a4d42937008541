"""Inference for nodes without evidence: topological context inheritance, both directions.

Exporters emit nodes in execution order, and a module's forward runs as one stretch of that
order with its children's stretches nested inside. For an untagged node between the nearest
tagged nodes before it (`P`) and after it (`N`), the module it ran in lies in `U = lca(P, N)`.
Dataflow then says where inside `U`:

1. The nearest tagged producers converge on several modules (`spread`), or on a module that
   has tagged children: the node combines their results, so it runs in their LCA.
2. A single producer that is a leaf module (a `Linear`, a `LayerNorm`): the node runs in the
   leaf's parent, as long as that parent is still open (`N` lies inside it).
3. Otherwise the nearest tagged consumers, when they sit in one module: the node prepares
   their input inside that module (its parent if it is a leaf).
4. Otherwise `U` itself (values a caller computes and passes down, like attention masks).

Nothing here knows a model or a layer name. `STRATEGIES` also holds the baselines the
accuracy benchmark compares against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import onnx

from tagger.paths import is_within, lca, parent

__all__ = ["Flow", "STRATEGIES", "infer_graph"]


@dataclass(frozen=True, slots=True)
class Flow:
    """The LCA of the nearest tagged nodes on one side, and whether they disagreed."""

    module: str
    spread: bool


def _merge(a: Flow | None, b: Flow | None) -> Flow | None:
    if a is None:
        return b
    if b is None:
        return a
    module = lca(a.module, b.module)
    return Flow(module, a.spread or b.spread or a.module != b.module)


def _producer_flows(nodes: Sequence[onnx.NodeProto], labels: list[str | None]) -> list[Flow | None]:
    """For each position, the nearest tagged producers (through untagged chains)."""
    producer: dict[str, int] = {}
    flows: list[Flow | None] = [None] * len(nodes)
    for i, node in enumerate(nodes):
        flow: Flow | None = None
        for name in node.input:
            j = producer.get(name)
            if j is None:
                continue
            label = labels[j]
            flow = _merge(flow, Flow(label, False) if label is not None else flows[j])
        flows[i] = flow
        for name in node.output:
            if name:
                producer[name] = i
    return flows


def _consumer_flows(nodes: Sequence[onnx.NodeProto], labels: list[str | None]) -> list[Flow | None]:
    """For each position, the nearest tagged consumers (through untagged chains)."""
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            if name:
                consumers.setdefault(name, []).append(i)
    flows: list[Flow | None] = [None] * len(nodes)
    for i in range(len(nodes) - 1, -1, -1):
        flow: Flow | None = None
        for name in nodes[i].output:
            for k in consumers.get(name, ()):
                if k <= i:
                    continue
                label = labels[k]
                flow = _merge(flow, Flow(label, False) if label is not None else flows[k])
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


def _context_rule(nodes: Sequence[onnx.NodeProto], labels: list[str | None], inner: set[str]) -> list[str | None]:
    producers = _producer_flows(nodes, labels)
    consumers = _consumer_flows(nodes, labels)
    before, after = _neighbours(labels)

    def lift(module: str) -> str:
        return module if module in inner else parent(module)

    result: list[str | None] = list(labels)
    for i, label in enumerate(labels):
        if label is not None or (before[i] is None and after[i] is None):
            continue
        nxt = after[i]
        bound = lca(before[i], nxt) if before[i] is not None and nxt is not None else ""
        result[i] = _choose(producers[i], consumers[i], nxt, bound, lift, inner)
    return result


def _choose(
    produced: Flow | None,
    consumed: Flow | None,
    nxt: str | None,
    bound: str,
    lift: Callable[[str], str],
    inner: set[str],
) -> str:
    if produced is not None:
        if produced.spread or produced.module in inner:
            candidate: str | None = produced.module
        else:
            candidate = parent(produced.module)
            if nxt is not None and not is_within(nxt, candidate):
                candidate = None
        if candidate is not None and is_within(candidate, bound):
            return candidate
    if consumed is not None and not consumed.spread:
        candidate = lift(consumed.module)
        if is_within(candidate, bound):
            return candidate
    return bound


def _producer_rule(nodes: Sequence[onnx.NodeProto], labels: list[str | None], inner: set[str]) -> list[str | None]:
    """Baseline: one-directional inheritance from the nearest tagged producers."""
    flows = _producer_flows(nodes, labels)
    return [label if label is not None else (f.module if f else None) for label, f in zip(labels, flows, strict=False)]


def _two_sided_lca_rule(nodes: Sequence[onnx.NodeProto], labels: list[str | None], inner: set[str]) -> list[str | None]:
    """Baseline: LCA of the nearest tagged producers and consumers."""
    ups = _producer_flows(nodes, labels)
    downs = _consumer_flows(nodes, labels)
    result: list[str | None] = []
    for label, up, down in zip(labels, ups, downs, strict=False):
        merged = _merge(up, down)
        result.append(label if label is not None else (merged.module if merged else None))
    return result


def _no_inference(nodes: Sequence[onnx.NodeProto], labels: list[str | None], inner: set[str]) -> list[str | None]:
    """Baseline: nothing inherited, every untagged node falls back to the root."""
    return list(labels)


Rule = Callable[[Sequence[onnx.NodeProto], list[str | None], set[str]], list[str | None]]
STRATEGIES: dict[str, Rule] = {
    "context": _context_rule,
    "producer": _producer_rule,
    "lca": _two_sided_lca_rule,
    "root": _no_inference,
}


def infer_graph(
    nodes: Sequence[onnx.NodeProto], labels: list[str | None], inner: set[str], strategy: str = "context"
) -> list[str | None]:
    """Fill the `None` labels of one graph's nodes (in graph order); None stays where nothing is known.

    `inner` holds the modules known to have child modules; every other module is a leaf.
    """
    return STRATEGIES[strategy](nodes, labels, inner)
