"""The `namespace` node entry that Model Explorer nests nodes by, written from the tag.

Model Explorer's ONNX adapter (`model-explorer-onnx`, `get_node_namespace`) reads a node's
`metadata_props["namespace"]`, splits it on `/` and drops empty parts; each part is one
collapsible layer (it falls back to the `/`-prefix of the node name, which most post-processed
models no longer have). `hierarchy.tag` is already such a path, one segment per module, so the
namespace is the tag without its leading `/`: `/BertModel/BertEncoder/BertLayer.0` becomes
`BertModel/BertEncoder/BertLayer.0`; the root module of a model without class names (`/`)
becomes `""`, which the adapter shows at the top level.

`write_namespaces` guarantees:
1. a node without a `namespace` entry gets one, appended after its other entries;
2. a `namespace` written by an earlier `--namespace` retag (it equals the namespace of the node's
   current `hierarchy.tag`) follows the new tag;
3. any other `namespace` (the dynamo exporter writes its own, `: Wrapper/m: BertModel/…`) is
   left untouched, so removing `namespace` entries the tagger added plus the three tag keys gives
   the input back byte for byte, and a second retag changes nothing.

It must run before `write_tags`, which overwrites the `hierarchy.tag` that point 2 reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx

from tagger.model.keys import TAG_KEY
from tagger.pipeline.tagging import Assignment

__all__ = ["NAMESPACE_KEY", "namespace_of", "write_namespaces"]

NAMESPACE_KEY = "namespace"


def namespace_of(tag: str) -> str:
    """`/BertModel/BertEncoder` -> `BertModel/BertEncoder`; `/` -> `""`."""
    return tag.strip("/")


def write_namespaces(nodes: Sequence[onnx.NodeProto], assignments: Sequence[Assignment]) -> int:
    """Write each node's namespace from its new tag where the node has none of its own; returns
    how many nodes changed."""
    changed = 0
    for node, assignment in zip(nodes, assignments, strict=True):
        wanted = namespace_of(assignment.tag)
        existing = None
        previous_tag = None
        for prop in node.metadata_props:
            if prop.key == NAMESPACE_KEY and existing is None:
                existing = prop
            elif prop.key == TAG_KEY and previous_tag is None:
                previous_tag = prop.value
        if existing is None:
            node.metadata_props.add(key=NAMESPACE_KEY, value=wanted)
            changed += 1
        elif previous_tag is not None and existing.value == namespace_of(previous_tag) and existing.value != wanted:
            existing.value = wanted
            changed += 1
    return changed
