"""Parameter names a node consumes: `encoder.layer.0.attention.self.query.weight` names module
`encoder.layer.0.attention.self.query`.

Only names that look like parameter paths count (dotted identifiers); exporter temporaries such
as `val_17` or `onnx::MatMul_352` carry no module. Tool-derived names (`…weight_quantized`,
`…weight_scale`) still end in one attribute, so they resolve the same way. When a node consumes
parameters of several modules, their lowest common ancestor is proposed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from tagger.evidence import Context, Evidence
from tagger.index import ModelIndex
from tagger.paths import lca

__all__ = ["propose", "module_of_parameter"]

_PARAMETER = re.compile(r"^[A-Za-z_][\w]*(\.[\w]+)+$")


def module_of_parameter(name: str) -> str | None:
    """The module owning a parameter or buffer named by its dotted path, else None."""
    if not _PARAMETER.match(name):
        return None
    return name.rpartition(".")[0]


def propose(index: ModelIndex, context: Context) -> Iterator[Evidence]:
    owners: dict[str, str | None] = {}
    for scope in index.graphs:
        for name in scope.initializers:
            owner = module_of_parameter(name)
            owners[name] = owner
            if owner is not None:
                context.modules.add(owner)
    if not any(owners.values()):
        return
    for node_id, node in enumerate(index.nodes):
        module: str | None = None
        for name in node.input:
            owner = owners.get(name)
            if owner is not None:
                module = lca(module, owner)
        if module is not None:
            yield Evidence(node_id, module, "initializer")
