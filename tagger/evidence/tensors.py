"""Scoped output tensor names (`/encoder/…/Mul_output_0`): they outlive node names, since
onnxslim renames nodes after their outputs and keeps tensor names. A tensor's scope is read by
the same rules as a node name's (`names.module_of_scope`: a scope ends at an op name, and only a
`/`-rooted scope may name a top-level module no parameter shows).
"""

from __future__ import annotations

from tagger.evidence import Context
from tagger.evidence.names import module_of_scope
from tagger.model.index import ModelIndex

SOURCE = "tensor"
__all__ = ["SOURCE", "propose"]


def propose(index: ModelIndex, context: Context) -> dict[int, str]:
    """The module of a node's first output with a resolvable scope. Runs after the name source
    (which let the module set observe every scope), sharing its scope cache."""
    found: dict[int, str] = {}
    cache = context.scope_modules
    views = index.views
    for node_id in [i for i, view in enumerate(views) if "/" in "".join(view.output)]:  # a comprehension: most have none
        for output in views[node_id].output:
            end = output.rfind("/")
            if end < 0:
                continue
            scope = output[: end + 1]
            module = cache[scope] if scope in cache else module_of_scope(scope, context)
            if module is not None:
                found[node_id] = module
                break
    return found
