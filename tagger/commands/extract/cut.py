"""Selection and boundary: which nodes one extraction takes, and the tensors it reads and computes."""

from __future__ import annotations

import os
from dataclasses import dataclass

from tagger.commands.extract.body import body_sources, branch_matches, scope_label
from tagger.commands.extract.source import Dataflow, Source, load_source
from tagger.commands.selection import not_selected, selects, with_ancestors
from tagger.errors import InputError, param

__all__ = ["Cut", "all_modules", "groups_at", "locate", "make_cut", "modules_at_depth", "scoped_groups"]


@dataclass
class Cut:
    """The nodes of one extraction and its boundary, by position and name in the full model."""

    label: str
    module: str | None
    tag: str | None
    selected: list[int]
    pulled: list[int]
    inputs: list[str]
    outputs: list[str]


def _matching(src: Source, module: str | None, tag: str | None) -> list[int]:
    """The nodes of `src` in the selection (`tagger.commands.selection`)."""
    return [i for i, (path, text) in enumerate(zip(src.modules, src.tags, strict=True)) if selects(path, text, module, tag)]


def locate(src: Source, module: str | None, tag: str | None, branch: str | None = None) -> tuple[Source, list[int]]:
    """The source a selection is cut from (the main graph or a body) and its nodes there.

    The main graph when its nodes match (unless `branch` names a body), else the one body whose
    nodes match, else the body `branch` names among several (`tagger.commands.extract.body`, rule 2).
    """
    what = f"module {module!r}" if module is not None else f"tag {tag!r}"
    found = _scopes_matching(src, module, tag, stop=branch is None)
    if not found:
        raise InputError(_not_found(src, module, tag))
    if branch is not None:
        in_branch = [(scope, nodes) for scope, nodes in found if scope.body is not None and branch_matches(scope.body, branch)]
        if not in_branch:
            raise InputError(f"{what} lives in no body named {branch!r}: it lives in {_joined(found)}")
        found = in_branch
    if len(found) > 1:
        choices = " or ".join(f"{param('branch')} {_branch_name(scope, found)}" for scope, _ in found)
        raise InputError(f"{what} lives in {_joined(found)}; pass {choices}")
    return found[0]


def _scopes_matching(src: Source, module: str | None, tag: str | None, stop: bool) -> list[tuple[Source, list[int]]]:
    chosen = _matching(src, module, tag)
    if chosen and stop:
        return [(src, chosen)]
    found = [(src, chosen)] if chosen else []
    for body in body_sources(src):
        found.extend(_scopes_matching(body, module, tag, stop))
    return found


def _joined(found: list[tuple[Source, list[int]]]) -> str:
    labels = [scope_label(scope) for scope, _ in found]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def _branch_name(scope: Source, found: list[tuple[Source, list[int]]]) -> str:
    """The shortest `--branch` value that names this body alone among `found`."""
    body = scope.body
    assert body is not None
    bodies = [other.body for other, _ in found if other.body is not None]
    candidates = [body.attribute.removesuffix("_branch"), body.short, f"{body.node.name}/{body.attribute}", body.label]
    return next((name for name in candidates if sum(branch_matches(other, name) for other in bodies) == 1), repr(body.label))


def _not_found(src: Source, module: str | None, tag: str | None) -> str:
    scopes = _all_scopes(src)
    paths = (path for scope in scopes for path in scope.modules)
    return not_selected(paths, (text for scope in scopes for text in scope.tags), module, tag)


def _all_scopes(src: Source) -> list[Source]:
    """`src` and every body within it, depth first."""
    return [src, *(scope for body in body_sources(src) for scope in _all_scopes(body))]


def all_modules(src: Source) -> list[str]:
    """Every module path named by a tag (bodies included), with its ancestors, in order of first appearance."""
    return with_ancestors(path for scope in _all_scopes(src) for path in scope.modules)


def modules_at_depth(model: str | os.PathLike, depth: int) -> list[str]:
    """The module paths with `depth` dotted components that own nodes of `model` (0: the root),
    bodies included."""
    return list(dict.fromkeys(module for _, groups in scoped_groups(load_source(model), depth) for module in groups))


def groups_at(src: Source, depth: int) -> dict[str, list[int]]:
    """Module path at `depth` -> the nodes within it, in one pass over the nodes."""
    groups: dict[str, list[int]] = {}
    for i, path in enumerate(src.modules):
        parts = path.split(".") if path else []
        if len(parts) >= depth:
            groups.setdefault(".".join(parts[:depth]), []).append(i)
    return groups


def scoped_groups(src: Source, depth: int) -> list[tuple[Source, dict[str, list[int]]]]:
    """`groups_at` of the main graph, then of the bodies of nodes in no group, recursively: a node
    in a group takes its bodies along, a node above the depth (optimum's `If`) does not."""
    groups = groups_at(src, depth)
    grouped = {i for nodes in groups.values() for i in nodes}
    found = [(src, groups)] if groups else []
    for body in body_sources(src, (i for i in range(len(src.nodes)) if i not in grouped)):
        found.extend(scoped_groups(body, depth))
    return found


def make_cut(src: Source, module: str | None, tag: str | None, pull_producers: bool, selected: list[int]) -> Cut:
    """The cut of the `selected` nodes of `src` (`locate` or `scoped_groups` found them)."""
    label = f"tag {tag}" if module is None else (f"module {module}" if module else "module (root)")
    label = f"{label} in {src.body.label}" if src.body is not None else label
    flow = src.flow
    chosen = set(selected)
    pulled = _pulled_producers(flow, chosen) if pull_producers else set()
    inside = chosen | pulled
    produced = {name for i in inside for name in src.nodes[i].output if name}
    read_from_outside = [
        name for i in sorted(inside) for name in flow.reads[i] if name not in produced and name not in flow.initializers
    ]
    outside = set(read_from_outside)
    inputs = [name for name in flow.graph_inputs if name in outside]
    inputs += [name for name in dict.fromkeys(read_from_outside) if name not in inputs]
    outputs = [
        name
        for i in selected
        for name in src.nodes[i].output
        if name and (name in flow.graph_outputs or any(r not in inside for r in flow.readers.get(name, ())))
    ]
    if not outputs:
        raise InputError(f"{label} computes nothing the rest of the model reads (no boundary outputs)")
    return Cut(label, module, tag, selected, sorted(pulled), inputs, list(dict.fromkeys(outputs)))


def _pulled_producers(flow: Dataflow, chosen: set[int]) -> set[int]:
    """The input-independent producers (transitively) of the tensors `chosen` reads from outside."""
    pulled: set[int] = set()
    stack = list(chosen)
    while stack:
        i = stack.pop()
        for name in flow.reads[i]:
            p = flow.producer.get(name)
            if p is not None and p not in chosen and p not in pulled and p in flow.independent:
                pulled.add(p)
                stack.append(p)
    return pulled
