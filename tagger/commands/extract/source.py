"""The source model of an extraction, loaded once: structure, tags, dataflow facts, types."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from tagger.api import tag_proto_kinds
from tagger.commands.extract.types import TensorTypes
from tagger.model.index import STANDARD_DOMAINS, graphs_within, may_own_bodies, subgraphs
from tagger.model.keys import read_entries, read_tags, tags_of
from tagger.model.modelio import load_model_and_locations

if TYPE_CHECKING:
    from tagger.commands.extract.body import Body

__all__ = ["Dataflow", "Source", "load_source", "make_source", "outer_refs"]

_RANDOM_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"})


@dataclass
class Dataflow:
    """Who produces and who reads each tensor of the main graph (body reads count for the owner)."""

    reads: list[tuple[str, ...]]
    producer: dict[str, int]
    readers: dict[str, list[int]]
    initializers: set[str]
    graph_inputs: list[str]
    graph_outputs: set[str]
    independent: set[int]


@dataclass
class Source:
    """The full model as loaded once: structure only, tagged, with its dataflow facts.

    Everything a single extraction looks up is indexed here once, so that `extract_all` costs
    one pass over the model plus the size of each module, not the model's size per module.
    """

    path: Path
    model: onnx.ModelProto
    flow: Dataflow
    types: TensorTypes
    retagged: bool
    modules: list[str]
    tags: list[str]
    initializer_at: dict[str, int]
    sparse_at: dict[str, int]
    value_info_at: dict[str, int]
    locations: set[str]
    """External data locations of the full model, as written in it."""
    body: Body | None = None
    """Where this source lives when it is a control-flow body made a model (`tagger.commands.extract.body`)."""
    children: dict[int, list[Source]] = field(default_factory=dict)
    """Node position -> its bodies as sources, built on first use (`tagger.commands.extract.body.body_sources`)."""
    kinds: dict[tuple[tuple[int, str], ...], list[str]] | None = None
    """The root source's nodes by kind per graph, decided on first use (`tagger.commands.extract.choices`)."""
    node_kinds: list[str] | None = None
    """Every node's kind (index order) when this run tagged the model: known, not decided again."""

    @property
    def nodes(self):
        return self.model.graph.node


def load_source(path: str | os.PathLike) -> Source:
    source = Path(path)
    model, locations = load_model_and_locations(source)
    retagged = any(read_tags(node.metadata_props) is None for graph in graphs_within(model.graph) for node in graph.node)
    kinds = tag_proto_kinds(model, source.name) if retagged else None
    found = make_source(model, source, locations, retagged)
    found.node_kinds = kinds
    return found


def make_source(model: onnx.ModelProto, path: Path, locations: set[str], retagged: bool, body: Body | None = None) -> Source:
    """Index a tagged model (the full model, or a body made a model) for extraction."""
    graph = model.graph
    modules, tags = _tags(graph)
    flow = _dataflow(graph)
    initializer_at = {t.name: i for i, t in enumerate(graph.initializer)}
    return Source(
        path=path,
        model=model,
        flow=flow,
        types=TensorTypes(model, flow.producer, flow.reads, initializer_at),
        retagged=retagged,
        modules=[module or "" for module in modules],
        tags=[tag or "" for tag in tags],
        initializer_at=initializer_at,
        sparse_at={t.values.name: i for i, t in enumerate(graph.sparse_initializer)},
        value_info_at={v.name: i for i, v in enumerate(graph.value_info)},
        locations=locations,
        body=body,
    )


def _tags(graph: onnx.GraphProto) -> tuple[list[str | None], list[str | None]]:
    """Each main-graph node's `hierarchy.module` and `hierarchy.tag` (None when missing), read
    by `tagger.model.keys.read_entries` (the last entry of a repeated key counts)."""
    modules: list[str | None] = []
    tags: list[str | None] = []
    shared: dict[str, str] = {}  # one copy of each module path and tag: a module's nodes repeat them (40 MB at 300k nodes)
    for node in graph.node:
        found = tags_of(read_entries(node.metadata_props, shared))
        modules.append(found[0] if found else None)
        tags.append(found[1] if found else None)
    return modules, tags


def _dataflow(graph: onnx.GraphProto) -> Dataflow:
    initializers = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    reads: list[tuple[str, ...]] = []
    producer: dict[str, int] = {}
    readers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        names = tuple(name for name in node.input if name)  # a tuple: a third less than a list, for every node
        if may_own_bodies(node.op_type, node.domain) and (outer := _body_reads(node)):
            names = tuple(dict.fromkeys((*names, *outer)))
        reads.append(names)
        for name in names:
            if name in readers:
                readers[name].append(i)
            else:
                readers[name] = [i]
        for name in node.output:
            producer[name] = i
    producer.pop("", None)
    flow = Dataflow(
        reads=reads,
        producer=producer,
        readers=readers,
        initializers=initializers,
        graph_inputs=[value.name for value in graph.input if value.name not in initializers],
        graph_outputs={value.name for value in graph.output},
        independent=set(),
    )
    flow.independent = _input_independent(graph.node, flow)
    return flow


def _body_reads(node: onnx.NodeProto) -> list[str]:
    """Names the node's bodies read from enclosing graphs (outer-scope references)."""
    names: list[str] = []
    for body in subgraphs(node):
        names.extend(outer_refs(body))
    return names


def outer_refs(graph: onnx.GraphProto) -> list[str]:
    """Names `graph` (a body) and its nested bodies read from enclosing graphs, in first-read order."""
    defined = {value.name for value in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.values.name for t in graph.sparse_initializer}
    refs: list[str] = []
    for node in graph.node:
        refs.extend(name for name in node.input if name and name not in defined)
        refs.extend(name for name in _body_reads(node) if name not in defined)
        defined.update(name for name in node.output if name)
    return list(dict.fromkeys(refs))


def _input_independent(nodes, flow: Dataflow) -> set[int]:
    """Nodes whose every transitive input is an initializer or a constant: same values anywhere."""
    independent: set[int] = set()
    initializers, producer = flow.initializers, flow.producer
    for i, names in enumerate(flow.reads):
        for name in names:
            if name not in initializers and producer.get(name) not in independent:
                break
        else:
            node = nodes[i]
            if node.op_type not in _RANDOM_OPS or node.domain not in STANDARD_DOMAINS:
                independent.add(i)
    return independent
