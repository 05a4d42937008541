"""Scoped output tensor names (`/encoder/…/Mul_output_0`): they outlive node names, since
onnxslim renames nodes after their outputs and keeps tensor names.
"""

from __future__ import annotations

from tagger.evidence import Context
from tagger.evidence.names import module_of_name
from tagger.index import ModelIndex

SOURCE = "tensor"
__all__ = ["SOURCE", "propose"]


def propose(index: ModelIndex, context: Context) -> dict[int, str]:
    found: dict[int, str] = {}
    cache: dict[str, str | None] = {}
    for node_id, node in enumerate(index.views):
        for output in node.output:
            module = module_of_name(output, context.modules, cache) if output else None
            if module is not None:
                found[node_id] = module
                break
    return found
