"""Building an extracted model from the source's own protos, and writing it checked."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx

from tagger.commands.extract.cut import Cut
from tagger.commands.extract.source import Source
from tagger.errors import InputError, MissingDependency, OutputError, TaggerError
from tagger.model.index import subgraphs
from tagger.model.modelio import save_model

__all__ = ["build_model", "refuse_source_files", "write_checked"]


def build_model(src: Source, cut: Cut) -> tuple[onnx.ModelProto, list[int]]:
    """The extracted model and the source positions of the nodes it kept, in order."""
    import onnx_graphsurgeon as gs
    from onnx_graphsurgeon.logger import G_LOGGER

    candidates = sorted(set(cut.selected) | set(cut.pulled))
    declarations = _declarations(src, cut)  # before graphsurgeon: an untyped boundary is an error
    with G_LOGGER.suppress(G_LOGGER.CRITICAL):
        graph = gs.import_onnx(_lean_copy(src, candidates))
        position = {id(node): candidates[k] for k, node in enumerate(graph.nodes)}
        tensors = graph.tensors()
        graph.outputs = [tensors[name] for name in cut.outputs]  # cleanup keeps what they need
        graph.cleanup(recurse_subgraphs=False, recurse_functions=False)
        kept = [position[id(node)] for node in graph.nodes]
    model = onnx.ModelProto()  # everything in it comes from the source: no graphsurgeon export needed
    _fill_from_source(model, src, cut, kept, declarations)
    return model, kept


@dataclass
class _Declarations:
    """The extracted graph's typed inputs and outputs."""

    inputs: list[onnx.ValueInfoProto]
    outputs: list[onnx.ValueInfoProto]


def _declarations(src: Source, cut: Cut) -> _Declarations:
    src.types.resolve([*cut.inputs, *cut.outputs])
    return _Declarations(
        inputs=[_value_info(src, name, cut.label) for name in cut.inputs],
        outputs=[_value_info(src, name, cut.label) for name in cut.outputs],
    )


def _inner_value_info(src: Source, cut: Cut, kept: list[int]) -> list[onnx.ValueInfoProto]:
    """The source's value_info of the tensors the kept nodes compute inside the cut, in source order."""
    boundary = set(cut.inputs) | set(cut.outputs)
    produced = {name for i in kept for name in src.nodes[i].output if name not in boundary}
    return [src.model.graph.value_info[i] for i in sorted(src.value_info_at[n] for n in produced if n in src.value_info_at)]


def _lean_copy(src: Source, candidates: list[int]) -> onnx.ModelProto:
    """What graphsurgeon's `cleanup` needs to decide the nodes: the candidates, nothing else.

    No initializers (graphsurgeon would turn each into a numpy array, a copy of every weight of
    the layer, only for `cleanup` to ignore it) and no types (it would build an object for each);
    the extracted model takes both from the source (`_fill_from_source`)."""
    source = src.model
    lean = onnx.ModelProto(ir_version=source.ir_version)
    lean.opset_import.extend(source.opset_import)
    lean.graph.node.extend(src.nodes[i] for i in candidates)
    return lean


def _copy_initializers(graph: onnx.GraphProto, src: Source, nodes: list[int]) -> None:
    """The initializers `nodes` read (bodies included), in source order, external entries as they are."""
    needed = {name for i in nodes for name in src.flow.reads[i]}
    dense = sorted(src.initializer_at[name] for name in needed if name in src.initializer_at)
    sparse = sorted(src.sparse_at[name] for name in needed if name in src.sparse_at)
    graph.initializer.extend(src.model.graph.initializer[i] for i in dense)
    graph.sparse_initializer.extend(src.model.graph.sparse_initializer[i] for i in sparse)


def _value_info(src: Source, name: str, context: str) -> onnx.ValueInfoProto:
    """A boundary tensor's declaration; an unknown element type is an error, never a guess."""
    tp = src.types.get(name)
    if tp is None:
        raise InputError(
            f"cannot type boundary tensor {name!r} of {context}: the model declares no element type for it "
            "and shape inference finds none"
        )
    info = onnx.ValueInfoProto(name=name)
    info.type.CopyFrom(tp)
    return info


def _fill_from_source(model: onnx.ModelProto, src: Source, cut: Cut, kept: list[int], declarations: _Declarations) -> None:
    """Fill the extracted model from the source: the kept nodes and what they need, exactly as
    they are there, and the boundary declarations."""
    source = src.model
    graph = model.graph
    graph.node.extend(src.nodes[i] for i in kept)
    graph.input.extend(declarations.inputs)
    graph.output.extend(declarations.outputs)
    graph.value_info.extend(_inner_value_info(src, cut, kept))
    _copy_initializers(graph, src, kept)  # those the kept nodes and their bodies read, in source order
    graph.name = source.graph.name
    graph.doc_string = source.graph.doc_string
    model.ir_version = source.ir_version
    model.producer_name = source.producer_name
    model.producer_version = source.producer_version
    model.domain = source.domain
    model.model_version = source.model_version
    model.doc_string = source.doc_string
    model.metadata_props.extend(source.metadata_props)
    model.functions.extend(_called_functions(source, graph.node))
    model.opset_import.extend(_opset_imports(source, model))


def _all_nodes(nodes) -> Iterator[onnx.NodeProto]:
    for node in nodes:
        yield node
        for body in subgraphs(node):
            yield from _all_nodes(body.node)


def _called_functions(source: onnx.ModelProto, nodes) -> list[onnx.FunctionProto]:
    """The model-local functions the nodes call, directly or through other functions."""
    by_key = {(f.domain, f.name, getattr(f, "overload", "")): f for f in source.functions}
    used: set[tuple[str, str, str]] = set()
    stack = list(nodes)
    while stack:
        for node in _all_nodes([stack.pop()]):
            key = (node.domain, node.op_type, getattr(node, "overload", ""))
            if key in by_key and key not in used:
                used.add(key)
                stack.extend(by_key[key].node)
    return [f for f in source.functions if (f.domain, f.name, getattr(f, "overload", "")) in used]


def _opset_imports(source: onnx.ModelProto, model: onnx.ModelProto) -> list[onnx.OperatorSetIdProto]:
    """The source's imports, plus version 1 of any domain a node uses without one.

    Some tools (onnxruntime's transformer optimizer) emit `com.microsoft` ops without importing
    the domain; onnxruntime runs them but the checker refuses the model.
    """
    imports = list(source.opset_import)
    declared = {entry.domain for entry in imports} | {"ai.onnx"}
    local = {f.domain for f in model.functions}
    nodes = list(_all_nodes(model.graph.node))
    for function in model.functions:
        nodes.extend(_all_nodes(function.node))
    for domain in dict.fromkeys(node.domain for node in nodes):
        if domain not in declared and domain not in local:
            imports.append(onnx.helper.make_opsetid(domain, 1))
            declared.add(domain)
    return imports


def write_checked(model: onnx.ModelProto, data_source: Path, destination: Path) -> str | None:
    """Save under a temporary name beside `destination`, validate it, then rename (rule 6).

    The ONNX checker (full) decides first. When it refuses the model, onnxruntime decides: a model
    it loads is written, since a user's model that onnxruntime runs must extract (the
    onnxruntime-genai builder's constants fail the checker's shape inference, `rank (1) vs (0)`,
    and onnxruntime's optimizer writes its own ops in the default domain; both run). Returns the
    checker's objection that onnxruntime overruled, or None. Without onnxruntime installed, a
    checker refusal stands unless it comes from runtime ops in the default domain alone."""
    if destination.is_dir():
        raise OutputError(f"output is a directory: {destination}")
    verdict: list[str] = []
    save_model(model, data_source, destination, check=lambda path: verdict.extend(_validate(path)))
    return verdict[0] if verdict else None


def _validate(path: Path) -> list[str]:
    """[] when the full checker accepts the written file; [its objection] when onnxruntime loads
    what the checker refuses; raises `TaggerError` when neither accepts it."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
        return []
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        objection = _first_line(exc)
    from tagger.commands.extract.verify import runtime_refusal

    try:
        refused = runtime_refusal(path)
    except MissingDependency:
        if _passes_with_runtime_ops_aside(path):
            return []
        raise TaggerError(f"the extracted model fails the ONNX checker: {objection}") from None
    if refused is not None:
        raise TaggerError(f"the extracted model fails the ONNX checker: {objection}; and onnxruntime refuses it: {refused}")
    return [objection]


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


_ASIDE = "tagger.unchecked"
"""The domain a checked copy moves runtime ops to: the checker skips domains it has no schemas for."""


def _passes_with_runtime_ops_aside(path: Path) -> bool:
    """Whether a copy of the written model (structure only, beside it, so that its external data
    resolves) whose default-domain ops that no ONNX schema knows are moved to a domain of their
    own passes the full checker. onnxruntime's transformer optimizer writes some of its own ops in
    the default domain (`SimplifiedLayerNormalization`); the checker refuses any model holding one."""
    model = onnx.load(str(path), load_external_data=False)
    moved = False
    for node in _all_nodes(model.graph.node):
        if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type):
            node.domain = _ASIDE
            moved = True
    if not moved:
        return False
    model.opset_import.append(onnx.helper.make_opsetid(_ASIDE, 1))
    aside = path.with_name(f"{path.name}.aside")
    try:
        onnx.save(model, str(aside))
        onnx.checker.check_model(str(aside), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError):
        return False
    finally:
        aside.unlink(missing_ok=True)
    return True


def refuse_source_files(src: Source, destination: Path) -> None:
    """Never write over the input model or one of its external data files."""
    protected = [src.path, *(src.path.parent / location for location in src.locations)]
    for path in protected:
        if destination.exists() and path.exists() and os.path.samefile(destination, path):
            raise OutputError(f"output {destination} is the input model or its external data")
