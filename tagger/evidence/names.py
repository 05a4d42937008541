"""Scoped node names: TorchScript `/encoder/layer.0/attention/self/MatMul`, the names tools
derive from them (`…/Add_output_0`, `…/MatMul_quant`, `…_QuantizeLinear`) and `a/b/c` scopes
of other converters. Everything before the last `/` is the scope.
"""

from __future__ import annotations

from collections.abc import Iterator

from tagger.evidence import Context, Evidence
from tagger.index import ModelIndex
from tagger.paths import ModuleSet, scope_segments

__all__ = ["propose", "module_of_name"]


def module_of_name(name: str, modules: ModuleSet, cache: dict[str, str | None]) -> str | None:
    """The module path a scoped name points at, or None for unscoped names."""
    if name not in cache:
        segments = scope_segments(name)
        cache[name] = None if segments is None else modules.resolve(segments)
    return cache[name]


def propose(index: ModelIndex, context: Context) -> Iterator[Evidence]:
    cache: dict[str, str | None] = {}
    for node_id, node in enumerate(index.nodes):
        if not node.name or node.name in node.input:
            continue  # a tool named this node after its input tensor: that scope is the producer's
        module = module_of_name(node.name, context.modules, cache)
        if module is not None:
            yield Evidence(node_id, module, "name")
