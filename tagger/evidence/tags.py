"""Existing `hierarchy.*` tags from an earlier retag, so retagging is idempotent.

A tag decided by direct evidence is kept as it is, with its original source, so a second retag
writes identical bytes. Tags that were only inferred (`inherited`, `fallback`) are not evidence:
they are derived again from the same direct evidence, which gives the same answer.
"""

from __future__ import annotations

from tagger.evidence import Context
from tagger.model.index import ModelIndex
from tagger.model.keys import MODULE_KEY, SOURCE_KEY

SOURCE = "tag"
__all__ = ["SOURCE", "propose"]

_REDERIVED = frozenset({"inherited", "fallback"})


def propose(index: ModelIndex, context: Context) -> dict[int, str]:
    found: dict[int, str] = {}
    for node_id, node in enumerate(index.views):
        props = node.metadata
        if props is None or MODULE_KEY not in props:
            continue
        source = props.get(SOURCE_KEY) or "tag"
        if source in _REDERIVED:
            continue
        module = props[MODULE_KEY]
        context.modules.add(module)
        found[node_id] = module
        if source != SOURCE:
            context.kept_sources[node_id] = source
    return found
