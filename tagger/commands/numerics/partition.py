"""The pieces a model is compared in at one depth: every node in exactly one piece.

The modules at the depth are pieces (their whole subtree). A node above the depth, or in a
branch that never reaches it, belongs to its highest ancestor whose subtree reaches no module
at the depth: `embeddings` and `pooler` of a BERT at the depth of `encoder.layer.N` are whole
pieces, so the quantized embedding table shows up as itself instead of vanishing from the
table. What is left, nodes of a module that also has pieces below it (the root's mask and
shape ops, an encoder's own final norm when its layers are pieces), is that module's own-nodes
piece.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Piece", "partition"]


@dataclass(frozen=True)
class Piece:
    """`module`'s subtree, or only the nodes tagged `module` itself when `own` is true."""

    module: str
    own: bool = False

    @property
    def label(self) -> str:
        name = self.module or "(root)"
        return f"{name} (own nodes)" if self.own and self.module else name


def partition(paths: list[str], depth: int, tree: Iterable[str] = ()) -> dict[Piece, list[int]]:
    """Node positions by piece; `paths` is each node's module; `tree` adds modules whose depth
    decides the pieces (the float model's, when partitioning the derived model like it)."""
    deep = _reaching(list(tree) or paths, depth)
    pieces: dict[Piece, list[int]] = {}
    for i, path in enumerate(paths):
        pieces.setdefault(_piece(path, depth, deep), []).append(i)
    return pieces


def _reaching(paths: Iterable[str], depth: int) -> set[str]:
    """Every module whose subtree holds a module at `depth` or deeper (the root included)."""
    reaching: set[str] = set()
    for path in paths:
        parts = path.split(".") if path else []
        if len(parts) >= depth:
            reaching.update(".".join(parts[:k]) for k in range(depth))
    return reaching


def _piece(path: str, depth: int, deep: set[str]) -> Piece:
    parts = path.split(".") if path else []
    if len(parts) >= depth:
        return Piece(".".join(parts[:depth]))
    for k in range(1, len(parts) + 1):
        ancestor = ".".join(parts[:k])
        if ancestor not in deep:
            return Piece(ancestor)
    return Piece(path, own=True)
