"""Names that say which module once inference says which list entry.

A TorchScript scope that names several known modules alike (`ScopeReading._known_below`: entries
of a list run by `layer.forward(x)`, which leaves the entry out of every scope) is no evidence,
so inference places its nodes. The scope still says where inside an entry a node ran
(`/encoder/attention/softmax_1` is some layer's `attention.softmax`): once inference has put the
node on the branch of exactly one of the scope's readings, that reading is its module.
"""

from __future__ import annotations

from tagger.model.paths import is_within

__all__ = ["refine_alike"]


def refine_alike(modules: list[str | None], sources: list[str], alike: dict[int, tuple[str, ...]]) -> None:
    """Put each inferred node whose scope reads alike (`alike`: node -> the paths it may name) in
    the one reading on its inferred module's branch: below it (the scope names the module inside
    the entry), or above it (the scope names the module whose own op it is: a deeper choice is
    not). Nodes on no reading's branch, or on several (inferred above the entries), keep their tag."""
    for node, readings in alike.items():
        tag = modules[node]
        if tag is None or sources[node] != "inherited":
            continue
        fits = [path for path in readings if is_within(path, tag) or is_within(tag, path)]
        if len(fits) == 1:
            modules[node] = fits[0]
