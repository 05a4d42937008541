"""Equal clones of a module list merged into one name, told apart by the model's module tree.

`copy.deepcopy` makes the entries of a module list equal (`nn.TransformerEncoder` clones its
layer N times). In a freshly built model they stay equal, and both exporters keep one initializer
for equal tensors, named after the first entry: every layer then reads `layers.0`'s weights. The
file alone cannot tell that from one module called N times (ALBERT's shared layer reads its
weights once per call), so without a tree the name stands for every read.

The true module tree can tell them apart. A list's entries run in list order (`for layer in
self.layers`), each once per forward. So when the tree holds a list of N entries, the file names
parameters of none but the first, and a parameter of the first is read exactly N times, the k-th
read is the k-th entry's. A list of one entry (ALBERT's layer group, or `[layer] * N`, which
`named_modules()` lists once) is one module called again, and keeps its name.

Without the tree, the weights' values still tell a trained file: training never leaves two
entries byte-equal, so clones can be merged only in an untrained one, and that shows elsewhere:
a fresh init fills norm weights and biases with one constant, which exporters merge across
modules (`merged_parameters`). In a trained file a parameter read again is one module called
again, and its name stands for every read. In an untrained one (`later_reads`), the first read
keeps the entry's name (the first entry's work, or the first call's: the same module either way)
and every later read names the outermost module list the entry lies in: the one module both
readings agree it ran inside. Equal clones differ from the first entry only in list indices, and a
module called again is the entry itself, so that list is an ancestor of the truth in both: shallow,
never wrong.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

__all__ = ["clone_reads", "later_reads", "outermost_list"]


def clone_reads(readers: dict[str, list[int]], owners: dict[str, str], tree: Container[str]) -> dict[tuple[int, str], str]:
    """(node, parameter) -> the list entry's module, for each read of a first entry's parameter
    that stands for all the entries (`readers`: parameter -> its readers in order; `owners`:
    parameter -> module)."""
    named = _entries_named(owners.values())
    found: dict[tuple[int, str], str] = {}
    for name, nodes in readers.items():
        owner = owners.get(name)
        if owner is None or len(nodes) < 2:
            continue
        for roots, entries in _lists_holding(owner, tree):
            if len(entries) == len(nodes) and named.isdisjoint(roots[1:]):
                found.update(((node, name), entry) for node, entry in zip(nodes, entries, strict=True))
                break
    return found


def later_reads(readers: dict[str, list[int]], owners: dict[str, str], reread: Iterable[str]) -> dict[tuple[int, str], str]:
    """(node, parameter) -> the outermost module list holding the parameter's owner, for every read
    after the first of each `reread` parameter (a list entry's, read more than once)."""
    found: dict[tuple[int, str], str] = {}
    for name in reread:
        outermost = outermost_list(owners[name])
        if outermost is not None:
            found.update(((node, name), outermost) for node in readers[name][1:])
    return found


def outermost_list(module: str) -> str | None:
    """The module list the outermost entry of `module` belongs to (`m.layers.0.attn` -> `m.layers`);
    None when `module` lies in no list entry (no component is an index)."""
    parts = module.split(".")
    cut = next((i for i, part in enumerate(parts) if part.isdigit()), None)
    return None if cut is None else ".".join(parts[:cut])


def _lists_holding(owner: str, tree: Container[str]) -> Iterable[tuple[list[str], list[str]]]:
    """For each list's first entry `owner` lies in (deepest first): the list's entries, and the
    same module in each (`m.layers.0.attn` in a list of two: `m.layers.0`, `m.layers.1`, and
    `m.layers.0.attn`, `m.layers.1.attn`)."""
    parts = owner.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        if parts[cut] != "0":
            continue
        prefix, rest = ".".join(parts[:cut]), parts[cut + 1 :]
        roots: list[str] = []
        entries: list[str] = []
        while (path := ".".join(filter(None, [prefix, str(len(entries)), *rest]))) in tree:
            roots.append(".".join(filter(None, [prefix, str(len(entries))])))
            entries.append(path)
        if len(entries) > 1:
            yield roots, entries


def _entries_named(owners: Iterable[str]) -> set[str]:
    """Every module path that an owner of a parameter lies in or is (its ancestors and itself)."""
    named: set[str] = set()
    for owner in set(owners):
        parts = owner.split(".")
        named.update(".".join(parts[: k + 1]) for k in range(len(parts)))
    return named
