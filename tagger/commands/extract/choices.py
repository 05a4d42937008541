"""Which nodes an extraction rests on that were tagged by choice (`tagger.reporting.certainty`).

A cut follows the tags: a chosen tag (inferred deeper than the facts prove) may put a node on
the wrong side of it. The report therefore counts, in the graph the cut is made from:

1. `inside`: the selected nodes whose tag is chosen (pulled producers are copies, not counted);
2. `boundary`: the nodes outside the selection whose tag is chosen and that produce one of its
   inputs or read one of its outputs - the ones that might as well have been inside.

Tags only say `inherited` (`tagger.reporting.certainty`): when none of these nodes is inherited, nothing
is decided (no cost); otherwise every inherited tag of the file is decided again, once per
source model, and the answer is kept on the root source for the other cuts of `extract_all`.
"""

from __future__ import annotations

from dataclasses import dataclass

from tagger.commands.extract.cut import Cut
from tagger.commands.extract.source import Source
from tagger.model.index import build_index
from tagger.model.keys import read_tags, tags_of
from tagger.reporting.certainty import file_kinds

__all__ = ["Choices", "choices"]

_GraphKey = tuple[tuple[int, str], ...]
"""A graph by its owners from the main graph: (node position, attribute) per level; () is the main graph."""


@dataclass(frozen=True)
class Choices:
    """Chosen nodes of one cut: in its selection and just outside its boundary."""

    inside: int = 0
    boundary: int = 0


def choices(src: Source, cut: Cut) -> Choices:
    """The chosen nodes of `cut` in `src` (module docstring)."""
    inside = list(cut.selected)
    excluded = set(inside) | set(cut.pulled)
    flow = src.flow
    around = {flow.producer[name] for name in cut.inputs if name in flow.producer}
    around.update(reader for name in cut.outputs for reader in flow.readers.get(name, ()))
    around -= excluded
    if not any(_source_of(src, i) == "inherited" for i in (*inside, *around)):
        return Choices()
    kinds = _kinds(src)
    return Choices(sum(kinds[i] == "chosen" for i in inside), sum(kinds[i] == "chosen" for i in around))


def _source_of(src: Source, position: int) -> str | None:
    found = read_tags(src.nodes[position].metadata_props)
    return found[2] if found else None


def _kinds(src: Source) -> list[str]:
    """Each node's kind in `src`'s graph, from the kinds of the whole model (decided once)."""
    key: _GraphKey = ()
    root = src
    while root.body is not None:
        key = ((root.body.owner, root.body.attribute), *key)
        root = root.body.outer
    if root.kinds is None:
        root.kinds = _kinds_by_graph(root)
    return root.kinds[key]


def _kinds_by_graph(root: Source) -> dict[_GraphKey, list[str]]:
    index = build_index(root.model)
    kinds = root.node_kinds
    if kinds is None:  # the file came tagged: its inherited tags are decided again once
        found = [tags_of(view.metadata) or ("", "", "") for view in index.views]
        kinds = file_kinds(root.model, found, base_dir=root.path.parent)
    keys: dict[int, _GraphKey] = {}
    by_graph: dict[_GraphKey, list[str]] = {}
    for graph_id, scope in enumerate(index.graphs):  # an owner's graph is indexed before its bodies
        if scope.kind == "main":
            keys[graph_id] = ()
        elif scope.kind == "subgraph" and scope.owner is not None and index.graph_of[scope.owner] in keys:
            outer = index.graph_of[scope.owner]
            keys[graph_id] = (*keys[outer], (scope.owner - index.graphs[outer].node_ids.start, scope.attribute))
        else:
            continue  # function bodies: no cut is made from them
        by_graph[keys[graph_id]] = kinds[scope.node_ids.start : scope.node_ids.stop]
    return by_graph
