"""Which nodes `--module PATH` or `--tag GLOB` selects, and the one line when it selects none.

One rule for `extract` and `nodes`:

1. `--module PATH` selects the nodes whose `hierarchy.module` is PATH or lies below it (`""`:
   the whole model);
2. `--tag GLOB` selects the nodes whose `hierarchy.tag` matches the glob (`fnmatch`, case
   sensitive: `/BertModel/*/BertLayer.0/*`);
3. a selection without nodes is an `InputError` naming modules near the path (paths ending in
   it, its siblings under its deepest known ancestor, else close spellings), or a few of the
   model's tags.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable

from tagger.model.paths import is_within

__all__ = ["NEARBY_LIMIT", "not_selected", "selects", "with_ancestors"]

NEARBY_LIMIT = 6
"""How many nearby modules an error line names."""


def selects(module_path: str, tag_text: str, module: str | None, tag: str | None) -> bool:
    """Whether a node tagged `module_path` / `tag_text` is in the selection `module` or `tag`."""
    if module is not None:
        return is_within(module_path, module)
    assert tag is not None
    return fnmatch.fnmatchcase(tag_text, tag)


def with_ancestors(paths: Iterable[str]) -> list[str]:
    """Every module path in `paths` with its ancestors (the root left out), in order of first appearance."""
    found: dict[str, None] = {}
    for path in dict.fromkeys(paths):
        parts = path.split(".")
        for k in range(1, len(parts) + 1):
            found.setdefault(".".join(parts[:k]), None)
    found.pop("", None)
    return list(found)


def not_selected(paths: Iterable[str], tags: Iterable[str], module: str | None, tag: str | None) -> str:
    """The error line for a selection that has no node (`paths`, `tags`: the model's node tags)."""
    if module is not None:
        return f"no node belongs to module {module!r}; {_nearby(with_ancestors(paths), module)}"
    examples = list(dict.fromkeys(tags))[:3]
    return f"no node's hierarchy.tag matches {tag!r}; tags look like {', '.join(examples)}"


def _nearby(modules: list[str], module: str) -> str:
    known = set(modules)
    parts = module.split(".")
    ancestor = next((".".join(parts[:k]) for k in range(len(parts) - 1, 0, -1) if ".".join(parts[:k]) in known), None)
    siblings = [m for m in modules if ancestor is not None and m.count(".") == ancestor.count(".") + 1 and is_within(m, ancestor)]
    nearby = list(dict.fromkeys([m for m in modules if m.endswith("." + module)] + siblings))
    nearby = nearby or difflib.get_close_matches(module, modules, n=NEARBY_LIMIT, cutoff=0.6)
    nearby = nearby or [m for m in modules if "." not in m]
    if not nearby:
        return "the model names no modules"
    more = ", ..." if len(nearby) > NEARBY_LIMIT else ""
    return f"modules near it: {', '.join(nearby[:NEARBY_LIMIT])}{more}"
