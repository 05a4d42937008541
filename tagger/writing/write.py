"""The lossless writer: put the three tag keys on the original NodeProtos, nothing else.

Guarantees:
1. Only `hierarchy.module`, `hierarchy.tag` and `hierarchy.source` entries of node
   `metadata_props` change; removing them from the output gives the input back byte for byte
   (`tagger.api` may add one model-level entry, the `hierarchy.modules` tree the names were
   checked against: `tagger.writing.module_map`).
2. Existing tag entries are updated where they stand, missing ones appended in a fixed order,
   so retagging a tagged model gives identical bytes; a second entry of one key (another tool
   appended it) is removed, so every node carries each key exactly once.
3. Tags are addressed by position (the index holds the very NodeProto objects), never by name.

A node without tag entries (the common case) gets them in one C-level call: the three entries
are serialised once per distinct assignment and merged onto the node, which appends them to
its `metadata_props` exactly as three `add` calls would, at a third of the cost.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import onnx

from tagger.model.index import NodeView
from tagger.model.keys import MODULE_KEY, OWNED_KEYS, SOURCE_KEY, TAG_KEY
from tagger.pipeline.tagging import Assignment

__all__ = ["write_tags"]


def write_tags(nodes: Sequence[onnx.NodeProto], views: Sequence[NodeView], assignments: Sequence[Assignment]) -> int:
    """Write each assignment onto its node; returns how many nodes changed. `views` are the
    nodes' fields as read before tagging (they tell which nodes carry tag entries already)."""
    tagged = {i for i, view in enumerate(views) if view.metadata is not None and not view.metadata.keys().isdisjoint(OWNED_KEYS)}
    changed = sum(_update_entries(nodes[i], _values(assignments[i])) for i in sorted(tagged))
    if tagged:
        fresh = [i for i in range(len(nodes)) if i not in tagged]
        nodes, assignments = [nodes[i] for i in fresh], [assignments[i] for i in fresh]
    _append_entries(nodes, assignments)
    return changed + len(nodes)


def _append_entries(nodes: Sequence[onnx.NodeProto], assignments: Sequence[Assignment]) -> None:
    """Append the three entries to nodes that have none, in one C-level pass. `tag_model`
    shares one Assignment object per distinct tag (hashed by identity), so each is encoded once."""
    encode = _EntryEncoder()
    encoded = {assignment: encode(assignment) for assignment in set(assignments)}
    entries = map(encoded.__getitem__, assignments)
    deque(map(onnx.NodeProto.MergeFromString, nodes, entries), maxlen=0)  # consume the lazy map


def _values(assignment: Assignment) -> dict[str, str]:
    return {MODULE_KEY: assignment.module, TAG_KEY: assignment.tag, SOURCE_KEY: assignment.source}


class _EntryEncoder:
    """Serialises the `metadata_props` field holding the three entries, in `OWNED_KEYS` order,
    through one reused carrier node (setting two strings beats building a message per tag)."""

    def __init__(self) -> None:
        self._carrier = onnx.NodeProto()
        for key in OWNED_KEYS:
            self._carrier.metadata_props.add(key=key)
        self._entries = list(self._carrier.metadata_props)

    def __call__(self, assignment: Assignment) -> bytes:
        values = _values(assignment)
        for entry in self._entries:
            entry.value = values[entry.key]
        return self._carrier.SerializeToString()


def _update_entries(node: onnx.NodeProto, values: dict[str, str]) -> bool:
    """Update tag entries where they stand, drop duplicates, append what is missing."""
    pending = dict(values)
    changed = False
    duplicates: list[int] = []
    for position, prop in enumerate(node.metadata_props):
        if prop.key in pending:
            value = pending.pop(prop.key)
            if prop.value != value:
                prop.value = value
                changed = True
        elif prop.key in values:  # a second entry of an owned key (left by some other tool)
            duplicates.append(position)
    for position in reversed(duplicates):
        del node.metadata_props[position]
        changed = True
    for key in OWNED_KEYS:
        if key in pending:
            node.metadata_props.add(key=key, value=pending[key])
            changed = True
    return changed
