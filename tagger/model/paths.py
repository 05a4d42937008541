"""Module paths: normalising exporter scopes into `named_modules()` paths, LCA, display tags.

A module path is a dotted string as `nn.Module.named_modules()` spells it; `""` is the root.
"""

from __future__ import annotations

from collections.abc import Iterable

from tagger.model.scopes import MAX_DEPTH, ScopeReading

__all__ = [
    "MAX_DEPTH",
    "ModuleSet",
    "ancestors",
    "is_within",
    "lca",
    "lca_all",
    "parent",
    "scope_segments",
]


def parent(path: str) -> str:
    """The enclosing module of `path` (the root's parent is the root)."""
    return path.rpartition(".")[0]


def is_within(path: str, module: str) -> bool:
    """True when `path` is `module` or lies below it."""
    return module == "" or path == module or path.startswith(module + ".")


def lca(a: str | None, b: str | None) -> str | None:
    """Lowest common ancestor of two module paths; `None` means "no information"."""
    if a is None:
        return b
    if b is None or a == b:
        return a
    common: list[str] = []
    for x, y in zip(a.split("."), b.split("."), strict=False):
        if x != y:
            break
        common.append(x)
    return ".".join(common)


def lca_all(paths: Iterable[str | None]) -> str | None:
    """LCA of many paths, ignoring `None`."""
    result: str | None = None
    for path in paths:
        result = lca(result, path)
    return result


def ancestors(path: str) -> list[str]:
    """Every strict ancestor of `path`, root first (at most `MAX_DEPTH` of them)."""
    if not path:
        return []
    parts = path.split(".", MAX_DEPTH)
    return [""] + [".".join(parts[:i]) for i in range(1, len(parts))]


def scope_segments(name: str) -> list[str] | None:
    """The scope part of a `/a/b/Op`-style name, or None when the name carries no scope.

    `/m/encoder/layer.0/MatMul` -> `["m", "encoder", "layer.0"]`; `/Shape` -> `[]` (root);
    `Conv_124`, `onnx::MatMul_3`, `val_9` -> None; so is a name nested deeper than `MAX_DEPTH`.
    """
    if "/" not in name:
        return None
    segments = [s for s in name.split("/") if s]
    if len(segments) > MAX_DEPTH or name.count(".") > MAX_DEPTH:
        return None
    return segments[:-1]


class ModuleSet(ScopeReading):
    """The module paths known to exist, used to undo exporter naming quirks.

    Known paths come from the shim's `hierarchy.modules` map (authoritative: it is the full
    `named_modules()` list), dynamo metadata and parameter names (partial: only modules that
    own parameters or appear in metadata).
    """

    def __init__(self) -> None:
        super().__init__()
        self._known: set[str] = {""}
        self.authoritative = False

    def __contains__(self, path: str) -> bool:
        return path in self._known

    def __len__(self) -> int:
        return len(self._known)

    def paths(self) -> frozenset[str]:
        """Every known module path."""
        return frozenset(self._known)

    def sequences(self) -> set[str]:
        """Known modules whose children are all numbered (ModuleList, Sequential): they run no
        op of their own, so no node can belong to them."""
        numbered: set[str] = set()
        named: set[str] = set()
        for path in self._known:
            if path:
                head, _, last = path.rpartition(".")
                (numbered if last.isdigit() else named).add(head)
        return numbered - named

    def containers(self) -> set[str]:
        """Known modules that have known children (everything else is a leaf)."""
        return {path.rpartition(".")[0] for path in self._known if path}

    def forget_readings(self) -> None:
        """Drop the readings of scopes (`_memo`) and the index of names: a new known module
        changes them, and once the sources have run nothing reads them (22 MB at 300k nodes)."""
        self._memo.clear()
        self._by_unqualified = None

    def has_top_level(self, path: str) -> bool:
        """Whether the first component of `path` is a known child of the root (or nothing is known)."""
        if len(self._known) == 1 or not path:
            return True
        return path.split(".", 1)[0] in self._known

    def adopt(self, tree: Iterable[str]) -> None:
        """Make `tree` (every `named_modules()` path) the whole known set: authoritative from now
        on, so nothing outside it is ever learnt (`add`)."""
        known = {""}
        for path in tree:
            if path not in known:
                known.add(path)
                known.update(ancestors(path))
        self._known = known
        self.forget_readings()
        self._shared.clear()
        self.authoritative = True

    def add(self, path: str) -> None:
        """Record `path` and all its ancestors as existing modules (ignored once the set is
        authoritative: a path outside the true tree is a claim, not a module)."""
        known = self._known
        if path in known or self.authoritative:
            return
        self.forget_readings()
        if path.count(".") > MAX_DEPTH:
            known.add(path)
            known.update(ancestors(path))
            return
        while path not in known:  # up to the first known ancestor (the root always is)
            known.add(path)
            path = path.rpartition(".")[0]
