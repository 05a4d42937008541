"""The tag contract: the three `metadata_props` keys the tagger owns on every node."""

from __future__ import annotations

__all__ = [
    "CLASS_HIERARCHY_KEY",
    "DIRECT_SOURCES",
    "MODULE_KEY",
    "NAME_SCOPES_KEY",
    "OWNED_KEYS",
    "READ_KEYS",
    "SOURCE_KEY",
    "SHARED_VALUE_KEYS",
    "SOURCES",
    "TAG_KEY",
]

MODULE_KEY = "hierarchy.module"
TAG_KEY = "hierarchy.tag"
SOURCE_KEY = "hierarchy.source"
OWNED_KEYS = (MODULE_KEY, TAG_KEY, SOURCE_KEY)

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
