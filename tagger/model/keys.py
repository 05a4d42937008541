"""The tag contract: the three `metadata_props` keys the tagger owns on every node."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

__all__ = [
    "CLASS_HIERARCHY_KEY",
    "DIRECT_SOURCES",
    "MODULE_KEY",
    "MODULE_MAP_KEY",
    "NAME_SCOPES_KEY",
    "OWNED_KEYS",
    "READ_KEYS",
    "SOURCE_KEY",
    "SHARED_VALUE_KEYS",
    "SOURCES",
    "TAG_KEY",
    "read_entries",
    "read_tags",
    "tags_of",
]

MODULE_KEY = "hierarchy.module"
TAG_KEY = "hierarchy.tag"
SOURCE_KEY = "hierarchy.source"
OWNED_KEYS = (MODULE_KEY, TAG_KEY, SOURCE_KEY)
MODULE_MAP_KEY = "hierarchy.modules"
"""The model-level entry: module path -> class name (`tagger.writing.module_map`)."""

NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
CLASS_HIERARCHY_KEY = "pkg.torch.onnx.class_hierarchy"
"""The dynamo exporter's per-node scope metadata (`tagger.evidence.metadata`)."""

READ_KEYS = frozenset((*OWNED_KEYS, NAME_SCOPES_KEY, CLASS_HIERARCHY_KEY))
"""The node entries the tagger reads; others (a dynamo node's stack trace, `fx_node`,
`namespace`: most of its bytes) are never copied out of the protobuf."""

SHARED_VALUE_KEYS = frozenset((*OWNED_KEYS, CLASS_HIERARCHY_KEY))
"""Entries whose values repeat across the nodes of a module (`name_scopes` ends with each
node's own fx name, so it does not)."""

DIRECT_SOURCES = ("tag", "metadata", "name", "tensor", "initializer", "reference", "function", "subgraph")
SOURCES = DIRECT_SOURCES + ("inherited", "fallback")


class _Entry(Protocol):
    """A `metadata_props` entry (`onnx.StringStringEntryProto`)."""

    key: str
    value: str


def read_entries(props: Iterable[_Entry], shared: dict[str, str] | None = None) -> dict[str, str] | None:
    """A node's entries of `READ_KEYS`, None without any; of a repeated key the *last* entry counts.

    The one rule for every reader (retag, report, extract, diff, profile): a repeated key was
    appended by whoever wrote last, so its last entry is the current one. `retag` takes that
    value as evidence and writes it back as the only entry (`tagger.writing.write`), so a second retag
    reads exactly what the first wrote.
    `shared` keeps one copy of the values of `SHARED_VALUE_KEYS`, which repeat across a module's nodes.
    """
    entries = None
    for prop in props:
        key = prop.key
        if key in READ_KEYS:
            if entries is None:
                entries = {}
            value = prop.value
            entries[key] = shared.setdefault(value, value) if shared is not None and key in SHARED_VALUE_KEYS else value
    return entries


def tags_of(entries: Mapping[str, str] | None) -> tuple[str, str, str] | None:
    """`(module, tag, source)` from a node's entries (`read_entries`); None without a module."""
    if entries is None:
        return None
    module = entries.get(MODULE_KEY)
    if module is None:
        return None
    return module, entries.get(TAG_KEY, ""), entries.get(SOURCE_KEY, "")


def read_tags(props: Iterable[_Entry]) -> tuple[str, str, str] | None:
    """A node's `(module, tag, source)` from its `metadata_props`, None when it has no module."""
    return tags_of(read_entries(props))
