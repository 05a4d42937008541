"""Truth per node across every graph of a model (bodies of `If`/`Loop`/`Scan` included).

A node is keyed by its graph's key (the attribute names leading to it: `()`, `("then_branch",)`)
and its position there. Truth is what the export records (dynamo `name_scopes`, or TorchScript and
optimum scoped names resolved against the module tree with `bench.cases`' quirk rules), carried to
a tool's output graph by graph, by node name or output tensor name. `bench.cases` does the same
for main graphs only; optimum's merged decoder keeps every node in the branches of one `If`.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx

from bench import cases, metrics

__all__ = ["MATMUL_OPS", "GraphKey", "NodeKey", "carry", "head_node", "nodes_of", "tags_of", "truth_of", "walk"]

MATMUL_OPS = frozenset(
    {"MatMul", "Gemm", "MatMulInteger", "QLinearMatMul", "FusedMatMul", "MatMulNBits", "DynamicQuantizeMatMul",
     "MatMulIntegerToFloat", "QGemm"}
)  # fmt: skip
"""Ops that can carry the output head's projection, before and after fusion or quantization."""

GraphKey = tuple[str, ...]
NodeKey = tuple[GraphKey, int]


def walk(graph: onnx.GraphProto, key: GraphKey = ()) -> Iterator[tuple[GraphKey, onnx.GraphProto]]:
    """Every graph with its key: the attribute names leading to it (`()`, `("then_branch",)`, …)."""
    yield key, graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from walk(attr.g, (*key, attr.name))
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for k, g in enumerate(attr.graphs):
                    yield from walk(g, (*key, f"{attr.name}[{k}]"))


def nodes_of(model: onnx.ModelProto) -> Iterator[tuple[NodeKey, onnx.NodeProto]]:
    for key, graph in walk(model.graph):
        for i, node in enumerate(graph.node):
            yield (key, i), node


def truth_of(model: onnx.ModelProto, modules: frozenset[str], kind: str) -> dict[NodeKey, str]:
    """True module of every node whose origin the export records: `metadata` (dynamo `name_scopes`)
    or `names` (TorchScript scoped node names resolved against the module tree, quirks undone)."""
    resolver = cases._ScopeResolver(set(modules))
    truth: dict[NodeKey, str] = {}
    for key, node in nodes_of(model):
        module = cases._dynamo_module(node) if kind == "metadata" else resolver.resolve(node.name)
        if module is not None and module in modules:
            truth[key] = module
    return truth


def carry(original: onnx.ModelProto, truth: dict[NodeKey, str], result: onnx.ModelProto) -> dict[NodeKey, str]:
    """Truth for a tool's output: the node of the same graph with the same name, else the one that
    produced the same output tensor; nodes a tool made match neither and get none."""
    by_name: dict[tuple[GraphKey, str], NodeKey] = {}
    by_output: dict[tuple[GraphKey, str], NodeKey] = {}
    for key, node in nodes_of(original):
        if node.name:
            by_name.setdefault((key[0], node.name), key)
        for out in node.output:
            if out:
                by_output.setdefault((key[0], out), key)
    carried: dict[NodeKey, str] = {}
    for key, node in nodes_of(result):
        src = by_name.get((key[0], node.name)) if node.name else None
        if src is None or src not in truth:
            src = next((by_output[(key[0], o)] for o in node.output if (key[0], o) in by_output), None)
        if src is not None and src in truth:
            carried[key] = truth[src]
    return carried


def tags_of(model: onnx.ModelProto) -> dict[NodeKey, str | None]:
    return {key: next((p.value for p in node.metadata_props if p.key == metrics.MODULE_KEY), None) for key, node in nodes_of(model)}


def head_node(model: onnx.ModelProto, output: str) -> NodeKey | None:
    """The MatMul/Gemm nearest to graph output `output` (the first output when absent), walking
    producers backwards; an `If` is followed into its then-branch."""
    names = [o.name for o in model.graph.output]
    if not names:
        return None
    graph_key, graph = (), model.graph
    frontier = [output if output in names else names[0]]
    seen: set[str] = set()
    while frontier:
        producers = {out: i for i, node in enumerate(graph.node) for out in node.output}
        nxt: list[str] = []
        for tensor in frontier:
            if tensor in seen or tensor not in producers:
                continue
            seen.add(tensor)
            i = producers[tensor]
            node = graph.node[i]
            if node.op_type in MATMUL_OPS:
                return graph_key, i
            if node.op_type == "If" and node.attribute:
                branch = next(a for a in node.attribute if a.name == "then_branch")
                index = list(node.output).index(tensor)
                graph_key, graph = (*graph_key, "then_branch"), branch.g
                nxt, seen = [graph.output[index].name], set()
                break
            nxt.extend(node.input)
        frontier = nxt
    return None
