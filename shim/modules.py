"""The model-level `hierarchy.modules` entry: every module path of the exported model -> class.

The tagger reads it as the authoritative module list (it undoes TorchScript naming quirks against
it) and for class names in display tags. Written as `json.dumps` of an object in
`named_modules()` order: `{"": "Wrapper", "m": "BertModel", "m.embeddings": "BertEmbeddings", ...}`.
"""

from __future__ import annotations

import json

import torch

from tagger import write_module_map

__all__ = ["MODULES_KEY", "module_classes", "write_module_map", "write_modules"]

MODULES_KEY = "hierarchy.modules"
"""The key of the entry (`tagger.writing.module_map` writes it)."""


def module_classes(model: object) -> dict[str, str] | None:
    """`named_modules()` path -> class `__qualname__`; None for what has no modules (ExportedProgram).

    A scripted module reports the class it was scripted from, not `RecursiveScriptModule`.
    """
    named_modules = getattr(model, "named_modules", None)
    if named_modules is None:
        return None
    return {path: _class_name(module) for path, module in named_modules()}


def _class_name(module: torch.nn.Module) -> str:
    if isinstance(module, torch.jit.ScriptModule) and isinstance(getattr(module, "original_name", None), str):
        return module.original_name
    return type(module).__qualname__


def write_modules(model: torch.nn.Module, path: str) -> None:
    """Write `model`'s `named_modules()` paths -> class names as JSON to `path`, for
    `tagger retag MODEL.onnx --modules PATH` on a file this shim did not export (another exporter,
    a converter, a deployment tool): the tagger then writes no module name outside this tree.
    The paths are those of `model` itself: export `model` (not a wrapper around it), or prefix them."""
    classes = module_classes(model)
    if classes is None:
        raise TypeError(f"{type(model).__name__} has no named_modules()")
    with open(path, "w", encoding="utf-8") as file:
        json.dump(classes, file, indent=0)
