"""Put the module scope into node and tensor names, TorchScript style, in place.

`scope_names(model, exporter)` ensures that:

1. every node of the main graph and of nested If/Loop/Scan bodies is named
   `<scope>/<op name>` (`/m/encoder/layer.0/attention/self/view_1`, root ops `/view`), where
   scope and op name come from `shim.scopes`; names are unique across the model (`_N` appended;
   the node that produces its fx node's own value gets the bare name, helper nodes of the same
   fx node get `_1`, `_2`, ...). TorchScript names that are already scoped stay as they are;
2. every intermediate tensor (a node output that is not an input, output or initializer of any
   graph) is renamed `<producer's scope>/<old name>`, consistently wherever it is used: node
   inputs and outputs of every graph (bodies can reference outer tensors), `value_info`,
   quantization annotations. For TorchScript only tensors without a scope are renamed.
   Tensor names stay unique (`_N` appended on a clash);
3. nothing else changes: node metadata, attributes, initializers (and their external data
   references), graph inputs and outputs, node order. Model-local functions are left alone
   (their names are local to each call).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from shim.scopes import Origin, graph_origins
from tagger import graphs_within, subgraphs

__all__ = ["RenameResult", "scope_names"]


@dataclass(frozen=True, slots=True)
class RenameResult:
    """What `scope_names` changed."""

    nodes: int
    """Nodes in the main graph and all nested bodies."""
    renamed_nodes: int
    renamed_tensors: int


def scope_names(model: onnx.ModelProto, exporter: str) -> RenameResult:
    """Rename the nodes and intermediate tensors of a fresh `exporter` export in place."""
    if exporter not in ("dynamo", "torchscript"):
        raise ValueError(f"exporter must be 'dynamo' or 'torchscript', got {exporter!r}")
    state = _State(exporter, model.graph)
    state.visit(model.graph, default="")
    for graph in graphs_within(model.graph):
        _apply(graph, state.tensors)
    return RenameResult(state.nodes, state.renamed_nodes, len(state.tensors))


class _State:
    """Names taken so far and the tensor mapping, shared by every graph of one model."""

    def __init__(self, exporter: str, main: onnx.GraphProto) -> None:
        self.exporter = exporter
        self.main = main
        self.cache: dict[str, tuple[str, str] | None] = {}
        self.tensors: dict[str, str] = {}
        self.protected: set[str] = set()
        for graph in graphs_within(main):
            self.protected.update(v.name for v in (*graph.input, *graph.output))
            self.protected.update(t.name for t in graph.initializer)
            self.protected.update(t.values.name for t in graph.sparse_initializer)
        self._taken_tensors: set[str] | None = None
        self._taken_nodes: set[str] | None = None
        self.nodes = self.renamed_nodes = 0

    @property
    def taken_tensors(self) -> set[str]:
        """Every tensor name in use (built on first need: a TorchScript export may need none)."""
        if self._taken_tensors is None:
            taken = set(self.protected)
            for graph in graphs_within(self.main):
                taken.update(v.name for v in graph.value_info)
                for node in graph.node:
                    taken.update(node.input)
                    taken.update(node.output)
            self._taken_tensors = taken
        return self._taken_tensors

    @property
    def taken_nodes(self) -> set[str]:
        """Node names new names must avoid: the TorchScript names that are kept as they are."""
        if self._taken_nodes is None:
            self._taken_nodes = set()
            if self.exporter == "torchscript":
                for graph in graphs_within(self.main):
                    self._taken_nodes.update(node.name for node in graph.node if node.name.startswith("/"))
        return self._taken_nodes

    def visit(self, graph: onnx.GraphProto, default: str) -> None:
        origins = graph_origins(graph, self.exporter, default, self.cache)
        self._name_nodes(graph, origins)
        rename_all = self.exporter == "dynamo"
        for node, origin in zip(graph.node, origins, strict=True):
            for name in node.output:
                if name and (rename_all or not name.startswith("/")) and name not in self.protected and name not in self.tensors:
                    self.tensors[name] = _unique(f"{origin.scope}/{name}", self.taken_tensors)
            for body in subgraphs(node):
                self.visit(body, default=origin.scope or "")

    def _name_nodes(self, graph: onnx.GraphProto, origins: list[Origin]) -> None:
        self.nodes += len(graph.node)
        todo = [i for i, origin in enumerate(origins) if not origin.keep]
        todo.sort(key=lambda i: origins[i].op not in graph.node[i].output)  # stable: owners of the fx value first
        for i in todo:
            node, origin = graph.node[i], origins[i]
            new = _unique(f"{origin.scope}/{origin.op}", self.taken_nodes)
            if node.name != new:
                node.name = new
                self.renamed_nodes += 1


def _unique(name: str, taken: set[str]) -> str:
    candidate, k = name, 0
    while candidate in taken:
        k += 1
        candidate = f"{name}_{k}"
    taken.add(candidate)
    return candidate


def _apply(graph: onnx.GraphProto, mapping: dict[str, str]) -> None:
    if not mapping:
        return
    for node in graph.node:
        _rename_in(node.input, mapping)
        _rename_in(node.output, mapping)
    for info in graph.value_info:
        if info.name in mapping:
            info.name = mapping[info.name]
    for annotation in graph.quantization_annotation:
        if annotation.tensor_name in mapping:
            annotation.tensor_name = mapping[annotation.tensor_name]


def _rename_in(names, mapping: dict[str, str]) -> None:
    """Rename, in place, the entries of a node's `input` or `output` that `mapping` names."""
    for k, name in enumerate(names):
        if name in mapping:
            names[k] = mapping[name]
