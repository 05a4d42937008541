"""Rule 3: inputs from several modules. Certain.

It rests on fact C:

**C. A value produced in one module and consumed in another belongs to neither.** A node whose
own inputs come from different modules (inside its bound) runs in their common caller, their
lowest common ancestor. A node that only passes a value from module `A` on to module `B` is
placed in neither unless fact B puts it there; its bound is what is certain.

  3. (C) Inputs from several modules inside the bound: their lowest common ancestor.

Not for a join of shape values alone (`Graph.shape_values`: a `Shape` or `Size` and what is
computed from them and constants) whose nearest tagged consumers do not all lie inside that
ancestor: a module hands its caller the sizes it read, and TorchScript records such Python ints
as graph values passed on as arguments (PVT's and Swin's patch embeddings return the height and
width their blocks' attention reshapes with), so every side's module may have returned when the
join runs. The ancestor is kept as rule 4a's choice (`State.shape_joins`), not as certain
(where the order says nothing, not even that: `joins._shape_joins`).

A join of one value with sizes (`Graph.sizes`) under the same condition keeps the ancestor, but
not as a fact: the sizes may have been handed on with the value (Swinv2's embeddings return
their output with the height and width its projection's output has, and the first block
reshapes one with the other), or the join may be the ancestor's own last op. The graph is
inferred again with such joins left open (`State.sizes_open`), and a tag stays certain only
where that run gives it as certain too (`tagger.infer.infer_graph`).
"""

from __future__ import annotations

from tagger.infer.graph import Graph
from tagger.infer.state import OPEN, Flows, State, Steps

__all__ = ["STEPS"]


def decide(state: State, i: int, bound: int, flows: Flows) -> int | None:
    if flows.up[i] is None:
        return None
    combined = _combining(state, i, bound, flows.up)
    if combined is None:
        return None
    if _passed_on_shapes(state, i, combined, flows.down[i]):
        state.shape_joins[i] = combined
        return OPEN
    if _value_with_sizes(state, i, combined, flows.down[i]):
        if state.sizes_open:
            state.shape_joins[i] = combined
            return OPEN
        state.sized.add(i)
    state.combined.add(i)
    return combined


def _passed_on_shapes(state: State, i: int, common: int, consumers) -> bool:
    """Whether join `i` reads shape values alone and its nearest tagged consumers do not all
    lie inside `common`, its sides' lowest common ancestor (nothing holds it there)."""
    g, t = state.graph, state.tree
    if consumers and all(t.within(m, common) for m in consumers):
        return False
    computed = [j for j in g.writers[i] if not g.constant[j]]
    return bool(computed) and all(g.shape_values[j] for j in computed)


def _value_with_sizes(state: State, i: int, common: int, consumers) -> bool:
    """Whether join `i` reads one value and sizes (`Graph.sizes`), and its nearest tagged
    consumers do not all lie inside `common` (see the module docstring)."""
    g, t = state.graph, state.tree
    if consumers and all(t.within(m, common) for m in consumers):
        return False
    computed = [j for j in g.writers[i] if not g.constant[j]]
    sizes = sum(g.sizes[j] for j in computed)
    return sizes > 0 and len(computed) - sizes == 1


def _combining(state: State, i: int, bound: int, up: list) -> int | None:
    """Rule 3 (fact C): the node's own inputs come from different modules inside the bound
    (not a chain after such a node: that may already be one of them, or their caller)."""
    t, labels, g = state.tree, state.labels, state.graph
    if len(g.writers[i]) < 2:
        return None  # one side at most
    sides = set()
    for j in g.writers[i]:
        flow = (labels[j],) if labels[j] >= 0 else up[j]
        inside = [m for m in flow or () if t.within(m, bound)]
        if inside:
            sides.add(t.lca_all(inside))
    return t.lca_all(sides) if len(sides) > 1 else None


def _may(graph: Graph) -> list[bool]:
    """`decide` looks at nodes with two producers or more (one side at most joins nothing)."""
    return [len(writers) > 1 for writers in graph.writers]


STEPS = Steps(decide=decide, may=_may)
