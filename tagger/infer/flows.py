"""Fact A and the flows every rule reads: per node, its nearest tagged producers and consumers
(pushed through untagged nodes only), its nearest tagged neighbours in the order, and its bound.

**A. Nesting.** A module's forward is one contiguous stretch of execution order (per call), with
its children's stretches nested inside. Exporters emit nodes in that order, so an untagged node
between the nearest tagged nodes before it (`P`) and after it (`N`) ran inside every module
whose stretch holds both: its *bound* `lca(P, N)`. The bound is certain; anything deeper is a
choice. A node computed from constants alone (a `Constant`, a `ConstantOfShape` of one) has no
place in the order (tools hoist and sink them): it lives where it is used.
Order check: tools may re-sort a graph (any topological order is valid). An exporter writes a
chain of ops one after the other, so most nodes directly follow a node they read; when fewer
than `_ORDERED_SHARE` of them do, the order says nothing and the bound is the lowest common
ancestor of the node's tagged producers and consumers instead. Where the order holds overall
but none of a node's tagged producers or consumers lies inside its bound, a tool moved it: the
bound is widened to include them; a node that touches nothing tagged at all (a mask chain a tool
moved in among the embeddings, in a fresh export that names almost nothing) is bounded by the
root: its position is all that would place it. A node computed from graph inputs and constants alone (a mask
built from `attention_mask`) depends on nothing of the stretch it sits in, so any tool may have
moved it there; when some of its tagged consumers lie outside its bound, the bound is widened to
include them too. When separate stretches share its result (two entries of a module list, two
calls of one module) it exists before the first of them, built by whichever module received the
graph inputs; if its position cannot be where it ran (a tool moved it, or it sits inside its
consumers' module), nothing certain places it below the root, and it is placed, as a choice, in
the lowest module holding every tagged node of the graph: the model the graph inputs enter.
A node of an op no exporter writes (onnxruntime's contrib ops, a fused `SimplifiedLayerNormalization`)
was made by a later tool, which put it where its own sort landed it (onnxruntime's optimizer
appends what it fuses and sorts again: the nodes that do not depend on it move ahead of it): its
place says nothing, and it is bounded as in a re-sorted file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tagger.infer.graph import Graph
from tagger.infer.tree import Tree

if TYPE_CHECKING:
    from tagger.infer.state import State

__all__ = ["MAX_FLOW", "Dataflow", "bound"]

MAX_FLOW = 8


class Dataflow:
    """The flows of one graph, each computed again only when the labels it was computed from changed."""

    def __init__(self, graph: Graph, tree: Tree) -> None:
        self.g = graph
        self.t = tree
        self._flows: dict[str, tuple[list[int], tuple[list, list]]] = {}
        """The last flows each way and the last neighbours, with the labels they were computed from."""
        self._two_call_pairs: dict[int, bool] = {}
        """`_two_calls`'s verdicts, by pair of positions (`first * count + second`)."""
        self._single = _Singletons()
        self._label_ints = np.empty(0, dtype=object)

    def up(self, labels: list[int]) -> tuple[list, list]:
        """For each node, the labels (a frozenset) and the tagged nodes (a sorted tuple: a tenth of a
        frozenset's bytes, and nothing iterates them in an order that matters) that are its
        nearest tagged producers (computed again only when the labels changed since the last call)."""
        writers = self.g.writers
        return self._flow("up", labels, writers, lambda: [i for i, label in enumerate(labels) if label < 0 and writers[i]])

    def down(self, labels: list[int]) -> tuple[list, list]:
        """The same for the nearest tagged consumers; a tagged constant looks on to its readers too."""
        constant = self.g.constant
        needed = lambda: [i for i in range(len(labels) - 1, -1, -1) if labels[i] < 0 or constant[i]]  # noqa: E731
        return self._flow("down", labels, self.g.readers, needed)

    def _flow(self, key: str, labels: list[int], links, visit) -> tuple[list, list]:
        """One direction's flow through untagged nodes only: `visit()` lists the nodes whose flow is
        needed, each after its `links` (a list made in one comprehension: a call per node to
        test it costs more than the flow of most nodes)."""
        memo = self._flows.get(key)
        if memo is not None and memo[0] == labels:
            return memo[1]
        mods: list = [None] * len(labels)
        origins: list = [None] * len(labels)
        single, tree = self._single, self.t
        for i in visit():
            linked = links[i]
            if len(linked) == 1:  # most nodes: the one link's flow as it is
                j = linked[0]
                if labels[j] >= 0:
                    mods[i], origins[i] = single[labels[j]], (j,)
                else:
                    mods[i], origins[i] = mods[j], origins[j]
                continue
            m: frozenset | None = None
            o: tuple | None = None
            for j in linked:
                if labels[j] >= 0:
                    m2, o2 = single[labels[j]], (j,)
                else:
                    m2, o2 = mods[j], origins[j]
                if m is None and o is None:  # the first link's flow as it is (`_union` with nothing)
                    m, o = m2, o2
                else:
                    m, o = _union(m, m2, tree), _union_origins(o, o2)
            mods[i], origins[i] = m, o
        self._flows[key] = (list(labels), (mods, origins))
        return mods, origins

    def neighbours(self, labels: list[int]) -> tuple[list[int], list[int]]:
        """The nearest tagged label before and after each position (-1: none), with numpy; as
        lists (the passes read them one position at a time: a list's item is cheaper than numpy's).
        Computed again only when the labels changed since the last call (a pass that decided
        nothing leaves them for the next one)."""
        memo = self._flows.get("neighbours")
        if memo is not None and memo[0] == labels:
            return memo[1]
        arr = np.asarray(labels, dtype=np.int64)
        tagged = arr >= 0
        n = len(arr)
        positions = np.arange(n)
        last = np.where(tagged, positions, -1)
        last = np.maximum.accumulate(last)
        before = np.full(n, -1, dtype=np.int64)
        before[1:] = np.where(last[:-1] >= 0, arr[np.maximum(last[:-1], 0)], -1)
        nxt = np.where(tagged, positions, n)
        nxt = np.minimum.accumulate(nxt[::-1])[::-1]
        after = np.full(n, -1, dtype=np.int64)
        after[:-1] = np.where(nxt[1:] < n, arr[np.minimum(nxt[1:], n - 1)], -1)
        self._two_calls(before, after, last, nxt)
        found = self._label_list(before), self._label_list(after)
        self._flows["neighbours"] = (list(labels), found)
        return found

    def _label_list(self, labels: np.ndarray) -> list[int]:
        """`labels.tolist()` holding one int object per label id (`tolist` makes one per position:
        ids above 256 are objects of their own, 17 MB for the two neighbour lists at 300k nodes)."""
        count = len(self.t.paths) + 1
        if len(self._label_ints) < count:
            self._label_ints = np.arange(-1, count - 1).astype(object)  # ids from -1 (none) up
        return self._label_ints[labels + 1].tolist()

    def _two_calls(self, before: np.ndarray, after: np.ndarray, last: np.ndarray, nxt: np.ndarray) -> None:
        """Fact A holds per call: a node between two reads of one parameter (a module called twice,
        or a weight tied into two modules: BART's embedding at the start of the encoder and of
        the decoder) lies between two calls, in neither. Its neighbour after says nothing then:
        it is set to the root, so the bound is the root and no rule reads the module as running."""
        parameters = self.g.facts.parameters
        if not parameters:
            return
        inputs = self.g.nodes
        same = np.flatnonzero((before[1:-1] >= 0) & (before[1:-1] == after[1:-1])) + 1
        # each distinct pair of tagged nodes around such a stretch judged once in a run (numpy spreads the verdicts)
        count = len(before)
        pairs, where = np.unique(last[same - 1] * count + nxt[same + 1], return_inverse=True)
        judged = self._two_call_pairs
        verdict = []
        for pair in pairs.tolist():
            found = judged.get(pair)
            if found is None:
                first, second = divmod(pair, count)
                found = judged[pair] = bool(parameters.intersection(inputs[first].input).intersection(inputs[second].input))
            verdict.append(found)
        after[same[np.array(verdict, dtype=bool)[where.reshape(-1)]]] = self.t.root


def bound(state: State, i: int, before, after, up, down) -> int:
    """Fact A's bound of untagged node `i`: what is certain about where it ran."""
    t = state.tree
    if not state.order_bounds or state.graph.tool_made[i]:  # bounded by its tagged producers and consumers alone
        flows = [m for f in (up[i], down[i]) if f for m in f]
        return t.lca_all(flows) if up[i] and down[i] else t.root
    b, a = before[i], after[i]
    bound = t.lca(b, a) if b >= 0 and a >= 0 else t.root
    produced, consumed = up[i], down[i]
    if not produced and not consumed:
        return t.root  # touches nothing tagged: a tool may have put it anywhere (fact A says nothing)
    if bound == t.root:
        return bound
    within = t.within
    if produced:  # the bound stands when any flow lies inside it (the first found is enough)
        for flow in (produced, consumed):
            for m in flow or ():
                if within(m, bound):
                    return bound
    elif all(within(m, bound) for m in consumed):
        return bound  # made of graph inputs alone: it stands only when every consumer is inside
    # a tool moved the node (nothing it touches is here), or graph inputs alone, free to be moved anywhere
    flows = [m for f in (produced, consumed) if f for m in f]
    return t.lca(bound, t.lca_all(flows))


class _Singletons(dict):
    """`frozenset((x,))` for each int `x`, made once: most flows are one module or one node, and
    a frozenset costs 216 bytes (a flow per untagged node each way: 80 MB at 300k nodes)."""

    def __missing__(self, key: int) -> frozenset[int]:
        found = self[key] = frozenset((key,))
        return found


def _union(a: frozenset | None, b: frozenset | None, tree: Tree) -> frozenset | None:
    if a is None:
        return b
    if b is None or a is b or a == b:
        return a
    merged = a | b
    if len(merged) > MAX_FLOW:
        merged = frozenset((tree.lca_all(merged),))
    return merged


def _union_origins(a: tuple[int, ...] | None, b: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """`_union` of two flows' nodes, kept as sorted tuples: the first `MAX_FLOW` nodes of both."""
    if a is None:
        return b
    if b is None or a is b or a == b:
        return a
    return tuple(sorted(set(a).union(b))[:MAX_FLOW])
