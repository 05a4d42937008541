"""`hierarchy.tag`: the human display path of a module.

With class names (dynamo `class_hierarchy`, or the shim's `hierarchy.modules` map):
`/BertModel/BertEncoder/BertLayer.0/BertAttention/BertSelfAttention` — root class first, one
segment per module, ModuleList/ModuleDict transparent with the child's key on the child (a
container the exporter never saw called, with no class of its own, counts as one), and
`Class.attr` where siblings share a class (`Linear.query`). Without class names the module path
itself: `/encoder/layer.0/attention/self`.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable

from tagger.model.paths import MAX_DEPTH, parent

__all__ = ["TagFormatter"]

_TRANSPARENT = frozenset({"ModuleList", "ModuleDict"})


class TagFormatter:
    """Formats module paths as display tags, memoised (a model has few distinct modules)."""

    def __init__(self, classes: dict[str, str]) -> None:
        self._classes = {path: qualname.rsplit(".", 1)[-1] for path, qualname in classes.items()}
        self._shared = self._shared_classes(self._classes)
        self._numbered_parents = {parent(p) for p in classes if p.rpartition(".")[2].isdigit()}
        self._cache: dict[str, str] = {}

    @staticmethod
    def _shared_classes(classes: dict[str, str]) -> set[tuple[str, str]]:
        """(parent, class) pairs where two or more siblings have the same class."""
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for path, cls in classes.items():
            if path:
                counts[parent(path)][cls] += 1
        return {(p, cls) for p, counter in counts.items() for cls, n in counter.items() if n > 1}

    def __call__(self, module: str) -> str:
        tag = self._cache.get(module)
        if tag is None:
            if not self._classes:
                tag = _plain(module)
            elif module.count(".") >= MAX_DEPTH:  # no classes that deep: the rest is plain
                parts = module.split(".", MAX_DEPTH)
                tag = self(".".join(parts[:MAX_DEPTH])).rstrip("/") + _plain(parts[MAX_DEPTH])
            else:
                tag = self._format(module)
            self._cache[module] = tag
        return tag

    def prepare(self, modules: Iterable[str]) -> None:
        """Format many module paths ahead of their calls (a model may have a module per four
        nodes: 84k at 300k): without class names, ASCII paths by one substitution over their
        joined text instead of a `_plain` call each (a third of the time)."""
        if self._classes:
            return  # formatted on demand, from the parent's tag
        todo = [module for module in dict.fromkeys(modules) if module not in self._cache]
        text = "\n".join(todo)
        if not text.isascii() or text.count("\n") != len(todo) - 1:  # a path holding a newline: one by one
            return
        tags = ("/" + _NOT_AN_INDEX_JOINED.sub("/", text).replace("\n", "\n/")).split("\n")
        self._cache.update(zip(todo, tags, strict=True))

    def _format(self, module: str) -> str:
        """Parent's tag plus this module's segment (memoised through `__call__`)."""
        if not module:
            root = self._classes.get("", "")
            return f"/{root}" if root else "/"
        head, _, attribute = module.rpartition(".")
        prefix = self(head)
        segment = self._segment(module, head, attribute)
        if not segment:
            return prefix
        return f"{prefix.rstrip('/')}/{segment}"

    def _segment(self, path: str, head: str, attribute: str) -> str:
        """This module's own part of the tag; "" for a transparent container."""
        cls = self._classes.get(path)
        if self._transparent(path):
            return ""
        if cls is None:
            return attribute
        if self._transparent(head) or (head, cls) in self._shared:
            return f"{cls}.{attribute}"
        return cls

    def _transparent(self, path: str) -> bool:
        """ModuleList/ModuleDict, or a container the exporter never saw called (no class of its
        own, numbered children)."""
        if not path:
            return False
        cls = self._classes.get(path)
        return cls in _TRANSPARENT or (cls is None and path in self._numbered_parents)


_NOT_AN_INDEX_JOINED = re.compile(r"\.(?![0-9]+(?:[.\n]|\Z))")
"""In paths joined by newlines: a dot before a part that is no list index (ASCII digits up to
the next dot, the path's end or the text's), which `_plain` makes a `/`."""


def _plain(module: str) -> str:
    """`encoder.layer.0.attention` -> `/encoder/layer.0/attention`: indices stay on their list."""
    if not module:
        return "/"
    parts = module.split(".")
    if not any(map(str.isdigit, parts)):
        return "/" + "/".join(parts)  # no index: every part a segment
    out = [parts[0]]
    for part in parts[1:]:
        if part.isdigit():
            out[-1] = f"{out[-1]}.{part}"
        else:
            out.append(part)
    return "/" + "/".join(out)
