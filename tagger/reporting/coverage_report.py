"""The coverage report: how every node got its tag, told honestly.

Direct evidence, inheritance and fallback are counted apart (a root fallback is a guess, not
coverage), and inherited tags split into certain ones and choices, per module too
(`tagger.reporting.certainty`: a module resting mostly on choices is marked in the tree); every fallback
node and every evidence conflict is listed. Renders as JSON for scripts and as Markdown or
terminal text for people; names from the model are escaped.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from operator import attrgetter

from tagger.model.paths import MAX_DEPTH, ancestors
from tagger.pipeline.display import TagFormatter
from tagger.pipeline.tagging import Assignment, TaggingResult
from tagger.reporting.certainty import LEGEND, Certainty
from tagger.text import JsonReport, listing, param, spelled
from tagger.text import markdown as _md
from tagger.text import natural as _natural
from tagger.text import pct as _pct
from tagger.text import terminal as _safe

__all__ = ["ConflictRecord", "CoverageReport", "InferredRecord", "NodeRef", "Report", "build_report"]

CATEGORIES = ("direct", "inherited", "fallback")
INFERENCE_ADVICE = 0.5
"""From this share of nodes placed by inference only, the report says what would name them: the
file names too few modules to be tagged well (LLaMA or T5 exported by dynamo, after any tool: 9-40% exact)."""
_CATEGORY = {"inherited": "inherited", "fallback": "fallback"}
"""The category of a source that is not direct evidence (any other source is)."""


@dataclass(frozen=True)
class NodeRef:
    """Where a node is: its graph, its position there, its op and name."""

    graph: str
    position: int
    op_type: str
    name: str


@dataclass(frozen=True)
class ConflictRecord:
    """Two evidence sources named different modules for one node."""

    node: NodeRef
    chosen_module: str
    chosen_source: str
    rejected_module: str
    rejected_source: str


@dataclass(frozen=True)
class InferredRecord:
    """An inherited tag and how sure it is: `bound` is the module the node certainly ran in
    (`tagger.infer`, fact A); `certain` is false when the tag is a choice deeper than that."""

    node: NodeRef
    module: str
    bound: str
    certain: bool


@dataclass
class CoverageReport(JsonReport):
    """Coverage of one tagging run (or of an analysis without writing)."""

    model: str
    nodes: int
    direct: int
    inherited: int
    fallback: int
    by_source: dict[str, int]
    by_op: dict[str, dict[str, int]]
    modules: dict[str, int]
    tags: dict[str, str]
    fallback_nodes: list[NodeRef]
    conflicts: list[ConflictRecord]
    graphs: int = 1
    output: str | None = None
    changed_nodes: int = 0
    notes: list[str] = field(default_factory=list)
    module_sources: dict[str, dict[str, int]] = field(default_factory=dict)
    """Module -> its own nodes by category (`direct`, `inherited`, `fallback`)."""
    inherited_certain: int = 0
    """Inherited nodes whose tag is certain (the rest are choices deeper than their bound)."""
    module_chosen: dict[str, int] = field(default_factory=dict)
    """Module -> its own inherited nodes whose tag is a choice (modules without any left out)."""
    inferred: list[InferredRecord] | None = None
    """Every inherited node with its bound (built on request: `build_report(..., inferred=True)`)."""

    def only_certain(self) -> CoverageReport:
        """The same report listing only the inherited nodes whose tag is certain."""
        kept = None if self.inferred is None else [r for r in self.inferred if r.certain]
        return replace(self, inferred=kept)

    @property
    def has_evidence(self) -> bool:
        return self.direct > 0

    def certainty(self, module: str | None = None) -> Certainty:
        """The own nodes of `module` (None: every node) by kind: direct, certain, chosen, fallback."""
        if module is None:
            return Certainty(self.direct, self.inherited_certain, self.inherited - self.inherited_certain, self.fallback)
        own = self.module_sources.get(module, {})
        chosen = self.module_chosen.get(module, 0)
        return Certainty(own.get("direct", 0), own.get("inherited", 0) - chosen, chosen, own.get("fallback", 0))

    def summary(self) -> str:
        """A few lines for the terminal after a retag; `certain` is the certain share (direct and
        certainly inferred nodes, `tagger.reporting.certainty`)."""
        whole = self.certainty()
        lines = [
            f"{_safe(self.model)}: {self.nodes} nodes tagged — direct {self.direct} ({_pct(self.direct, self.nodes)}), "
            f"inherited {self.inherited} ({_pct(self.inherited, self.nodes)}, {whole.chosen} chosen), "
            f"fallback {self.fallback} ({_pct(self.fallback, self.nodes)}); certain {_pct(whole.known, self.nodes)}; "
            f"conflicts {len(self.conflicts)}",
        ]
        lines += [f"note: {_safe(n)}" for n in self.notes]
        if self.output:
            lines.append(f"wrote {_safe(self.output)}")
        return "\n".join(lines)

    def to_text(self) -> str:
        """The full report for a terminal."""
        parts = [self.summary(), "", "by source:"]
        parts += [f"  {source:<12} {count}" for source, count in sorted(self.by_source.items())]
        parts += ["", f"inherited tags certain: {self.inherited_certain} of {self.inherited}"]
        parts += ["", "by op type (direct / inherited / fallback):"]
        for op, counts in sorted(self.by_op.items()):
            parts.append(f"  {_safe(op):<24} {counts['direct']:>6} {counts['inherited']:>6} {counts['fallback']:>6}")
        parts += ["", "module tree:", self.tree(legend=True)]
        parts += listing("fallback nodes", [_ref_text(r) for r in self.fallback_nodes])
        parts += listing("evidence conflicts", [_conflict_text(c) for c in self.conflicts])
        return "\n".join(parts)

    def to_markdown(self) -> str:
        """The full report as Markdown."""
        whole = self.certainty()
        rows = [
            f"# Hierarchy coverage: `{_md(self.model)}`",
            "",
            "| nodes | direct | inherited | of which chosen | fallback | certain | conflicts |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {self.nodes} | {self.direct} ({_pct(self.direct, self.nodes)}) | {self.inherited} "
            f"({_pct(self.inherited, self.nodes)}) | {whole.chosen} ({_pct(whole.chosen, self.nodes)}) "
            f"| {self.fallback} ({_pct(self.fallback, self.nodes)}) | {_pct(whole.known, self.nodes)} | {len(self.conflicts)} |",
            "",
        ]
        rows += [f"> {_md(n)}" for n in self.notes] + ([""] if self.notes else [])
        rows += ["## By source", "", "| source | nodes |", "|---|---:|"]
        rows += [f"| {s} | {c} |" for s, c in sorted(self.by_source.items())]
        rows += ["", "## By op type", "", "| op | direct | inherited | fallback |", "|---|---:|---:|---:|"]
        rows += [f"| {_md(op)} | {c['direct']} | {c['inherited']} | {c['fallback']} |" for op, c in sorted(self.by_op.items())]
        rows += ["", "## Module tree", "", "```", self.tree().replace("```", "'''"), "```", "", _md(LEGEND)]
        rows += ["", f"## Fallback nodes ({len(self.fallback_nodes)})", ""]
        rows += [f"- {_md(_ref_text(r))}" for r in self.fallback_nodes] or ["none"]
        rows += ["", f"## Evidence conflicts ({len(self.conflicts)})", ""]
        rows += [f"- {_md(_conflict_text(c))}" for c in self.conflicts] or ["none"]
        return "\n".join(rows) + "\n"

    def to_html(self) -> str:
        """A static HTML page of the module tree (`tagger.reporting.html_tree`)."""
        from tagger.reporting.html_tree import render_html

        return render_html(self)

    def tree(self, depth: int | None = None, legend: bool = False) -> str:
        """The module tree with node counts, to `depth` levels: per module `total (own: its own
        nodes by kind)`, marked where they rest mostly on choices; `legend` explains both."""
        totals: Counter[str] = Counter()
        for module, count in self.modules.items():
            for path in [*ancestors(module), module]:
                totals[path] += count
        children: dict[str, list[str]] = defaultdict(list)
        for path in totals:
            if path:
                children[path.rpartition(".")[0]].append(path)
        lines: list[str] = []
        self._tree_lines("", 0, depth, totals, children, lines)
        if legend:
            lines += ["", LEGEND]
        return "\n".join(lines)

    def _tree_lines(self, path, level, depth, totals, children, lines) -> None:
        label = path.rpartition(".")[2] if path else "(root)"
        tag = self.tags.get(path, "")
        transparent = bool(path) and tag == self.tags.get(path.rpartition(".")[0])  # a module list: no segment of its own
        segment = tag.rsplit("/", 1)[-1] if tag and not transparent else ""
        cls = f"  {segment}" if segment and segment != label else ""
        own = self.certainty(path)
        kinds = f": {own.counts()}" if own.nodes else ""
        lines.append(f"{'  ' * level}{_safe(label)}{_safe(cls)}  {totals[path]} ({own.nodes} own{kinds}){own.mark}")
        if depth is not None and level >= depth:
            return
        for child in sorted(children.get(path, []), key=_natural):
            self._tree_lines(child, level + 1, depth, totals, children, lines)


Report = CoverageReport
"""The name this report had before the other commands' reports (`AuditReport`, `DiffReport`, ...)."""


def build_report(
    result: TaggingResult,
    model_name: str,
    notes: Iterable[str] = (),
    changed_nodes: int = 0,
    output: str | None = None,
    inferred: bool = False,
    given: Iterable[str] = (),
) -> CoverageReport:
    """Count a tagging result by category, source, op type and module; `notes`, `changed_nodes`
    and `output` are what the caller knows beside it (validation notes, what a retag wrote);
    `inferred` also lists every inherited node with the bound its tag was chosen in; `given` are
    the transfer parameters the tagging already had (the advice names only the others). Notes name
    parameters with `param`, spelled here for the reader (`tagger.text.spelled`).

    Counted by assignment identity (`tag_model` shares one `Assignment` per distinct tag), so
    the per-node work is C-level counting and everything else runs once per distinct tag.
    """
    index = result.index
    assignments = result.assignments
    per_assignment = Counter(assignments)
    by_source, modules, module_sources = _by_source_and_module(per_assignment)
    by_op = _by_op(Counter(zip(map(attrgetter("op_type"), index.views), assignments, strict=True)))
    tags = {a.module: a.tag for a in per_assignment}
    _add_ancestor_tags(tags, result.formatter)
    totals = dict.fromkeys(CATEGORIES, 0)
    for source, count in by_source.items():
        totals[_CATEGORY.get(source, "direct")] += count
    certain = Counter(assignments[i].module for i, bound in result.bounds.items() if bound.certain)
    fallback_ids = _fallback_ids(assignments, per_assignment) if "fallback" in by_source else []
    inherited_ids = sorted(result.bounds) if inferred else []
    refs = _node_refs(index, fallback_ids + [c.node for c in result.conflicts] + inherited_ids)
    report = CoverageReport(
        model=model_name,
        nodes=len(assignments),
        direct=totals["direct"],
        inherited=totals["inherited"],
        fallback=totals["fallback"],
        by_source=by_source,
        by_op=by_op,
        modules=modules,
        tags=tags,
        fallback_nodes=[refs[i] for i in fallback_ids],
        conflicts=[
            ConflictRecord(refs[c.node], c.chosen.module, c.chosen.source, c.rejected.module, c.rejected.source)
            for c in result.conflicts
        ],
        graphs=len(index.graphs),
        output=output,
        changed_nodes=changed_nodes,
        module_sources=module_sources,
        inherited_certain=sum(certain.values()),
        module_chosen={m: own["inherited"] - certain[m] for m, own in module_sources.items() if own["inherited"] > certain[m]},
    )
    if inferred:
        report.inferred = [
            InferredRecord(refs[i], assignments[i].module, result.bounds[i].bound, result.bounds[i].certain) for i in inherited_ids
        ]
    if report.nodes and not report.has_evidence:
        report.notes.append("no scope evidence found in this model: every node fell back to the root module")
    elif report.nodes and report.inherited + report.fallback >= INFERENCE_ADVICE * report.nodes:
        share = _pct(report.inherited + report.fallback, report.nodes)
        report.notes.append(spelled(f"{share} of nodes were placed by inference only; {_advice(given)}"))
    report.notes += [spelled(note) for note in notes]
    return report


def _advice(given: Iterable[str]) -> str:
    """What would name more nodes, leaving out the transfer parameters that were already given."""
    missing = [name for name in ("reference", "weights") if name not in set(given)]
    if not missing:
        return "the file, its reference and its checkpoint name no more: export with shim.export"
    return f"pass {' or '.join(map(param, missing))}, or export with shim.export"


def _by_source_and_module(
    per_assignment: Counter[Assignment],
) -> tuple[dict[str, int], dict[str, int], dict[str, dict[str, int]]]:
    """Node counts by source, by module, and by module and category."""
    by_source: dict[str, int] = {}
    modules: dict[str, int] = {}
    module_sources: dict[str, dict[str, int]] = {}
    for assignment, count in per_assignment.items():
        module, source = assignment.module, assignment.source
        by_source[source] = by_source.get(source, 0) + count
        modules[module] = modules.get(module, 0) + count
        own = module_sources.get(module)
        if own is None:
            own = module_sources[module] = dict.fromkeys(CATEGORIES, 0)
        own[_CATEGORY.get(source, "direct")] += count
    return by_source, modules, module_sources


def _by_op(per_op_and_assignment: Counter[tuple[str, Assignment]]) -> dict[str, dict[str, int]]:
    """Node counts by op type and category."""
    by_op: dict[str, dict[str, int]] = {}
    for (op, assignment), count in per_op_and_assignment.items():
        row = by_op.get(op)
        if row is None:
            row = by_op[op] = dict.fromkeys(CATEGORIES, 0)
        row[_CATEGORY.get(assignment.source, "direct")] += count
    return by_op


def _add_ancestor_tags(tags: dict[str, str], formatter: TagFormatter) -> None:
    """Tags of every ancestor of a tagged module (the tree shows them), root first."""
    for module in list(tags):
        missing = []
        if module.count(".") > MAX_DEPTH:  # a hostile depth: the bounded list of ancestors
            missing = [path for path in reversed(ancestors(module)) if path not in tags]
        else:
            path = module
            while path:  # up to the first ancestor already there
                path = path.rpartition(".")[0]
                if path in tags:
                    break
                missing.append(path)
        for path in reversed(missing):
            tags[path] = formatter(path)


def _fallback_ids(assignments: list[Assignment], distinct: Iterable[Assignment]) -> list[int]:
    fallback = {assignment for assignment in distinct if assignment.source == "fallback"}
    return [node_id for node_id, assignment in enumerate(assignments) if assignment in fallback]


def _node_refs(index, node_ids: list[int]) -> dict[int, NodeRef]:
    """Readable addresses of the few nodes a report lists (fallbacks, conflicts)."""
    wanted = set(node_ids)
    refs: dict[int, NodeRef] = {}
    if not wanted:
        return refs
    for graph_id, scope in enumerate(index.graphs):
        label = None
        for position, node_id in enumerate(scope.node_ids):
            if node_id in wanted:
                label = label or index.graph_label(graph_id)
                node = index.nodes[node_id]
                refs[node_id] = NodeRef(label, position, node.op_type, node.name)
    return refs


def _ref_text(ref: NodeRef) -> str:
    return _safe(f"{ref.graph} #{ref.position} {ref.op_type} {ref.name or '(unnamed)'}")


def _conflict_text(conflict: ConflictRecord) -> str:
    return (
        f"{_ref_text(conflict.node)}: {conflict.chosen_source} says {_safe(conflict.chosen_module) or '(root)'}, "
        f"{conflict.rejected_source} says {_safe(conflict.rejected_module) or '(root)'}"
    )
