"""The model-level `hierarchy.modules` entry: the module tree a file's tags were checked against.

The shim writes it at export (every `named_modules()` path -> class). `retag` writes it when it
checked the names against a tree given from outside the file (`--modules`, `--weights`' parameter
paths, the reference's map) and the file has none: the tags it wrote are then read back against
the same tree. Without it a later `report`, `tree` or `profile` of the tagged file, which decides
the inherited tags again, would take the names the check rejected (a converter's own vocabulary,
`model.attn_mask_reformat`) as modules, and say the names were never checked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import onnx

from tagger.model.keys import MODULE_MAP_KEY

__all__ = ["record_module_tree", "write_module_map"]


def write_module_map(model: onnx.ModelProto, classes: Mapping[str, str | None]) -> None:
    """Set the `hierarchy.modules` entry of `model` (path -> class name, null where none is known),
    replacing an earlier one; every other model-level entry stays as it is."""
    text = json.dumps(dict(classes), sort_keys=False)
    for prop in model.metadata_props:
        if prop.key == MODULE_MAP_KEY:
            prop.value = text
            return
    entry = model.metadata_props.add()
    entry.key, entry.value = MODULE_MAP_KEY, text


def record_module_tree(model: onnx.ModelProto, tree: Mapping[str, str | None] | None) -> bool:
    """Write `tree` (the one the names were checked against) as the map of a file that has none;
    returns whether it was written. A file's own map is never replaced: it is the exporter's."""
    if tree is None or any(prop.key == MODULE_MAP_KEY for prop in model.metadata_props):
        return False
    write_module_map(model, tree)
    return True
