"""Which module each node of a fresh export belongs to, as a TorchScript-style scope prefix.

A scope prefix is what goes before the op name in a node name: module path
`m.encoder.layer.0.attention.self` is scope `/m/encoder/layer.0/attention/self` (dots become `/`,
a numeric component stays attached to its container with `.`), and the root module is `""`.

This module guarantees that:

1. a dynamo node with `pkg.torch.onnx.name_scopes` metadata gets the scope of the item before the
   last (`['', 'linear']`-style lists mean the root) and the last item, the fx node name, as its
   op name; a list not starting at the root (`''`) is torch's placeholder for an empty module
   stack (`['_empty_nn_module_stack_from_metadata_hook', 'sym_size_int_12']` on a dynamic-shape
   export's `sym_size` nodes): the op ran outside every module call, so its scope is the root;
2. a TorchScript node whose name is already scoped (starts with `/`) keeps its name: its scope is
   everything before the last `/`;
3. every other node (exporter-made: optimizer `Split`s, `Identity_44`, `Constant_23`, nameless
   nodes) gets a scope from its neighbours, in this order: the common scope of the consumers of
   its outputs that have one (such nodes prepare an input for the op they were made for), else the
   scope of the first producer of its inputs that has one, else `default` (the owner's scope for
   an If/Loop/Scan body, the root for the main graph). Consumers are visited before producers and
   chains of such nodes resolve through each other.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

import onnx

from tagger import dataflow

__all__ = ["Origin", "graph_origins", "scope_of_path"]

NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
"""The dynamo exporter's per-node scope metadata (torch's key; the tagger reads it too, as evidence)."""


@dataclass(slots=True)
class Origin:
    """Where one node comes from and what to call it."""

    scope: str | None
    """Scope prefix (`/m/encoder`, `""` for the root); None while unknown."""
    op: str
    """Op name for the node's new name: fx node name, op type, or the unscoped old name."""
    keep: bool = False
    """The node is already named in scope (TorchScript): leave its name alone."""


def scope_of_path(path: str) -> str:
    """Module path -> scope prefix: `m.encoder.layer.0.attention` -> `/m/encoder/layer.0/attention`."""
    if not path:
        return ""
    parts: list[str] = []
    for component in path.split("."):
        if parts and component.isascii() and component.isdigit():
            parts[-1] += "." + component  # ModuleList / Sequential index stays on its container
        else:
            parts.append(component)
    return "/" + "/".join(parts)


def graph_origins(graph: onnx.GraphProto, exporter: str, default: str, cache: dict[str, tuple[str, str] | None]) -> list[Origin]:
    """One `Origin` per node of `graph` (not its subgraphs), every scope decided.

    `exporter` is `dynamo` or `torchscript`; `cache` memoises parsed metadata across graphs.
    """
    read = _dynamo_origin if exporter == "dynamo" else _torchscript_origin
    origins = [read(node, cache) for node in graph.node]
    _fill_from_neighbours(graph, origins, default)
    return origins


def _dynamo_origin(node: onnx.NodeProto, cache: dict[str, tuple[str, str] | None]) -> Origin:
    for prop in node.metadata_props:
        if prop.key == NAME_SCOPES_KEY:
            parsed = _parse_name_scopes(prop.value, cache)
            if parsed is not None:
                scope, fx_name = parsed
                return Origin(scope, fx_name or node.op_type)
            break
    return Origin(None, node.op_type)


def _parse_name_scopes(text: str, cache: dict[str, tuple[str, str] | None]) -> tuple[str, str] | None:
    """`"['', 'm', 'm.encoder', 'view_1']"` -> (`/m/encoder`, `view_1`); None when unreadable."""
    if text not in cache:
        try:
            items = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            items = None
        if isinstance(items, list) and items and all(isinstance(item, str) for item in items):
            path = items[-2] if len(items) >= 2 and items[0] == "" else ""
            cache[text] = (scope_of_path(path), items[-1])
        else:
            cache[text] = None
    return cache[text]


def _torchscript_origin(node: onnx.NodeProto, cache: dict[str, tuple[str, str] | None]) -> Origin:
    if node.name.startswith("/"):
        return Origin(node.name.rpartition("/")[0], node.name.rpartition("/")[2], keep=True)
    return Origin(None, node.name or node.op_type)


def _fill_from_neighbours(graph: onnx.GraphProto, origins: list[Origin], default: str) -> None:
    if all(origin.scope is not None for origin in origins):
        return
    producer, consumers = dataflow(graph.node)
    for i in reversed(range(len(origins))):
        if origins[i].scope is None:
            known = [origins[c].scope for name in graph.node[i].output for c in consumers.get(name, ())]
            known = [scope for scope in known if scope is not None]
            if known:
                origins[i].scope = _common_scope(known)
    for i, node in enumerate(graph.node):
        if origins[i].scope is None:
            for name in node.input:
                p = producer.get(name)
                if p is not None and origins[p].scope is not None:
                    origins[i].scope = origins[p].scope
                    break
            else:
                origins[i].scope = default


def _common_scope(scopes: list[str | None]) -> str:
    """Longest common run of `/` segments: `/a/b/c` and `/a/b/d` -> `/a/b`."""
    first = (scopes[0] or "").split("/")
    common = len(first)
    for scope in scopes[1:]:
        other = (scope or "").split("/")
        common = min(common, len(other))
        for k in range(common):
            if first[k] != other[k]:
                common = k
                break
    return "/".join(first[:common])
