"""The graphs of an export and how their nodes connect, on the ONNX protos: what renaming walks.

The shim's own (it uses only `tagger`'s public API): every graph-valued attribute is a body,
depth first, and a graph's dataflow is read by node position.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import onnx

__all__ = ["bodies", "dataflow", "graphs_within"]


def bodies(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """The graphs `node` owns: If branches, Loop/Scan bodies, any graph-valued attribute."""
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.g
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            yield from attribute.graphs


def graphs_within(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """`graph`, then every body nested in it, depth first."""
    yield graph
    for body in (body for node in graph.node for body in bodies(node)):
        yield from graphs_within(body)


def dataflow(nodes: Iterable[onnx.NodeProto]) -> tuple[dict[str, int], dict[str, list[int]]]:
    """By position: the first node writing each tensor, and the nodes reading it."""
    producer: dict[str, int] = {}
    consumers: dict[str, list[int]] = {}
    for position, node in enumerate(nodes):
        producer.update((name, position) for name in node.output if name and name not in producer)
        for name in filter(None, node.input):
            consumers.setdefault(name, []).append(position)
    return producer, consumers
