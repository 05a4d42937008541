"""Rule 4a: a join runs in a module that holds every value it reads. It rests on fact C (`combining.py`)
and fact A (`flows.py`: the next tagged node). A choice.

  4a. (C) A node reading several values runs in a module that holds them all. A value is held by
     the module that produced it and by each module a node reading it lies in (it was passed
     in); a value an untagged op without weights made from one other (a permute) is held where
     that one was. The deepest module inside the bound (or inside rule 3's module) holding every input,
     and containing the next tagged node (fact A: the join's result is still used inside it), is
     chosen (past module lists) - or, where the tagged neighbours lie in two entries of one module
     list, the deepest inside the earlier entry (a list's caller only hands the running value from
     entry to entry, so the join ends that entry; not for a tool's fused op): a
     residual join runs in the block whose first child read its input and whose last child made
     the other. Where the order says nothing (an unordered file, or one a tool sorted
     breadth-first: `tagger.model.producers`), the join's nearest tagged consumers must all lie
     inside the module instead. A caller holding both is possible too, hence a choice. Values that are all results
     of one leaf's own ops are joined after its last parameter use (fact B), in its caller. Its decisions are context
     for rules 4-6 through dataflow, not through the order's neighbours. A join of shape values
     that rule 3 left open (`combining.py`) starts as a choice of its sides' lowest common
     ancestor, refined like rule 3's, where the order bounds where a node ran.
"""

from __future__ import annotations

import bisect
import itertools
import math

from tagger.infer.flows import MAX_FLOW
from tagger.infer.flows import bound as bound_of
from tagger.infer.state import State, Steps

__all__ = ["STEPS"]

_MAX_CHOICES = 256

_Held = dict[int, tuple[list[str], list[tuple[int, int, int, int]]]]
"""`_holders`'s answers in one pass, by node."""


def _joins_pass(state: State, certain_labels: list[int]) -> None:
    """Rule 4a on what the facts left open: a join runs in the deepest module that holds all
    its inputs. A value is held by the module that produced it and by every module a node
    reading it lies in (it was passed in); a node that reads several values can run in a
    module only if the module holds all of them. The deepest such module inside the bound
    that contains the next tagged node (fact A) is a choice, not certain: a caller may
    hold the same values. A module list holds nothing of its own: its caller is taken."""
    labels = state.labels
    _shape_joins(state, certain_labels)
    up, _ = state.flow.up(labels)
    down, _ = state.flow.down(state.evidence)
    before, after = state.flow.neighbours(labels)
    decided: dict[int, tuple[int, int]] = {}
    memo: _Held = {}  # labels stay as they are in this loop; 12 MB at 300k nodes, and stale once the labels change
    writers = state.graph.writers
    for i, label in enumerate(labels):
        if (label >= 0 and i not in state.combined) or (before[i] < 0 and after[i] < 0) or len(writers[i]) < 2:
            continue  # a join reads two values or more
        bound = label if label >= 0 else bound_of(state, i, before, after, up, down)  # rule 3's module, refined
        join = _join(state, memo, i, bound, before[i], after[i], down[i])
        if join is not None:
            decided[i] = (join, bound)
    for i, (module, bound) in decided.items():
        labels[i] = module
        state.bounds[i] = bound
        state.certain[i] = False


def _shape_joins(state: State, certain_labels: list[int]) -> None:
    """The joins of shape values rule 3 left open take their sides' lowest common ancestor as a
    choice, inside their bound (fact A), before the other joins are refined with them. Not where
    the order says nothing: a bound there rests on the nearest tagged producers and consumers,
    and the size reads before such a join would be stated in its module (Swin's first block's
    reads of the sizes its embeddings returned, after `quantize_static`)."""
    labels = state.labels
    open_joins = {i: m for i, m in state.shape_joins.items() if labels[i] < 0}
    if not open_joins or not state.order_bounds:
        return
    up, _ = state.flow.up(labels)
    down, _ = state.flow.down(state.evidence)
    before, after = state.flow.neighbours(certain_labels)
    bounds = {i: bound_of(state, i, before, after, up, down) for i in open_joins}
    for i, module in open_joins.items():
        labels[i], state.bounds[i], state.certain[i] = module, bounds[i], False
        state.combined.add(i)


def _join(state: State, memo: _Held, i: int, bound: int, before: int, after: int, consumers) -> int | None:
    """Rule 4a for node `i`: the deepest module inside `bound` that holds every value it reads,
    when its result stays in it (`_stays_in`)."""
    g, t = state.graph, state.tree
    writers = [j for j in dict.fromkeys(g.writers[i]) if not g.constant[j]]
    if len(writers) < 2:
        return None
    holders = []
    for j in writers:
        held = _held_by(state, memo, j, i, bound)
        if not held:
            return None  # a value from outside the bound that no module inside it is seen to hold
        holders.append(held)
    if math.prod(map(len, holders)) > _MAX_CHOICES:
        return None
    deepest = max((t.lca_all(choice) for choice in itertools.product(*holders)), key=t.depth)
    if t.leaf[deepest] and all(state.labels[j] == deepest for j in writers):
        deepest = t.parent(deepest)  # fact B: a leaf's own results are joined after its last use, by its caller
    while t.is_sequence(deepest) and deepest != bound:
        deepest = t.parent(deepest)
    if deepest == bound or not t.within(deepest, bound) or t.is_sequence(deepest):
        return None
    return deepest if _stays_in(state, i, deepest, before, after, consumers) else None


def _stays_in(state: State, i: int, module: int, before: int, after: int, consumers) -> bool:
    """Whether join `i`'s result stays in `module` (else the join may as well be the caller's):
    the next tagged node is inside it, or the join ends a list entry holding it; where the order
    says nothing (an unordered or re-sorted file: `tagger.model.producers`), every nearest tagged
    consumer of the join lies inside it."""
    t = state.tree
    if not state.order_bounds:
        return bool(consumers) and all(t.within(m, module) for m in consumers)
    return (after >= 0 and t.within(after, module)) or _ends_list_entry(state, i, module, before, after)


def _ends_list_entry(state: State, i: int, module: int, before: int, after: int) -> bool:
    """Whether join `i` of values held in `module` is the last work of the list entry that
    holds `module`: its tagged neighbours lie in two entries of one module list, and a list's
    caller only hands the running value from one entry to the next (an `nn.Sequential` runs no
    op; a loop over a `ModuleList` calls entry after entry), so a join of values held inside
    entry k, met before entry k+1's first tagged node, ends entry k (a ResNet block's residual,
    a parallel-residual layer's sum). A choice: a loop may add a residual itself. Not for a
    tool's fused op, which may compute the next entry's first ops as well."""
    t = state.tree
    if before < 0 or after < 0 or state.graph.nodes[i].domain not in ("", "ai.onnx"):
        return False
    lists = t.lca(before, after)
    if not t.is_sequence(lists) or lists in (before, after):
        return False
    prefix = t.paths[lists] + "." if t.paths[lists] else ""
    entry = t.id(prefix + t.paths[before][len(prefix) :].split(".")[0])
    return t.within(module, entry)


def _held_by(state: State, memo: _Held, j: int, i: int, bound: int) -> set[int]:
    """The modules inside `bound` holding node `j`'s value, seen from its reader `i` (which
    holds nothing yet): the labels of `j` and of its other readers, a set filled in the
    order they appear (as a comprehension over the nodes would: `max` takes the first of equals).
    Those inside `bound` are `bound` itself and a range of the labels sorted by path."""
    if bound < 0:
        return set()
    paths, entries = _holders(state, memo, j)
    below = state.tree.paths[bound]
    if below:
        start = bisect.bisect_left(paths, below)
        inside = entries[start : start + 1] if start < len(paths) and paths[start] == below else []
        inside += entries[bisect.bisect_left(paths, below + ".") : bisect.bisect_left(paths, below + "/")]
    else:
        inside = entries
    own = state.labels[i]
    order = []
    for m, count, first, second in inside:
        if m == own and first == i:
            if count == 1:
                continue
            first = second
        order.append((first, m))
    order.sort()
    return {m for _, m in order}


def _holders(state: State, memo: _Held, j: int) -> tuple[list[str], list[tuple[int, int, int, int]]]:
    """The tagged labels among node `j` and its readers (each reader once), sorted by path:
    the paths, and per label how many nodes carry it and the first two that do."""
    found = memo.get(j)
    if found is None:
        labels = state.labels
        counts: dict[int, list[int]] = {}
        for k in (*_passed_from(state, j), *state.graph.readers[j]):
            m = labels[k]
            if m >= 0:
                seen = counts.get(m)
                if seen is None:
                    counts[m] = [1, k, -1]
                else:
                    if seen[0] == 1:
                        seen[2] = k
                    seen[0] += 1
        paths = state.tree.paths
        ranked = sorted(counts, key=paths.__getitem__)
        found = memo[j] = ([paths[m] for m in ranked], [(m, *counts[m]) for m in ranked])
    return found


def _passed_from(state: State, j: int) -> list[int]:
    """Node `j` and, while it is untagged and reads one computed value only and no weight (a
    transpose, a cast), the nodes it passes that value on from: such an op runs in a module
    holding its input, so the value it makes is held where the value it read was (ConvNeXt's
    permute back between the layer's scale and its residual join). A weighted op is a leaf's
    of its own, which the value was passed to."""
    g, labels = state.graph, state.labels
    chain = [j]
    while labels[j] < 0 and not g.weighted[j] and len(chain) <= MAX_FLOW:
        computed = [k for k in dict.fromkeys(g.writers[j]) if not g.constant[k]]
        if len(computed) != 1:
            break
        j = computed[0]
        chain.append(j)
    return chain


STEPS = Steps(choose=_joins_pass)
