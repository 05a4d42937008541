"""The tag contract: the three `metadata_props` keys the tagger owns on every node."""

from __future__ import annotations

__all__ = ["MODULE_KEY", "TAG_KEY", "SOURCE_KEY", "OWNED_KEYS", "SOURCES", "DIRECT_SOURCES"]

MODULE_KEY = "hierarchy.module"
TAG_KEY = "hierarchy.tag"
SOURCE_KEY = "hierarchy.source"
OWNED_KEYS = (MODULE_KEY, TAG_KEY, SOURCE_KEY)

DIRECT_SOURCES = ("tag", "metadata", "name", "tensor", "initializer", "function", "subgraph")
SOURCES = DIRECT_SOURCES + ("inherited", "fallback")
