"""Scoped node names: TorchScript `/encoder/layer.0/attention/self/MatMul`, the names tools
derive from them (`…/Add_output_0`, `…/MatMul_quant`, `…_QuantizeLinear`) and `a/b/c` scopes
of other converters. Everything before the last `/` is the scope.
"""

from __future__ import annotations

import re

from tagger.evidence import Context
from tagger.index import ModelIndex, NodeView
from tagger.paths import ModuleSet, scope_segments

SOURCE = "name"
__all__ = ["SOURCE", "propose", "module_of_name", "observe_names"]

_TENSOR_LIKE = re.compile(r"_output_\d+$")


def module_of_name(name: str, modules: ModuleSet, cache: dict[str, str | None]) -> str | None:
    """The module path a scoped name points at, or None for unscoped names.

    Cached by the scope part (everything before the last `/`): names are unique, scopes repeat.
    """
    if "/" not in name:
        return None
    scope = name[: name.rindex("/") + 1]
    if scope not in cache:
        segments = scope_segments(scope + "_")
        module = None if segments is None else modules.resolve(segments, torchscript=name.startswith("/"))
        cache[scope] = module if module is not None and modules.has_top_level(module) else None
    return cache[scope]


def observe_names(index: ModelIndex, context: Context) -> None:
    """Let the module set see every literal scope in node and tensor names first."""
    seen: set[str] = set()
    for node in index.views:
        for name in (node.name, *node.output):
            if "/" not in name:
                continue
            scope = name[: name.rindex("/") + 1]
            if scope not in seen:
                seen.add(scope)
                segments = scope_segments(scope + "_")
                if segments:
                    context.modules.observe(segments)


def _borrowed(node: NodeView) -> bool:
    """A tool named this node after some tensor (onnxslim's `…/Add_output_0`) that is not its own
    output: that scope belongs to whoever produced the tensor, so the output names decide."""
    return node.name in node.input or (_TENSOR_LIKE.search(node.name) is not None and node.name not in node.output)


def propose(index: ModelIndex, context: Context) -> dict[int, str]:
    found: dict[int, str] = {}
    cache: dict[str, str | None] = {}
    observe_names(index, context)
    for node_id, node in enumerate(index.views):
        if not node.name or _borrowed(node):
            continue
        module = module_of_name(node.name, context.modules, cache)
        if module is not None:
            found[node_id] = module
    return found
