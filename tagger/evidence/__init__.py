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
    "Decision",
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
    scope_modules: dict[str, str | None] = field(default_factory=dict)
    """Module of each scoped-name prefix (`/encoder/layer.0/`), shared by the name and tensor
    sources: node and tensor names repeat the same scopes."""
    op_names: frozenset[str] = frozenset()
    """Op types a name segment may be the node name of (`names.op_names`), set by the name source."""


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


@dataclass
class Decision:
    """The merged direct evidence: each claimed node's module and the source that won."""

    modules: dict[int, str]
    sources: dict[int, str]
    conflicts: list[Conflict]


def collect(index: ModelIndex, context: Context) -> Decision:
    """Run every source and merge: the highest-precedence claim wins, every disagreement with it
    is a conflict. The merge is dict updates from the lowest precedence up (C-level: a 100k-node
    model has several claims on every node)."""
    from tagger.evidence import initializers, metadata, names, tags, tensors

    proposals = {source.SOURCE: source.propose(index, context) for source in (tags, metadata, initializers, names, tensors)}
    modules: dict[int, str] = {}
    sources: dict[int, str] = {}
    for source in reversed(PRECEDENCE):
        modules.update(proposals[source])
        sources.update(dict.fromkeys(proposals[source], source))
    sources.update(context.kept_sources)  # tags keep the source they were decided by
    conflicts = [
        Conflict(node, Evidence(node, modules[node], sources[node]), Evidence(node, module, source))
        for source in PRECEDENCE[1:]
        for node, module in proposals[source].items()
        if modules[node] != module
    ]
    return Decision(modules, sources, conflicts)
