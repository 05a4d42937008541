"""Evidence sources: each proposes `{node: module path}` for the nodes it knows about.

Sources are evaluated in an order that lets the ones naming real module paths (tags, dynamo
metadata, parameter names) teach the `ModuleSet` before the name-based sources resolve
exporter quirks against it; they are *merged* in `PRECEDENCE` order, and every disagreement is
kept as a `Conflict` for the report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tagger.index import ModelIndex
from tagger.paths import ModuleSet

__all__ = [
    "Conflict",
    "Context",
    "Evidence",
    "PRECEDENCE",
    "build_context",
    "collect",
]

PRECEDENCE = ("tag", "metadata", "name", "tensor", "initializer")
MODULE_MAP_KEY = "hierarchy.modules"


@dataclass(frozen=True, slots=True)
class Evidence:
    """One source's claim that node `node` belongs to module `module`."""

    node: int
    module: str
    source: str


@dataclass(frozen=True, slots=True)
class Conflict:
    """Two sources disagreed on a node; `chosen` won by precedence."""

    node: int
    chosen: Evidence
    rejected: Evidence


@dataclass
class Context:
    """What the sources share: known module paths and their class names."""

    modules: ModuleSet = field(default_factory=ModuleSet)
    classes: dict[str, str] = field(default_factory=dict)
    kept_sources: dict[int, str] = field(default_factory=dict)
    """Original `hierarchy.source` of tags kept from an earlier retag (written back unchanged)."""


def build_context(index: ModelIndex) -> Context:
    """Seed the context from the shim's model-level `hierarchy.modules` map, when present."""
    context = Context()
    for prop in index.model.metadata_props:
        if prop.key == MODULE_MAP_KEY:
            _read_module_map(prop.value, context)
    return context


def _read_module_map(text: str, context: Context) -> None:
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError:
        return
    if not isinstance(mapping, dict):
        return
    for path, qualname in mapping.items():
        if isinstance(path, str) and isinstance(qualname, str):
            context.modules.add(path)
            context.classes[path] = qualname
    context.modules.authoritative = True


def collect(index: ModelIndex, context: Context) -> tuple[dict[int, tuple[str, str]], list[Conflict]]:
    """Run every source and merge: node -> (module, source) of the highest-precedence claim."""
    from tagger.evidence import initializers, metadata, names, tags, tensors

    proposals = {source.SOURCE: source.propose(index, context) for source in (tags, metadata, initializers, names, tensors)}
    chosen: dict[int, tuple[str, str]] = {}
    conflicts: list[Conflict] = []
    for source in PRECEDENCE:
        for node, module in proposals[source].items():
            winner = chosen.get(node)
            if winner is None:
                chosen[node] = (module, context.kept_sources.get(node, source) if source == "tag" else source)
            elif winner[0] != module:
                conflicts.append(Conflict(node, Evidence(node, *winner), Evidence(node, module, source)))
    return chosen, conflicts
