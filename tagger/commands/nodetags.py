"""The tag of every node of a model: read from the file, or decided in memory when missing.

The commands that look at tags (`diff`, `profile`, `nodes`) accept tagged and untagged models alike:

1. when every node (main graph, control-flow bodies, functions) carries `hierarchy.module`,
   the tags in the file are used as they are;
2. otherwise the model is tagged in memory (`tagger.pipeline.tagging.tag_model`; existing direct tags are
   kept as evidence) and `retagged` says so. The model object is never modified;
3. each node's tag has its kind (direct, certain, chosen, fallback: `tagger.reporting.certainty`); an
   inherited tag read from the file is decided again to know whether it is certain.

Nodes are addressed by position in `tagger.model.index` order, with their graph's label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

from tagger.evidence import ExternalSource
from tagger.model.index import ModelIndex, build_index
from tagger.model.keys import tags_of
from tagger.pipeline.tagging import TaggingResult, tag_model
from tagger.reporting.certainty import file_kinds, result_kinds

__all__ = ["NodeTag", "ModelTags", "model_tags"]


@dataclass(frozen=True, slots=True)
class NodeTag:
    """One node and its tag."""

    graph: str
    position: int
    name: str
    op_type: str
    outputs: tuple[str, ...]
    module: str
    tag: str
    source: str
    kind: str
    """How sure the tag is: `direct`, `certain`, `chosen` or `fallback` (`tagger.reporting.certainty`)."""


@dataclass
class ModelTags:
    """Every node's tag, in index order; `retagged` when the tags were decided in memory."""

    nodes: list[NodeTag]
    retagged: bool
    index: ModelIndex
    result: TaggingResult | None = None
    """The tagging that decided them, when `retagged` (a reference source can reuse it)."""


def model_tags(
    model: onnx.ModelProto,
    sources: Sequence[ExternalSource] = (),
    base_dir: Path | None = None,
    tree: dict[str, str | None] | None = None,
) -> ModelTags:
    """Read the tags of `model`, or decide them in memory if any node has none (with `sources`:
    evidence from outside the file, `tagger.transfer`; `base_dir`: the directory of its file;
    `tree`: the model's true module paths, `tagger.transfer.module_tree`)."""
    index = build_index(model)
    found = [tags_of(view.metadata) for view in index.views]
    retagged = any(entry is None for entry in found)
    result = None
    if retagged:
        result = tag_model(model, extra=sources, base_dir=base_dir, tree=tree)
        index = result.index
        found = [(a.module, a.tag, a.source) for a in result.assignments]
        kinds = result_kinds(result)
    else:
        kinds = file_kinds(model, found, sources, base_dir, tree)  # type: ignore[arg-type] - every entry is set
    labels: dict[int, str] = {}
    positions: list[int] = []
    counters: dict[int, int] = {}
    for graph_id in index.graph_of:
        positions.append(counters.get(graph_id, 0))
        counters[graph_id] = positions[-1] + 1
    nodes = []
    for node_id, (node, entry, kind) in enumerate(zip(index.nodes, found, kinds, strict=True)):
        graph_id = index.graph_of[node_id]
        if graph_id not in labels:
            labels[graph_id] = index.graph_label(graph_id)
        module, tag, source = entry  # type: ignore[misc] - every entry is set once retagged
        nodes.append(
            NodeTag(labels[graph_id], positions[node_id], node.name, node.op_type, tuple(node.output), module, tag, source, kind)
        )
    return ModelTags(nodes, retagged, index, result)
