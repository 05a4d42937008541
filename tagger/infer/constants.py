"""Rule 1: a constant, or a computation on constants. It rests on fact A (`flows.py`): a node computed
from constants alone has no place of its own in the order; it lives where it is used, and its
position says only which modules it ran before. Certain for a literal until its users are
choices; a choice for a computation.

  1. (A) A constant, or a computation on constants: where its users meet (their LCA); one
     built for a single leaf (ids for an embedding) is made by the leaf's caller. A computation
     (not a literal) ends as a choice: a module above its users may have made it and passed it in;
     in the exporter's order, one made before a named node of another module ran (between it and
     its first reader) was made above both.

`decide` places such a node once all its users are tagged (no later rule looks at it before);
`settle` places it again once every user is decided.
"""

from __future__ import annotations

import numpy as np

from tagger.infer.graph import Graph
from tagger.infer.state import OPEN, Flows, State, Steps

__all__ = ["STEPS", "home"]


def decide(state: State, i: int, bound: int, flows: Flows) -> int | None:
    """Rule 1 for node `i`: where its users meet, if it is made of constants (`OPEN` while a user is
    untagged)."""
    t, g, labels = state.tree, state.graph, state.labels
    if not g.constant[i]:
        return None
    users = {labels[k] for k in g.readers[i]}
    if users and -1 not in users:
        return home(state, i, t.lca_all(users))
    return OPEN


def home(state: State, i: int, users: int) -> int:
    """Where a constant is made: where its users meet; a computation on constants (a mask or
    index built from them) used by a leaf alone is made by the leaf's caller and passed in, and
    so are the indices an embedding looks up (a `Gather` on a parameter: `F.embedding(input,
    self.weight)` is the leaf's only op, its indices the caller's argument: position ids; an
    embedding subclass computing its own positions, BART's, gets its caller: shallower, sound)."""
    return state.tree.parent(users) if _passed_in(state, i, users) else users


def _passed_in(state: State, i: int, users: int) -> bool:
    """Whether node `i` is a value a leaf `users` receives as an argument (`home`): made by the
    leaf's caller, or by any module above it that passes it down (SqueezeBERT's model builds the
    zero token-type ids its embeddings hand to the token-type lookup), so only the root bounds it."""
    t = state.tree
    return users >= 0 and t.leaf[users] and users != t.root and bool(state.graph.nodes[i].input or _looked_up(state, i))


def _looked_up(state: State, i: int) -> bool:
    """Whether node `i`'s value is only read as the indices of a `Gather` on a parameter."""
    g = state.graph
    output = g.nodes[i].output[0] if g.nodes[i].output else ""
    lookups = [g.lookup(k) for k in g.readers[i]]
    return bool(lookups) and all(found is not None and found[1] == output and found[0] in g.facts.parameters for found in lookups)


def follow_users(state: State) -> None:
    """Rule 1 once every user is decided: a constant lives in the lowest common ancestor of
    its users' modules (fact A: it has no place of its own in the order), and is as certain
    as they are: a user's choice deeper than its bound leaves the constant that choice, bounded
    by the users' bounds. A value passed into a leaf (`_passed_in`) is its caller's by choice:
    any module above may have made it. So is any value computed from constants (not a literal):
    it was computed once, wherever the forward computed it, and handed to its users as an
    argument, maybe by a module above theirs (Funnel's encoder builds the relative position
    embeddings every block's attention reads: stated in the attention, 43 nodes of a stripped
    static export); where its users meet is a choice, only the root bounds it."""
    g, labels, t = state.graph, state.labels, state.tree
    evidence = np.asarray(state.evidence) if state.order_bounds else None
    for i in range(len(labels) - 1, -1, -1):
        if state.evidence[i] < 0 and g.constant[i] and g.readers[i]:
            readers = g.readers[i]
            meet = t.lca_all(labels[k] for k in readers)
            users = home(state, i, meet)
            computed = bool(g.nodes[i].input) and users != t.root  # a value computed, not a literal
            if computed and evidence is not None:
                users = _above_what_ran_between(state, evidence, i, min(readers), users)
            if users != meet or computed:  # passed in: made by the users' caller or any module above
                labels[i], state.bounds[i], state.certain[i] = users, t.root, users == t.root
                continue
            if users >= 0:  # again when its tag stands: a user may have become a choice since
                labels[i] = users
                # as sure as its users' tags: a user placed by a choice passes on its bound, not its choice
                bound = home(state, i, t.lca_all(state.bounds[k] if state.bounds[k] >= 0 else labels[k] for k in readers))
                state.certain[i] = all(state.certain[k] for k in readers)
                state.bounds[i] = users if state.certain[i] or bound < 0 else t.lca(bound, users)


def _above_what_ran_between(state: State, evidence: np.ndarray, i: int, first_reader: int, users: int) -> int:
    """Where a value computed at position `i` for `users` was made, given the modules evidence
    names between it and its first reader (fact A, in a file whose order bounds). Made inside
    `users`, it would lie in the same call of `users` as its reader (a call reads what it made;
    a later call gets it only through the caller), and everything between them would run inside
    `users`: a node named outside `users` in between (an ancestor's own op too) shows it was made
    above both (Funnel's encoder builds the second block's position inputs before the first
    block runs). A module list runs no op: its caller made it."""
    t = state.tree
    between = evidence[i + 1 : first_reader]
    made = users
    for module in np.unique(between[between >= 0]).tolist():
        if not t.within(module, users):
            made = t.lca(made, module)
    while made != users and t.is_sequence(made):
        made = t.parent(made)
    return made


def _may(graph: Graph) -> list[bool]:
    """`decide` looks at nodes made of constants alone."""
    return graph.constant


STEPS = Steps(decide=decide, settle=follow_users, may=_may)
