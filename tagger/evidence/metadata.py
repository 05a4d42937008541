"""The dynamo exporter's per-node metadata: `pkg.torch.onnx.name_scopes` / `class_hierarchy`.

`name_scopes` is a Python list literal of cumulative module paths ending with the fx node name
(`['', 'm', 'm.encoder', ..., 'linear']`); the item before the last is the node's module.
`class_hierarchy` is aligned with it and names each module's class.

The list is the fx node's `nn_module_stack`, which torch.export builds from the call stack of
modules, so it always starts at the root module (`''`). A list that does not start there is no
module stack and names no module: torch 2.13 writes
`['_empty_nn_module_stack_from_metadata_hook', 'sym_size_int_12']` on the `sym_size` nodes of a
dynamic-shape export (a placeholder for an empty stack, measured on BERT and LLaMA: 4 nodes a
file). Such nodes have no evidence here; inference bounds them.
"""

from __future__ import annotations

import ast

from tagger.evidence import Context
from tagger.model.index import ModelIndex
from tagger.model.keys import CLASS_HIERARCHY_KEY, NAME_SCOPES_KEY

SOURCE = "metadata"
__all__ = ["SOURCE", "propose"]

_SEPARATOR = "', '"
"""Between two items of a list literal as the exporter writes it (`repr` of a list of str)."""


def propose(index: ModelIndex, context: Context) -> dict[int, str]:
    """Every node's module from its `name_scopes`, the classes of its modules learnt on the way.

    The exporter ends each list with the fx node's own name (`'linear_3'`), so the texts are
    unique per node; everything before that last item (the *head*) is shared by all nodes of one
    module. Work is done once per head; a node whose last item is a plain string (no quotes or
    backslashes) is resolved by its head alone.
    """
    found: dict[int, str] = {}
    parsed: dict[str, list[str] | None] = {}
    by_head: dict[str, str] = {}
    for node_id, node in enumerate(index.views):
        metadata = node.metadata
        if metadata is None:
            continue
        text = metadata.get(NAME_SCOPES_KEY)
        if text is None:
            continue
        cut = text.rfind(_SEPARATOR)
        head = text[:cut] if cut > 0 else None
        module = by_head.get(head) if head is not None else None
        if module is None or not _plain_last_item(text, cut):
            classes_text = metadata.get(CLASS_HIERARCHY_KEY)
            module = _module_of(text, classes_text, parsed, context)
            if module is None:
                continue
            if head is not None and classes_text is not None and _plain_last_item(text, cut) and _fast_list(text):
                by_head[head] = module  # its classes are learnt: the head's other nodes teach no more
        found[node_id] = module
    return found


def _plain_last_item(text: str, cut: int) -> bool:
    """Whether `text` ends `', 'item']` with a plain item, so the head alone decides the module."""
    start = cut + len(_SEPARATOR)
    return text.endswith("']") and text.count("'", start) == 1 and text.find('"', start) < 0 and text.find("\\", start) < 0


def _module_of(text: str, classes_text: str | None, parsed: dict[str, list[str] | None], context: Context) -> str | None:
    """The item before the fx node name; the module set learns it, the classes learn its chain."""
    scopes = _parse_list(text, parsed)
    if not scopes or len(scopes) < 2 or scopes[0] != "":
        return None  # no module stack from the root: an exporter placeholder, not a module
    module = scopes[-2]
    context.modules.add(module)
    if classes_text is not None:
        _learn_classes(scopes[:-1], _parse_list(classes_text, parsed) or [], context)
    return module


def _parse_list(text: str, cache: dict[str, list[str] | None]) -> list[str] | None:
    """Parse a list literal of strings; a fast path for the plain `['a', 'b']` the exporter writes."""
    if text not in cache:
        fast = _fast_list(text)
        cache[text] = fast if fast is not None else _literal_list(text)
    return cache[text]


def _fast_list(text: str) -> list[str] | None:
    if not (text.startswith("['") and text.endswith("']")) or "\\" in text or '"' in text:
        return None
    items = text[2:-2].split("', '")
    return items if text.count("'") == 2 * len(items) else None


def _literal_list(text: str) -> list[str] | None:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def _learn_classes(paths: list[str], classes: list[str], context: Context) -> None:
    """Deepest first, up to the first module whose class is known (its ancestors are too: they
    were learnt from the same chain)."""
    known = context.classes
    for path, qualified in reversed(list(zip(paths, classes, strict=False))):
        if path in known:
            return
        if not qualified.startswith("aten."):
            known[path] = qualified.rsplit(".", 1)[-1]
