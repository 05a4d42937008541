"""Module paths as integer ids, with lowest common ancestors and containment: the module tree
every rule reasons on (fact A's bound is an LCA, rule 4's caller a parent past module lists)."""

from __future__ import annotations

__all__ = ["Tree"]


class Tree:
    """Module paths as integer ids, with LCA and containment cached per pair of ids."""

    def __init__(self, containers: set[str], sequences: set[str] | frozenset[str] = frozenset()) -> None:
        self._sequences = sequences
        self.paths: list[str] = []
        self._dotted: list[str] = []
        """Each path with a trailing dot: the prefix of everything below it (`within`)."""
        self.ids: dict[str, int] = {}
        self._lca: dict[tuple[int, int], int] = {}
        self._containers = containers
        self.leaf: list[bool] = []
        self.root = self.id("")

    def id(self, path: str) -> int:
        found = self.ids.get(path)
        if found is None:
            found = self.ids[path] = len(self.paths)
            self.paths.append(path)
            self._dotted.append(path + ".")
            self.leaf.append(path not in self._containers)
        return found

    def lca(self, a: int, b: int) -> int:
        if a == b or a < 0:
            return b
        if b < 0:
            return a
        key = (a, b) if a < b else (b, a)
        found = self._lca.get(key)
        if found is None:
            x, y = self.paths[a].split("."), self.paths[b].split(".")
            common = 0
            for p, q in zip(x, y, strict=False):
                if p != q:
                    break
                common += 1
            found = self._lca[key] = self.id(".".join(x[:common]) if self.paths[a] and self.paths[b] else "")
        return found

    def lca_all(self, ids) -> int:
        result = -1
        for i in ids:
            result = self.lca(result, i)
        return result

    def within(self, a: int, b: int) -> bool:
        """`a` is `b` or lies below it (what `lca(a, b) == b` says, by a prefix test: no cache entry)."""
        if a == b or a < 0:
            return True
        if b < 0:
            return False
        return b == self.root or self.paths[a].startswith(self._dotted[b])

    def depth(self, a: int) -> int:
        path = self.paths[a]
        return path.count(".") + 1 if path else 0

    def is_sequence(self, a: int) -> bool:
        return self.paths[a] in self._sequences

    def parent(self, a: int) -> int:
        """The module that calls `a`: its parent, past module lists (a list runs no op of its own)."""
        path = self.paths[a].rpartition(".")[0]
        while path and path in self._sequences:
            path = path.rpartition(".")[0]
        return self.id(path)
