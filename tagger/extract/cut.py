"""Selection and boundary: which nodes one extraction takes, and the tensors it reads and computes."""

from __future__ import annotations

import difflib
import fnmatch
import os
from dataclasses import dataclass

from tagger.errors import InputError
from tagger.extract.source import Dataflow, Source, load_source
from tagger.paths import is_within

__all__ = ["Cut", "all_modules", "groups_at", "make_cut", "modules_at_depth"]

_NEARBY_LIMIT = 6


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


def _select(src: Source, module: str | None, tag: str | None) -> list[int]:
    if module is not None:
        chosen = [i for i, path in enumerate(src.modules) if is_within(path, module)]
        if not chosen:
            raise InputError(f"no node belongs to module {module!r}; {_nearby_modules(src, module)}")
        return chosen
    assert tag is not None
    chosen = [i for i, text in enumerate(src.tags) if fnmatch.fnmatchcase(text, tag)]
    if not chosen:
        examples = list(dict.fromkeys(src.tags))[:3]
        raise InputError(f"no node's hierarchy.tag matches {tag!r}; tags look like {', '.join(examples)}")
    return chosen


def all_modules(src: Source) -> list[str]:
    """Every module path named by a tag, with its ancestors, in order of first appearance."""
    found: dict[str, None] = {}
    for path in dict.fromkeys(src.modules):
        parts = path.split(".")
        for k in range(1, len(parts) + 1):
            found.setdefault(".".join(parts[:k]), None)
    found.pop("", None)
    return list(found)


def _nearby_modules(src: Source, module: str) -> str:
    """Paths ending in it and siblings under its deepest existing ancestor, else close spellings."""
    modules = all_modules(src)
    known = set(modules)
    parts = module.split(".")
    ancestor = next((".".join(parts[:k]) for k in range(len(parts) - 1, 0, -1) if ".".join(parts[:k]) in known), None)
    siblings = [m for m in modules if ancestor is not None and m.count(".") == ancestor.count(".") + 1 and is_within(m, ancestor)]
    nearby = list(dict.fromkeys([m for m in modules if m.endswith("." + module)] + siblings))
    nearby = nearby or difflib.get_close_matches(module, modules, n=_NEARBY_LIMIT, cutoff=0.6)
    nearby = nearby or [m for m in modules if "." not in m]
    if not nearby:
        return "the model names no modules"
    more = ", ..." if len(nearby) > _NEARBY_LIMIT else ""
    return f"modules near it: {', '.join(nearby[:_NEARBY_LIMIT])}{more}"


def modules_at_depth(model: str | os.PathLike, depth: int) -> list[str]:
    """The module paths with `depth` dotted components that own nodes of `model` (0: the root)."""
    return _modules_at(load_source(model), depth)


def _modules_at(src: Source, depth: int) -> list[str]:
    return list(groups_at(src, depth))


def groups_at(src: Source, depth: int) -> dict[str, list[int]]:
    """Module path at `depth` -> the nodes within it, in one pass over the nodes."""
    groups: dict[str, list[int]] = {}
    for i, path in enumerate(src.modules):
        parts = path.split(".") if path else []
        if len(parts) >= depth:
            groups.setdefault(".".join(parts[:depth]), []).append(i)
    return groups


def make_cut(src: Source, module: str | None, tag: str | None, pull_producers: bool, selected: list[int] | None = None) -> Cut:
    label = f"tag {tag}" if module is None else (f"module {module}" if module else "module (root)")
    selected = _select(src, module, tag) if selected is None else selected
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
