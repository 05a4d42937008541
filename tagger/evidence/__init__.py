"""Evidence sources: each proposes `{node: module path}` for the nodes it knows about.

Every source is one module of this package satisfying `EvidenceSource`, registered by one line
in `REGISTRY`. Two orders follow from that table, declared here together:

1. `PRECEDENCE`, the merge order: the registry's order; the earliest claim on a node wins and
   every disagreement with it is kept as a `Conflict` for the report;
2. `RUN_ORDER`, the evaluation order: the sources that name real module paths (tags, dynamo
   metadata, parameter names; phase `TEACH`) run first and teach the `ModuleSet`, then the
   name-based sources (phase `RESOLVE`) resolve exporter quirks against it, each phase in
   precedence order.

What a source hands the sources after it is a declared field of `Context` (the module set, class
names, the scope cache; `ParameterFacts` from the initializer source); what a source from outside
the file hands the caller is a declared member of `ExternalSource`.
"""

from __future__ import annotations

import importlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from tagger.model.index import ModelIndex
from tagger.model.keys import MODULE_MAP_KEY
from tagger.model.paths import ModuleSet

__all__ = [
    "Conflict",
    "Context",
    "Decision",
    "Evidence",
    "EvidenceSource",
    "EXTERNAL",
    "ExternalSource",
    "PRECEDENCE",
    "REGISTRY",
    "RUN_ORDER",
    "ParameterFacts",
    "build_context",
    "collect",
    "registered_sources",
]

TEACH, RESOLVE = 0, 1
"""Phases: a `TEACH` source only adds to `context.modules`; a `RESOLVE` source reads it."""

REGISTRY: tuple[tuple[str, str, int], ...] = (
    # (source name, module in tagger.evidence, phase), in precedence order: the first claim wins
    ("tag", "tags", TEACH),
    ("metadata", "metadata", TEACH),
    ("name", "names", RESOLVE),
    ("tensor", "tensors", RESOLVE),
    ("initializer", "initializers", TEACH),
)
EXTERNAL = ("reference",)
"""Sources from outside the file (`tagger.transfer`: `--reference`), given to `collect` by the
caller; they rank below every registered source (the file's own evidence wins). `--weights`
claims as `initializer` and adds to it without overriding the file's own parameter names.
A source from outside the file may outrank the file's claim on a node where it says (`decided_by`)
that a stronger source decided it: before a tool deleted that evidence (`tagger.transfer.reference`),
or by the values of the weight the node reads, where the file names that weight in a converter's
words (`tagger.transfer.weights`)."""
PRECEDENCE = tuple(name for name, _, _ in REGISTRY) + EXTERNAL
RUN_ORDER = tuple(name for name, _, _ in sorted(REGISTRY, key=lambda entry: entry[2]))
"""`tag, metadata, initializer, name, tensor`: teachers first, each phase in precedence order."""


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


@dataclass(frozen=True)
class ParameterFacts:
    """What the initializer source (phase `TEACH`) learns from the parameter names the file's
    initializers carry, for the name source (`RESOLVE`), `--weights` and inference after it."""

    owners: dict[str, str] = field(default_factory=dict)
    """Module owning each initializer named by a parameter path (`initializers.parameter_owners`),
    merged ones left out (the name source's shared modules, rule 3 of `names`)."""
    merged: frozenset[str] = frozenset()
    """Initializers that may stand for several merged parameters (`merged_parameters`): named,
    but weights of no module the file names for sure."""
    tied_lookups: frozenset[int] = frozenset()
    """Nodes looking up a table tied to a head (`merged_parameters.tied_lookup_tables`): the
    table's name may be the head's, so their tag is widened after inference."""
    rereads: dict[str, int] = field(default_factory=dict)
    """Parameters of a module list's entry (a `.N.` in their path) read by more than one node, with
    their readers' count: one module called again, or equal clones an exporter merged into the
    first entry's names (`clones.py`)."""
    untrained: bool = False
    """Whether the file shows an untrained init: several parameters merged into one constant
    (`merged_parameters`), so a list's entries may be equal clones merged into the first's names;
    trained entries never stay byte-equal, so in a trained file a parameter read again is one
    module called again (`clones.py`)."""


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
    base_dir: Path | None = None
    """The directory of the model's file (its external data), None for a model only in memory."""
    parameters: ParameterFacts = field(default_factory=ParameterFacts)
    """Set once by the initializer source, which runs before every source that reads it."""
    tree_origin: str | None = None
    """Where the true module tree came from (`adopt_tree`); None: the file's names are unchecked."""
    tree: dict[str, str | None] | None = None
    """The true module tree as adopted (path -> class name or None), recorded in the tagged file
    (`tagger.writing.module_map`)."""
    alike: dict[int, tuple[str, ...]] = field(default_factory=dict)
    """Nodes whose TorchScript scope names several known modules alike (a list's entries run
    without a scope of their own) -> the paths it may name (`ModuleSet.alike_readings`); the
    name source sets it, `tagger.pipeline.alike` refines their inferred tags with it."""
    unknown_claims: Counter[str] = field(default_factory=Counter)
    """Claimed module paths outside the true tree -> how many nodes claimed each (not written)."""

    def adopt_tree(self, tree: dict[str, str | None], origin: str) -> None:
        """Take `tree` (path -> class name or None) as the model's true `named_modules()`."""
        self.modules.adopt(tree)
        self.classes.update({path: name for path, name in tree.items() if name is not None})
        self.tree_origin = origin
        self.tree = dict(tree)


def build_context(index: ModelIndex, base_dir: Path | None = None, tree: dict[str, str | None] | None = None) -> Context:
    """Seed the context with the true module tree: `tree` (`--modules`) when given, else the
    shim's model-level `hierarchy.modules` map when the file has one."""
    context = Context(base_dir=base_dir)
    if tree is not None:
        context.adopt_tree(tree, "the modules file")
        return context
    for prop in index.model.metadata_props:
        if prop.key == MODULE_MAP_KEY:
            mapping = read_module_map(prop.value)
            if mapping is not None:
                context.adopt_tree(mapping, "the model's hierarchy.modules map")
    return context


def read_module_map(text: str) -> dict[str, str | None] | None:
    """The `hierarchy.modules` entry as path -> class name (None: a path whose class nobody knew,
    as in a tree the tagger recorded from a checkpoint); None when it is no such map."""
    try:
        mapping = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(mapping, dict):
        return None
    return {path: name for path, name in mapping.items() if isinstance(path, str) and isinstance(name, str | None)}


def _within_tree(proposals: dict[str, dict[int, str]], context: Context) -> None:
    """Drop every claim naming no module of the true tree (when one is known): it is an
    exporter's or converter's name, not a module; inference bounds those nodes instead."""
    if context.tree_origin is None:
        return
    known = context.modules
    for claims in proposals.values():
        outside = [node for node, module in claims.items() if module not in known]
        for node in outside:
            context.unknown_claims[claims.pop(node)] += 1


@dataclass
class Decision:
    """The merged direct evidence: each claimed node's module and the source that won."""

    modules: dict[int, str]
    sources: dict[int, str]
    conflicts: list[Conflict]


@runtime_checkable
class EvidenceSource(Protocol):
    """The contract of an evidence source (a module of this package).

    `SOURCE` is the name written in `hierarchy.source` (and in `REGISTRY`). `propose` returns a
    module path for each node (by index position) the source has evidence for, and nothing for
    the others. It never changes the model or the index; it may add what it learnt to the declared
    fields of `context` (module paths, class names, kept sources, the scope cache, the parameter
    facts) for the sources that run after it.
    """

    SOURCE: str

    def propose(self, index: ModelIndex, context: Context) -> dict[int, str]: ...


@runtime_checkable
class ExternalSource(EvidenceSource, Protocol):
    """A source from outside the file (`tagger.transfer`), given to `collect` by the caller.

    Besides its claims it hands the caller, once `propose` has run, what the report says of it
    and where its claims may outrank the file's own.
    """

    PARAMETER: str
    """The parameter that gave it (`reference`, `weights`): the report's advice names the others."""
    notes: list[str]
    """Lines for the report (what was matched, what was found)."""
    decided_by: dict[int, str]
    """Node -> the source that decided its module where this source learnt it (empty: none
    outranks the file's evidence; see `_outranked`)."""


def _outranked(source: ExternalSource, proposals: dict[int, str], sources: dict[int, str]) -> dict[int, str]:
    """The claims of an external source that win over the file's own: it may say, in `decided_by`,
    which source decided a node's module where it learnt it (the reference, before a tool deleted
    evidence); the claim wins where that source outranks the one that decided the node here."""
    rank = {name: i for i, name in enumerate(PRECEDENCE)}
    decided_by = source.decided_by
    return {
        node: module
        for node, module in proposals.items()
        if rank.get(decided_by.get(node, ""), len(rank)) < rank.get(sources.get(node, ""), len(rank))
    }


def registered_sources() -> dict[str, EvidenceSource]:
    """The registered sources by name, in `RUN_ORDER` (imported here: each imports `Context`)."""
    modules = {name: module for name, module, _ in REGISTRY}
    return {name: importlib.import_module(f"tagger.evidence.{modules[name]}") for name in RUN_ORDER}


def collect(index: ModelIndex, context: Context, extra: Sequence[ExternalSource] = ()) -> Decision:
    """Run every source in `RUN_ORDER` and merge in `PRECEDENCE`: the highest-precedence claim
    wins, every disagreement with it is a conflict. The merge is dict updates from the lowest
    precedence up (C-level: a 100k-node model has several claims on every node). `extra`
    sources (from outside the file) run last; one named like a registered source adds to its
    claims without overriding any; an `EXTERNAL` one wins only where `_outranked` says."""
    proposals = {name: source.propose(index, context) for name, source in registered_sources().items()}
    own: list[dict[int, str]] = []
    for source in extra:
        own.append(source.propose(index, context))
        proposals[source.SOURCE] = {**own[-1], **proposals.get(source.SOURCE, {})}
    context.scope_modules.clear()  # a cache for the sources, which have all run
    for name in EXTERNAL:
        proposals.setdefault(name, {})
    _within_tree(proposals, context)
    modules: dict[int, str] = {}
    sources: dict[int, str] = {}
    for source in reversed(PRECEDENCE):
        modules.update(proposals[source])
        sources.update(dict.fromkeys(proposals[source], source))
    for source, claims in zip(extra, own, strict=True):  # before kept sources: a kept tag outranks everything
        if source.decided_by:
            known = context.modules if context.tree_origin is not None else None
            outranked = _outranked(source, {n: m for n, m in claims.items() if known is None or m in known}, sources)
            modules.update(outranked)
            sources.update(dict.fromkeys(outranked, source.SOURCE))
    sources.update(context.kept_sources)  # tags keep the source they were decided by
    conflicts = [
        Conflict(node, Evidence(node, modules[node], sources[node]), Evidence(node, module, source))
        for source in PRECEDENCE[1:]
        for node, module in proposals[source].items()
        if modules[node] != module
    ]
    return Decision(modules, sources, conflicts)
