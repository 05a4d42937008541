"""Shape reads in rules 4-6: a `Shape` or `Size` of a value is read wherever the value is held.

A module hands its caller the values it returns, and the caller (or the caller's caller) may take
their shape at any time after: a shape read says nothing of which module is still running, so
rule 4 does not carry it into its producer's caller (`shape_only`). One use of a shape is tied to
one statement, though: a shape taken only to reshape that same value is computed where the value
is reshaped (`shapes_with_their_reshape`, a choice).
"""

from __future__ import annotations

from tagger.infer.graph import RESHAPES, SHAPE_READS
from tagger.infer.state import State

__all__ = ["shape_only", "shapes_with_their_reshape"]


def shapes_with_their_reshape(state: State, result: list[int], shapes: list[bool]) -> None:
    """A shape taken of a value only to reshape that same value (`x.view(x.size(0), -1)`,
    `x.flatten(2)` of a dynamic-shape export) is computed in the statement that reshapes it: it
    goes with the reshape, as a choice. A shape read for anything else (a mask built from the
    embeddings' output shape) stays where rules 4-6 left it."""
    g, t = state.graph, state.tree
    for r in range(len(result)):
        if g.op[r] not in RESHAPES or result[r] < 0 or len(g.nodes[r].input) < 2:
            continue
        chain = _shape_chain(state, r, shapes)
        if not chain:
            continue
        for j in sorted(chain, reverse=True):
            if all(k == r or k in chain for k in g.readers[j]) and t.within(result[r], state.bounds[j]):
                if result[j] != result[r]:
                    result[j], state.certain[j] = result[r], False


def _shape_chain(state: State, r: int, shapes: list[bool]) -> set[int]:
    """The shape-only nodes that compute reshape `r`'s target shape, when every shape they read
    is of the value `r` reshapes (empty otherwise)."""
    g = state.graph
    data = g.nodes[r].input[0]
    chain: set[int] = set()
    frontier = [w for w in g.writers[r] if data not in g.nodes[w].output]
    while frontier:
        j = frontier.pop()
        if j in chain or g.constant[j]:
            continue
        if not shapes[j]:
            return set()
        chain.add(j)
        if g.op[j] not in SHAPE_READS:
            frontier.extend(g.writers[j])
        elif g.nodes[j].input[0] != data:
            return set()
    return chain


def shape_only(state: State, labels: list[int], up) -> list[bool]:
    """Per node, whether it reads its tagged producers only through their shape: a `Shape` or
    `Size` op, or an untagged node computed from such ops, constants and values no tagged node
    made (the model's arguments: a mask gathered at indices built from a shape). A shape is read
    wherever the value is held, after its producer's caller returned it as well as before
    (ALBERT builds its mask from the shape of its embeddings' output), so it says nothing of
    which module is still running."""
    g = state.graph
    found = [False] * len(labels)
    for i, label in enumerate(labels):
        if label >= 0:
            continue
        if g.op[i] in SHAPE_READS:
            found[i] = True
            continue
        computed = [j for j in g.writers[i] if not g.constant[j]]
        shaped = [j for j in computed if found[j]]
        found[i] = bool(shaped) and all(found[j] or (labels[j] < 0 and not up[j]) for j in computed)
    return found
