"""Control-flow nodes (`If`, `Loop`, `Scan`) take their module from the bodies they run.

Every node of a body ran in the module whose forward holds the control flow, or in one of its
descendants; so that module is the common module (LCA) of the bodies' nodes, or an ancestor of
it. This module ensures that:

1. An owner without evidence of its own, and that inference in its graph left open, takes the
   LCA of its bodies' direct evidence, as `subgraph` evidence (optimum's merged decoder holds
   every node in the two branches of one `If`: that `If` is otherwise a root fallback); what
   its graph still leaves open is then inferred with it as context.
2. An owner that inference placed below or beside that LCA is lifted to the common ancestor of
   both (it cannot lie deeper than the nodes it runs).
3. Direct evidence on the owner itself stands.

Bodies nested in bodies count through their own owner, deepest first. A module list owns no op:
an LCA that is one becomes its parent.
"""

from __future__ import annotations

from tagger.model.index import ModelIndex
from tagger.model.paths import lca, lca_all, parent

__all__ = ["body_modules", "settle_owners"]

SOURCE = "subgraph"


def body_modules(index: ModelIndex, evidence: list[str | None], sequences: set[str]) -> dict[int, str]:
    """Owner node -> the LCA of its bodies' direct evidence (nested owners through their own).

    A nested body's owner lies in its parent body, whose nodes come later in the index than the
    parent's owner: visiting owners from the last node back settles inner ones first."""
    bodies: dict[int, list[int]] = {}
    for scope in index.graphs:
        if scope.kind == "subgraph" and scope.owner is not None:
            bodies.setdefault(scope.owner, []).extend(scope.node_ids)
    found: dict[int, str] = {}
    for owner in sorted(bodies, reverse=True):
        common = lca_all(evidence[i] if evidence[i] is not None else found.get(i) for i in bodies[owner])
        if common is not None:
            while common in sequences:
                common = parent(common)
            found[owner] = common
    return found


def settle_owners(node_ids: list[int], modules: list[str | None], sources: list[str], owners: dict[int, str]) -> bool:
    """Rules 1-2 for the owners among `node_ids`, once inference in their graph is done; returns
    whether rule 1 placed one (its graph's open nodes may then be inferred from it)."""
    placed = False
    for node_id in node_ids:
        common = owners.get(node_id)
        if common is None:
            continue
        if modules[node_id] is None:
            modules[node_id], sources[node_id] = common, SOURCE
            placed = True
        elif sources[node_id] == "inherited":
            modules[node_id] = lca(modules[node_id], common)
    return placed
