"""`tagger diff A B`: how the module tags of two versions of a model compare.

Two versions of one model (before and after onnxslim, an optimizer or a quantizer; two exports)
are compared by module. The rules:

1. Tags come from the files; a model with untagged nodes is tagged in memory first
   (`tagger.commands.nodetags`), and the report says which side was.
2. Nodes are matched one to one, first by node name, then (for nodes still unmatched) by output
   tensor name: tools that rewrite a node often keep the tensor it computes (onnxslim renames
   nodes after their outputs; a fused node keeps the last output of what it replaced). A name
   only matches when exactly one node of each model has it.
3. Per module (its own nodes, not its descendants'):
   `a = kept + removed + moved_out` and `b = kept + added + moved_in`, where `kept` are matched
   nodes tagged with the module on both sides, `removed` A's unmatched nodes, `added` B's
   unmatched nodes, and `moved_out`/`moved_in` matched nodes whose module changed.
4. Every matched node whose module changed is listed with both tags and how it was matched;
   modules with nodes only in A have disappeared, only in B appeared.
5. A changed node whose tag is chosen on either side (`tagger.reporting.certainty`: inferred by choice,
   not evidence or facts), or inferred on one side as a bound holding the other side's module
   (evidence the tool removed), is a change the tagger may have made, not the tool: they are counted,
   and when they are more than half of the changes and B was tagged without `reference`, a note
   says so and suggests tagging B with A as its reference.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tagger.commands.nodetags import NodeTag, model_tags
from tagger.model.modelio import load_model
from tagger.model.paths import is_within
from tagger.reporting.certainty import MOSTLY_CHOSEN
from tagger.text import LIST_LIMIT, JsonReport, listing, param, spelled
from tagger.text import markdown as _md
from tagger.text import natural as _natural
from tagger.text import terminal as _safe

__all__ = ["DiffReport", "ModuleDiff", "NodeChange", "diff"]


@dataclass(frozen=True)
class ModuleDiff:
    """One module's own nodes in A and in B, split by what happened to them."""

    module: str
    tag: str
    a: int
    b: int
    kept: int
    removed: int
    added: int
    moved_out: int
    moved_in: int

    @property
    def changed(self) -> bool:
        return bool(self.removed or self.added or self.moved_out or self.moved_in)


@dataclass(frozen=True)
class NodeChange:
    """A node present in both versions whose module differs."""

    matched_by: str
    """`name` or `output`."""
    name_a: str
    name_b: str
    op_a: str
    op_b: str
    module_a: str
    module_b: str
    tag_a: str
    tag_b: str
    kind_a: str = "direct"
    kind_b: str = "direct"
    """How sure each side's tag is (`tagger.reporting.certainty`)."""

    @property
    def chosen(self) -> bool:
        """Whether the change may be the tagger's, not the tool's: either side's tag is a choice,
        or one side is an inferred bound holding the other side's module (the tool removed the
        evidence; the tagger then says only what is certain, a shallower module)."""
        if "chosen" in (self.kind_a, self.kind_b):
            return True
        return (self.kind_b == "certain" and is_within(self.module_a, self.module_b)) or (
            self.kind_a == "certain" and is_within(self.module_b, self.module_a)
        )


@dataclass
class DiffReport(JsonReport):
    """The comparison of the tags of model `a` with model `b`."""

    a: str
    b: str
    nodes_a: int
    nodes_b: int
    matched_by_name: int
    matched_by_output: int
    removed: int
    added: int
    retagged: list[str]
    modules: list[ModuleDiff]
    disappeared: list[str]
    appeared: list[str]
    changes: list[NodeChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def chosen_changes(self) -> int:
        """Changed nodes whose tag is a choice on one side at least (rule 5)."""
        return sum(change.chosen for change in self.changes)

    @property
    def mostly_chosen(self) -> bool:
        return self.chosen_changes > MOSTLY_CHOSEN * len(self.changes)

    @property
    def matched(self) -> int:
        return self.matched_by_name + self.matched_by_output

    @property
    def identical(self) -> bool:
        """Same nodes (by name or output) with the same modules on both sides."""
        return not (self.changes or self.removed or self.added)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "matched": self.matched, "identical": self.identical, "chosen_changes": self.chosen_changes}

    def summary(self) -> str:
        lines = [
            f"{_safe(self.a)} ({self.nodes_a} nodes) -> {_safe(self.b)} ({self.nodes_b} nodes): "
            f"{self.matched} matched ({self.matched_by_name} by name, {self.matched_by_output} by output tensor), "
            f"{self.removed} removed, {self.added} added, {len(self.changes)} changed module "
            f"({self.chosen_changes} on a chosen tag)",
            f"modules: {sum(m.changed for m in self.modules)} of {len(self.modules)} changed, "
            f"{len(self.disappeared)} disappeared, {len(self.appeared)} appeared",
        ]
        lines += [f"note: {_safe(name)} had untagged nodes and was tagged in memory" for name in self.retagged]
        lines += [f"note: {_safe(note)}" for note in self.notes]
        return "\n".join(lines)

    def to_text(self) -> str:
        parts = [self.summary(), "", "modules with differences (A -> B: kept, -removed, +added, >moved out, <moved in):"]
        changed = [m for m in self.modules if m.changed]
        labels = [_safe(m.module) or "(root)" for m in changed[:LIST_LIMIT]]
        width = max([len(label) for label in labels] + [40])  # the widest shown path sets the column
        for label, m in zip(labels, changed, strict=False):
            parts.append(
                f"  {label:<{width}} {m.a:>5} -> {m.b:<5} kept {m.kept}, -{m.removed}, +{m.added}, >{m.moved_out}, <{m.moved_in}"
            )
        if len(changed) > LIST_LIMIT:
            parts.append(spelled(f"  … {len(changed) - LIST_LIMIT} more (full list in {param('json')})"))
        if not changed:
            parts.append("  none")
        parts += listing("disappeared modules", [_safe(m) or "(root)" for m in self.disappeared])
        parts += listing("appeared modules", [_safe(m) or "(root)" for m in self.appeared])
        parts += listing("nodes whose module changed", [_change_text(c, _safe) for c in self.changes])
        return "\n".join(parts)

    def to_markdown(self) -> str:
        rows = [
            f"# Tag diff: `{_md(self.a)}` → `{_md(self.b)}`",
            "",
            "| nodes A | nodes B | matched by name | matched by output | removed | added | module changed | on a chosen tag |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {self.nodes_a} | {self.nodes_b} | {self.matched_by_name} | {self.matched_by_output} | {self.removed} "
            f"| {self.added} | {len(self.changes)} | {self.chosen_changes} |",
            "",
        ]
        rows += [f"> {_md(name)} had untagged nodes and was tagged in memory" for name in self.retagged]
        rows += [f"> {_md(note)}" for note in self.notes]
        rows += [
            "## Modules",
            "",
            "| module | A | B | kept | removed | added | moved out | moved in |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        rows += [
            f"| {_md(m.module) or '(root)'} | {m.a} | {m.b} | {m.kept} | {m.removed} | {m.added} | {m.moved_out} | {m.moved_in} |"
            for m in self.modules
        ]
        rows += ["", f"## Disappeared modules ({len(self.disappeared)})", ""]
        rows += [f"- {_md(m) or '(root)'}" for m in self.disappeared] or ["none"]
        rows += ["", f"## Appeared modules ({len(self.appeared)})", ""]
        rows += [f"- {_md(m) or '(root)'}" for m in self.appeared] or ["none"]
        rows += ["", f"## Nodes whose module changed ({len(self.changes)})", ""]
        rows += [f"- {_change_text(c, _md)}" for c in self.changes] or ["none"]
        return "\n".join(rows) + "\n"


def diff(
    a: str | os.PathLike, b: str | os.PathLike, reference: str | os.PathLike | None = None, weights: str | os.PathLike | None = None
) -> DiffReport:
    """Compare the module tags of the ONNX files `a` and `b` (see the module docstring).

    A side tagged in memory uses `weights` (the checkpoint), and B also `reference` (the file it
    was made from; often `a` itself) as evidence (`tagger.transfer`)."""
    from tagger.api import transfer_sources

    path_a, path_b = Path(a), Path(b)
    model_a, model_b = load_model(path_a), load_model(path_b)
    sources_a = transfer_sources(None, weights, path_a.parent)
    sources_b = transfer_sources(reference, weights, path_b.parent)
    tags_a = model_tags(model_a, sources_a, path_a.parent)
    tags_b = model_tags(model_b, sources_b, path_b.parent)
    retagged = [str(path) for path, tags in ((path_a, tags_a), (path_b, tags_b)) if tags.retagged]
    report = compare(tags_a.nodes, tags_b.nodes, path_a.name, path_b.name, retagged)
    if reference is None and report.mostly_chosen:
        report.notes.append(
            spelled(
                f"{report.chosen_changes} of {len(report.changes)} module changes are on tags the tagger chose (not evidence "
                f"or facts): they may be its own choices, not the tool's; tag B with A as its reference: {param('reference')} {a}"
            )
        )
    return report


def compare(nodes_a: list[NodeTag], nodes_b: list[NodeTag], name_a: str, name_b: str, retagged: list[str]) -> DiffReport:
    """The diff of two tagged node lists."""
    by_name = _match(nodes_a, nodes_b, lambda n: [n.name], set(), set())
    used_a = set(by_name)
    used_b = set(by_name.values())
    by_output = _match(nodes_a, nodes_b, lambda n: list(n.outputs), used_a, used_b)
    pairs = [(i, j, "name") for i, j in by_name.items()] + [(i, j, "output") for i, j in by_output.items()]
    pairs.sort()
    used_a |= set(by_output)
    used_b |= set(by_output.values())

    count_a = Counter(n.module for n in nodes_a)
    count_b = Counter(n.module for n in nodes_b)
    kept: Counter[str] = Counter()
    moved_out: Counter[str] = Counter()
    moved_in: Counter[str] = Counter()
    changes: list[NodeChange] = []
    for i, j, how in pairs:
        x, y = nodes_a[i], nodes_b[j]
        if x.module == y.module:
            kept[x.module] += 1
            continue
        moved_out[x.module] += 1
        moved_in[y.module] += 1
        changes.append(NodeChange(how, x.name, y.name, x.op_type, y.op_type, x.module, y.module, x.tag, y.tag, x.kind, y.kind))
    removed = Counter(n.module for i, n in enumerate(nodes_a) if i not in used_a)
    added = Counter(n.module for j, n in enumerate(nodes_b) if j not in used_b)
    tags = {n.module: n.tag for n in nodes_a}
    tags.update({n.module: n.tag for n in nodes_b})
    modules = [
        ModuleDiff(m, tags[m], count_a[m], count_b[m], kept[m], removed[m], added[m], moved_out[m], moved_in[m])
        for m in sorted(set(count_a) | set(count_b), key=_natural)
    ]
    return DiffReport(
        a=name_a,
        b=name_b,
        nodes_a=len(nodes_a),
        nodes_b=len(nodes_b),
        matched_by_name=len(by_name),
        matched_by_output=len(by_output),
        removed=sum(removed.values()),
        added=sum(added.values()),
        retagged=retagged,
        modules=modules,
        disappeared=[m.module for m in modules if m.a and not m.b],
        appeared=[m.module for m in modules if m.b and not m.a],
        changes=changes,
    )


def _match(nodes_a, nodes_b, keys, used_a: set[int], used_b: set[int]) -> dict[int, int]:
    """One-to-one matches on keys that exactly one still-unmatched node of each side has."""
    index_a = _unique_keys(nodes_a, keys, used_a)
    index_b = _unique_keys(nodes_b, keys, used_b)
    matches: dict[int, int] = {}
    taken_b: set[int] = set()
    for key, i in index_a.items():
        j = index_b.get(key)
        if j is None or i in matches or j in taken_b:
            continue
        matches[i] = j
        taken_b.add(j)
    return matches


def _unique_keys(nodes, keys, used: set[int]) -> dict[str, int]:
    seen: dict[str, int] = {}
    duplicated: set[str] = set()
    for position, node in enumerate(nodes):
        if position in used:
            continue
        for key in keys(node):
            if not key:
                continue
            if key in seen and seen[key] != position:
                duplicated.add(key)
            seen[key] = position
    return {key: position for key, position in seen.items() if key not in duplicated}


def _change_text(change: NodeChange, escape) -> str:
    name = change.name_a if change.name_a == change.name_b else f"{change.name_a} -> {change.name_b}"
    op = change.op_a if change.op_a == change.op_b else f"{change.op_a} -> {change.op_b}"
    return (
        f"{escape(name) or '(unnamed)'} ({escape(op)}, by {change.matched_by}): "
        f"{escape(change.module_a) or '(root)'} -> {escape(change.module_b) or '(root)'}" + (" (chosen)" if change.chosen else "")
    )
