"""The lossless writer: put the three tag keys on the original NodeProtos, nothing else.

Guarantees:
1. Only `hierarchy.module`, `hierarchy.tag` and `hierarchy.source` entries of node
   `metadata_props` change; removing them from the output gives the input back byte for byte.
2. Existing tag entries are updated where they stand, missing ones appended in a fixed order,
   so retagging a tagged model gives identical bytes; a second entry of one key (another tool
   appended it) is removed, so every node carries each key exactly once.
3. Tags are addressed by position (the index holds the very NodeProto objects), never by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx

from tagger.keys import MODULE_KEY, OWNED_KEYS, SOURCE_KEY, TAG_KEY
from tagger.tagging import Assignment

__all__ = ["write_tags", "strip_tags"]


def write_tags(nodes: Sequence[onnx.NodeProto], assignments: Sequence[Assignment]) -> int:
    """Write each assignment onto its node; returns how many nodes changed."""
    changed = 0
    for node, assignment in zip(nodes, assignments, strict=True):
        values = {MODULE_KEY: assignment.module, TAG_KEY: assignment.tag, SOURCE_KEY: assignment.source}
        if _set_entries(node, values):
            changed += 1
    return changed


def _set_entries(node: onnx.NodeProto, values: dict[str, str]) -> bool:
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


def strip_tags(nodes: Sequence[onnx.NodeProto]) -> None:
    """Remove the tagger's keys (the inverse of `write_tags` on an untagged model)."""
    for node in nodes:
        kept = [(p.key, p.value) for p in node.metadata_props if p.key not in OWNED_KEYS]
        if len(kept) != len(node.metadata_props):
            del node.metadata_props[:]
            for key, value in kept:
                node.metadata_props.add(key=key, value=value)
