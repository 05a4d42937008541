"""Baselines the accuracy benchmark compares the tagger's inference with (not part of the product).

Each has the signature of `tagger.infer.infer_graph` and is passed to `tagging.tag_model`:
- *root*: nothing inherited, every node without evidence falls back to the root;
- *producer*: one-directional inheritance from the nearest tagged producers (their LCA);
- *two-sided LCA*: the LCA of the nearest tagged producers and consumers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx

from tagger.infer import GraphFacts, Inferred, infer_graph
from tagger.model.index import NodeView
from tagger.model.paths import lca
from tagger.pipeline.tagging import Infer, tag_model
from tagger.writing.write import write_tags

__all__ = ["BASELINES", "tag_with"]


def _flows(nodes: Sequence[NodeView], labels: list[str | None], backwards: bool) -> list[str | None]:
    """The LCA of the nearest tagged producers (or consumers), through untagged chains."""
    producer: dict[str, int] = {}
    edges: list[list[int]] = [[] for _ in nodes]
    for i, node in enumerate(nodes):
        for name in node.input:
            j = producer.get(name)
            if j is not None:
                (edges[j] if backwards else edges[i]).append(i if backwards else j)
        for name in node.output:
            if name:
                producer[name] = i
    flows: list[str | None] = [None] * len(nodes)
    order = range(len(nodes) - 1, -1, -1) if backwards else range(len(nodes))
    for i in order:
        flow = None
        for k in edges[i]:
            flow = lca(flow, labels[k] if labels[k] is not None else flows[k])
        flows[i] = flow
    return flows


def _filled(labels: list[str | None], guesses: list[str | None]) -> Inferred:
    modules = [label if label is not None else guess for label, guess in zip(labels, guesses, strict=True)]
    return Inferred(modules, [None] * len(labels), [True] * len(labels))


def root(nodes: Sequence[NodeView], labels: list[str | None], facts: GraphFacts) -> Inferred:
    return _filled(labels, [None] * len(labels))


def producer(nodes: Sequence[NodeView], labels: list[str | None], facts: GraphFacts) -> Inferred:
    if all(label is None for label in labels):
        return root(nodes, labels, facts)
    return _filled(labels, _flows(nodes, labels, backwards=False))


def two_sided_lca(nodes: Sequence[NodeView], labels: list[str | None], facts: GraphFacts) -> Inferred:
    if all(label is None for label in labels):
        return root(nodes, labels, facts)
    ups, downs = _flows(nodes, labels, backwards=False), _flows(nodes, labels, backwards=True)
    return _filled(labels, [lca(up, down) for up, down in zip(ups, downs, strict=True)])


BASELINES: dict[str, Infer] = {
    "tagger": infer_graph,
    "root baseline": root,
    "producer baseline": producer,
    "two-sided LCA": two_sided_lca,
}


def tag_with(model: onnx.ModelProto, infer: Infer, base_dir: Path | None = None) -> None:
    """Tag `model` in place with inference `infer` (the tagger's own, or a baseline); `base_dir`:
    the directory of its file (external data)."""
    result = tag_model(model, infer, base_dir=base_dir)
    write_tags(result.index.nodes, result.index.views, result.assignments)
