"""Control-flow bodies as sources of their own: a module that lives in an If branch is cut from it.

optimum's merged decoders hold every node in the two branches of one `If`; a Loop or Scan body
can hold a whole layer. A body is made a standalone model, then extracted like any model:

1. **The body model.** The body's nodes, initializers, value_info and outputs, verbatim; its
   formal inputs (a Loop's iteration count and carried values) stay inputs. Every name it reads
   from enclosing graphs (outer-scope references, nested bodies' included) is resolved in the
   enclosing source: an initializer there is copied in (an external entry stays external, same
   data file), any other value becomes a graph input typed from the enclosing graph. A body is
   complete this way because the ONNX spec lets a body read only its own inputs, its own values
   and names visible in enclosing scopes.
2. **Where a module lives.** A module is cut from the main graph when main-graph nodes belong to
   it (an `If` tagged with it takes both branches along); otherwise from the bodies whose nodes
   do, depth first, looking into the bodies of nodes outside it only. A module living in several
   bodies (both branches of optimum's `If`: the with-past and the no-past decoder) is two
   different computations, so one `--module` writes one of them, named by `branch`; `extract_all`
   writes each, the branch in the file name and in `index.json`.
3. **Values for verification.** onnxruntime cannot output a value computed inside a body. The
   enclosing model runs once with the body's inputs exposed (an `If` whose condition is a graph
   input is fed the value that takes the branch), and the body model runs on those values: a
   body computes the same values standalone, because it reads nothing but them. Loop and Scan
   bodies take different inputs on every iteration: their cuts are written, not verified.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import onnx

from tagger.commands.extract.source import Source, make_source, outer_refs
from tagger.model.index import may_own_bodies

__all__ = ["Body", "body_sources", "branch_matches", "branch_value", "scope_label"]

_BRANCH_VALUES = {"then_branch": True, "else_branch": False}


@dataclass(frozen=True, eq=False)
class Body:
    """Where a body source lives: the node owning it in the enclosing source and its attribute."""

    outer: Source
    owner: int
    attribute: str

    @property
    def node(self) -> onnx.NodeProto:
        return self.outer.nodes[self.owner]

    @property
    def label(self) -> str:
        """`If 'optimum::if'/then_branch`, prefixed by the enclosing body's label when nested."""
        own = f"{self.node.op_type} {self.node.name or f'#{self.owner}'!r}/{self.attribute}"
        return f"{self.outer.body.label} / {own}" if self.outer.body is not None else own

    @property
    def short(self) -> str:
        """`then_branch`, or `body.then_branch` when nested: the file-name part."""
        return f"{self.outer.body.short}.{self.attribute}" if self.outer.body is not None else self.attribute


def scope_label(src: Source) -> str:
    return src.body.label if src.body is not None else "the main graph"


def body_sources(src: Source, owners: Iterable[int] | None = None) -> list[Source]:
    """The bodies of `src`'s nodes (of `owners` only, when given), one level deep, each built once."""
    found: list[Source] = []
    for i in range(len(src.nodes)) if owners is None else sorted(owners):
        node = src.nodes[i]
        if not may_own_bodies(node.op_type, node.domain):
            continue
        if i not in src.children:
            graphs = [a for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
            src.children[i] = [_body_source(src, i, attribute) for attribute in graphs]
        found.extend(src.children[i])
    return found


def _body_source(outer: Source, owner: int, attribute: onnx.AttributeProto) -> Source:
    body = Body(outer, owner, attribute.name)
    return make_source(_body_model(outer, attribute.g), outer.path, outer.locations, outer.retagged, body)


def _body_model(outer: Source, graph: onnx.GraphProto) -> onnx.ModelProto:
    """`graph` as a model: its outer-scope references resolved in `outer` (rule 1)."""
    source = outer.model
    model = onnx.ModelProto(
        ir_version=source.ir_version,
        producer_name=source.producer_name,
        producer_version=source.producer_version,
        domain=source.domain,
        model_version=source.model_version,
        doc_string=source.doc_string,
    )
    model.opset_import.extend(source.opset_import)
    model.functions.extend(source.functions)
    model.metadata_props.extend(source.metadata_props)
    body = model.graph
    body.name, body.doc_string = graph.name, graph.doc_string
    body.node.extend(graph.node)
    body.input.extend(graph.input)
    body.output.extend(graph.output)
    body.value_info.extend(graph.value_info)
    body.initializer.extend(graph.initializer)
    body.sparse_initializer.extend(graph.sparse_initializer)
    refs = outer_refs(graph)
    outer.types.resolve(name for name in refs if name not in outer.initializer_at and name not in outer.sparse_at)
    for name in refs:
        if name in outer.initializer_at:
            body.initializer.append(source.graph.initializer[outer.initializer_at[name]])
        elif name in outer.sparse_at:
            body.sparse_initializer.append(source.graph.sparse_initializer[outer.sparse_at[name]])
        else:
            value = body.input.add(name=name)
            if (tp := outer.types.get(name)) is not None:
                value.type.CopyFrom(tp)
    return model


def branch_value(body: Body) -> bool | None:
    """The condition that makes an `If` run this branch; None for any other body."""
    node = body.node
    return _BRANCH_VALUES.get(body.attribute) if node.op_type == "If" and node.domain in ("", "ai.onnx") else None


def branch_matches(body: Body, branch: str) -> bool:
    """Whether `--branch` names this body: its label, `owner/attribute`, the attribute, or
    `then`/`else` for an If's branches."""
    names = {body.label, body.short, body.attribute, f"{body.node.name}/{body.attribute}"}
    if body.attribute.endswith("_branch"):
        names.add(body.attribute.removesuffix("_branch"))
    return branch in names
