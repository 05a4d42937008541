"""The dynamo exporter's per-node metadata: `pkg.torch.onnx.name_scopes` / `class_hierarchy`.

`name_scopes` is a Python list literal of cumulative module paths ending with the fx node name
(`['', 'm', 'm.encoder', ..., 'linear']`); the item before the last is the node's module.
`class_hierarchy` is aligned with it and names each module's class.
"""

from __future__ import annotations

import ast

from tagger.evidence import Context
from tagger.index import ModelIndex

SOURCE = "metadata"
__all__ = ["SOURCE", "propose", "NAME_SCOPES_KEY", "CLASS_HIERARCHY_KEY"]

NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
CLASS_HIERARCHY_KEY = "pkg.torch.onnx.class_hierarchy"


def propose(index: ModelIndex, context: Context) -> dict[int, str]:
    found: dict[int, str] = {}
    parsed: dict[str, list[str] | None] = {}
    module_of: dict[str, str | None] = {}  # per distinct `name_scopes` text: a module's nodes repeat it
    learned: dict[str, str] = {}  # the `class_hierarchy` text last learned with each `name_scopes` text
    for node_id, node in enumerate(index.views):
        metadata = node.metadata
        if metadata is None:
            continue
        scopes_text = metadata.get(NAME_SCOPES_KEY)
        if scopes_text is None:
            continue
        if scopes_text in module_of:
            module = module_of[scopes_text]
        else:
            module = module_of[scopes_text] = _module_of(scopes_text, parsed, context)
        if module is None:
            continue
        found[node_id] = module
        classes_text = metadata.get(CLASS_HIERARCHY_KEY)
        if classes_text is not None and learned.get(scopes_text) != classes_text:
            learned[scopes_text] = classes_text  # learning again is harmless: known classes stay
            scopes = parsed[scopes_text] or []
            _learn_classes(scopes[:-1], _parse_list(classes_text, parsed) or [], context)
    return found


def _module_of(scopes_text: str, parsed: dict[str, list[str] | None], context: Context) -> str | None:
    """The item before the fx node name; the module set learns it."""
    scopes = _parse_list(scopes_text, parsed)
    if not scopes:
        return None
    module = scopes[-2] if len(scopes) >= 2 else ""
    context.modules.add(module)
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
    for path, qualified in zip(paths, classes, strict=False):
        if path not in context.classes and not qualified.startswith("aten."):
            context.classes[path] = qualified.rsplit(".", 1)[-1]
