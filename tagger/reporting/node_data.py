"""Model Explorer node data: one value per node of an ONNX model, for the viewer to colour the graph by.

Model Explorer (`ai-edge-model-explorer`, loaded with `--node_data_paths FILE`, or in its UI) reads
a JSON file in the shape of its `node_data_builder.ModelNodeData`:

    {graph id: {"name": label, "results": {node id: {"value": number or string}}, "gradient": [...]}}

Its web app's loader (`getNodeDataProviderData`) takes the file keyed by graph id, or a bare
`{"results": ...}` applied to the graph on screen; this module always writes graph ids. A result
is keyed by a node id (an output tensor name works only with adapters that set `tensor_name`
metadata, which the ONNX adapter does not). Numeric values are coloured by `gradient` (stops from
the least value, 0, to the greatest, 1); a layer (group node) shows what its op nodes hold: the
viewer sums, averages and counts them itself (aggregated and children stats), it reads no value
for a group. So `modules` are written beside `results` under `"modules"` ({module path: value}),
which the viewer ignores and scripts read; a caller whose per-module values are sums of its node
values gets the same totals in the viewer's layer view when the file's `namespace` entries are
its modules (`tagger retag --namespace`).

Node and graph ids are those the ONNX adapter (`model-explorer-onnx` 0.4) gives (`explorer_ids`):

1. the main graph's id is its name, as the file has it (an empty name is the id `""`); a node's
   id is its name;
2. the nodes of an If's branches are drawn in the graph holding the If, as
   `<If name>/<attribute>/<name>` (the adapter embeds If bodies);
3. a Loop or Scan body of a main-graph node is a graph of its own, `<node name>/<attribute>`;
   a model-local function is the graph `[function]<domain>::<name>` (`::<overload>` when set);
4. a node without a name, or whose name another node of its graph has, is renamed by the adapter
   (onnx-ir's `NameFixPass`); it and the nodes of deeper bodies get no id here (`None`): their
   values are left out, never written under a guessed id.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tagger.model.index import ModelIndex
from tagger.model.modelio import save_text

__all__ = ["HEAT", "ExplorerId", "explorer_ids", "merge", "node_data", "write_node_data"]

HEAT = ({"stop": 0, "bgColor": "#ffffff"}, {"stop": 0.5, "bgColor": "#fdae61"}, {"stop": 1, "bgColor": "#d7191c"})
"""White for the least value, orange midway, red for the greatest."""

Value = float | int | str


@dataclass(frozen=True)
class ExplorerId:
    """Where Model Explorer's ONNX adapter draws a node: its graph's id and the node's id."""

    graph: str
    node: str


def node_data(
    values: Mapping[str, Value],
    graph_id: str,
    modules: Mapping[str, Value] | None = None,
    label: str | None = None,
    gradient: tuple[dict, ...] | None = HEAT,
) -> dict:
    """The node data of one graph: `values` by node id, `modules` by module path (ignored by the
    viewer, see the module docstring), `label` the name the viewer lists it under, `gradient` its
    colours for numeric values (None: the viewer's default, no colour)."""
    entry: dict = {}
    if label:
        entry["name"] = label
    entry["results"] = {node: {"value": _checked(node, value)} for node, value in values.items()}
    if gradient:
        entry["gradient"] = [dict(stop) for stop in gradient]
    if modules:
        entry["modules"] = {module: _checked(module, value) for module, value in modules.items()}
    return {graph_id: entry}


def merge(*documents: dict) -> dict:
    """Several graphs' node data as one file (a graph given twice is an error)."""
    merged: dict = {}
    for document in documents:
        for graph_id, entry in document.items():
            if graph_id in merged:
                raise ValueError(f"node data for graph {graph_id!r} given twice")
            merged[graph_id] = entry
    return merged


def write_node_data(document: dict, path: str | Path) -> None:
    import json

    save_text(json.dumps(document, ensure_ascii=False, allow_nan=False), Path(path))


def explorer_ids(index: ModelIndex) -> list[ExplorerId | None]:
    """Each indexed node's id in Model Explorer's ONNX adapter, or None where no id is predicted
    (rules 1-4 of the module docstring)."""
    main = index.model.graph.name
    graph_ids: dict[int, str] = {}
    prefixes: dict[int, str] = {}
    owner_names = Counter(index.views[i].name for i in index.graphs[0].node_ids)
    for graph_id, scope in enumerate(index.graphs):
        if scope.kind == "main":
            graph_ids[graph_id], prefixes[graph_id] = main, ""
        elif scope.kind == "function" and scope.function_key is not None:
            domain, name, overload = scope.function_key
            graph_ids[graph_id], prefixes[graph_id] = f"[function]{domain}::{name}" + (f"::{overload}" if overload else ""), ""
        elif scope.kind == "subgraph" and scope.owner is not None and index.graph_of[scope.owner] == 0:
            owner = index.views[scope.owner]
            if not owner.name or owner_names[owner.name] > 1 or "[" in scope.attribute:
                continue
            if owner.op_type == "If" and owner.domain in ("", "ai.onnx"):
                graph_ids[graph_id], prefixes[graph_id] = main, f"{owner.name}/{scope.attribute}/"
            else:
                graph_ids[graph_id], prefixes[graph_id] = f"{owner.name}/{scope.attribute}", ""
    counts = Counter((index.graph_of[i], view.name) for i, view in enumerate(index.views))
    ids: list[ExplorerId | None] = []
    for node_id, view in enumerate(index.views):
        graph_id = index.graph_of[node_id]
        if graph_id not in graph_ids or not view.name or counts[graph_id, view.name] > 1:
            ids.append(None)
        else:
            ids.append(ExplorerId(graph_ids[graph_id], prefixes[graph_id] + view.name))
    return ids


def _checked(key: str, value: Value) -> Value:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"node data for {key!r} must be a number or a string, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"node data for {key!r} is {value}: JSON has no such number")
    return value
