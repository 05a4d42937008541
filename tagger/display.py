"""`hierarchy.tag`: the human display path of a module.

With class names (dynamo `class_hierarchy`, or the shim's `hierarchy.modules` map):
`/BertModel/BertEncoder/BertLayer.0/BertAttention/BertSelfAttention` — root class first, one
segment per module, ModuleList/ModuleDict transparent with the child's key on the child (a
container the exporter never saw called, with no class of its own, counts as one), and
`Class.attr` where siblings share a class (`Linear.query`). Without class names the module path
itself: `/encoder/layer.0/attention/self`.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from tagger.paths import parent

__all__ = ["TagFormatter"]

_TRANSPARENT = frozenset({"ModuleList", "ModuleDict"})


class TagFormatter:
    """Formats module paths as display tags, memoised (a model has few distinct modules)."""

    def __init__(self, classes: dict[str, str]) -> None:
        self._classes = {path: qualname.rsplit(".", 1)[-1] for path, qualname in classes.items()}
        self._shared = self._shared_classes(self._classes)
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
            tag = self._format(module) if self._classes else _plain(module)
            self._cache[module] = tag
        return tag

    def _format(self, module: str) -> str:
        segments = [self._classes.get("", "")]
        parts = module.split(".") if module else []
        after_container = False
        for i, attribute in enumerate(parts):
            path = ".".join(parts[: i + 1])
            cls = self._classes.get(path)
            uncalled_list = cls is None and i + 1 < len(parts) and parts[i + 1].isdigit()
            if cls in _TRANSPARENT or uncalled_list:
                after_container = True
                continue
            if cls is None:
                segments.append(attribute)
            elif after_container or (parent(path), cls) in self._shared:
                segments.append(f"{cls}.{attribute}")
            else:
                segments.append(cls)
            after_container = False
        return "/" + "/".join(s for s in segments if s)


def _plain(module: str) -> str:
    """`encoder.layer.0.attention` -> `/encoder/layer.0/attention`: indices stay on their list."""
    out: list[str] = []
    for part in module.split(".") if module else []:
        if part.isdigit() and out:
            out[-1] = f"{out[-1]}.{part}"
        else:
            out.append(part)
    return "/" + "/".join(out)
