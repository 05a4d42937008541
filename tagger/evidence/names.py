"""Scoped node names: TorchScript `/encoder/layer.0/attention/self/MatMul`, the names tools
derive from them (`…/Add_output_0`, `…/MatMul_quant`, `…_QuantizeLinear`) and `a/b/c` scopes
of other converters. Everything before the last `/` is the scope.
"""

from __future__ import annotations

import re

from tagger.evidence import Context
from tagger.index import ModelIndex
from tagger.paths import ModuleSet, scope_segments

SOURCE = "name"
__all__ = ["SOURCE", "propose", "module_of_scope"]

_TENSOR_LIKE = re.compile(r"_output_\d+$")


def module_of_scope(scope: str, modules: ModuleSet, cache: dict[str, str | None], segments: list[str] | None = None) -> str | None:
    """The module path a scope prefix (`/encoder/layer.0/`) points at, or None.

    Cached by the scope: names are unique, scopes repeat. `segments`: the scope's
    `scope_segments`, when the caller has them already.
    """
    if scope in cache:
        return cache[scope]
    if segments is None:
        segments = scope_segments(scope + "_")
    module = None if segments is None else modules.resolve(segments, torchscript=scope.startswith("/"))
    cache[scope] = module = module if module is not None and modules.has_top_level(module) else None
    return module


def _borrowed(name: str, outputs: tuple[str, ...]) -> bool:
    """A tool named this node after some tensor (onnxslim's `…/Add_output_0`) that is not its own
    output: that scope belongs to whoever produced the tensor, so the output names decide.
    (A name equal to one of the node's inputs is borrowed too; `propose` tests that first.)"""
    return _TENSOR_LIKE.search(name) is not None and name not in outputs


def propose(index: ModelIndex, context: Context) -> dict[int, str]:
    """Read every scope first (the module set learns `_N` call suffixes from all of them), then
    resolve each node's own name scope."""
    seen: set[str] = set()
    named: list[tuple[int, str]] = []
    for node_id, node in enumerate(index.views):
        for output in node.output:
            if "/" in output:
                seen.add(output[: output.rfind("/") + 1])
        name = node.name
        if "/" in name:
            scope = name[: name.rfind("/") + 1]
            seen.add(scope)
            if name not in node.input and not ("_output_" in name and _borrowed(name, node.output)):
                named.append((node_id, scope))
    segments_of = {scope: scope_segments(scope + "_") for scope in seen}
    for segments in segments_of.values():
        if segments:
            context.modules.observe(segments)
    found: dict[int, str] = {}
    cache, modules = context.scope_modules, context.modules
    for node_id, scope in named:
        module = cache[scope] if scope in cache else module_of_scope(scope, modules, cache, segments_of[scope])
        if module is not None:
            found[node_id] = module
    return found
