"""Cut a module out of a model as a valid, runnable ONNX model.

`extract("model.onnx", module="m.encoder.layer.0")` writes a model that computes what that
module computes inside the full model, from the same tensors, under the same names. The rules:

1. **Selection.** The main-graph nodes whose `hierarchy.module` is `module` or lies below it
   (`""` is the whole model), or whose `hierarchy.tag` matches the glob `tag`. A model with an
   untagged node is tagged in memory first (`tagger.api.tag_proto`; existing tags are kept).
   Nodes inside If/Loop/Scan bodies go with the node that owns the body.
2. **Pulled producers** (`pull_producers=True`). A tensor the selection reads from outside is
   computed inside the extracted model, instead of entering it as an input, when its producer
   is *input-independent*: every transitive input is an initializer or the output of a node
   without inputs, and no op on the way is random (`RandomNormal`, `Bernoulli`, ...). Constant,
   ConstantOfShape of a constant, a Shape of an initializer, the Identity of a shared weight:
   such chains compute the same values anywhere, so a copy costs nothing and the module runs
   from its real activations only. A producer that depends on a graph input (a mask computed
   once by the parent, a Shape of the hidden states) stays outside and its value enters as an
   input. Pulled nodes are helpers: their tensors never become outputs.
3. **Boundary.** Inputs are the tensors the extracted nodes read (outer-scope names read inside
   their bodies included) that nothing inside produces and that are not initializers; outputs
   are the tensors the selected nodes produce that a node outside reads or that the full model
   returns. Both keep their names from the full model. Types come from the full model's graph
   inputs, outputs and value_info, else from shape inference of its structure; a tensor whose
   element type stays unknown is an error, never a guessed float.
4. **Carried along.** The initializers the nodes read (external data stays external: the entries
   still point into the same data file, shared beside the input or copied beside the output as
   `retag` does, and never loaded); the opset imports, plus one for any domain a node uses
   without an import; the model-local functions the nodes call; model metadata.
5. **Nodes verbatim.** onnx-graphsurgeon builds the graph (node subset, boundary, `cleanup`)
   from a structure-only copy holding just the candidate nodes, so one layer of a huge model
   costs the layer, and decides which nodes the outputs need. The model is then assembled from
   the source's own protos, matched by identity: a graphsurgeon export would drop node
   `metadata_props` (the tags), `doc_string` and the value types inside bodies, so it is not
   made at all (everything it wrote would be replaced).
6. **Validated.** The model is written beside the output under a temporary name, must pass
   `onnx.checker.check_model(full_check=True)`, and only then takes the output's name.

`verify=True` proves the result (`tagger.verify`): the extracted model, fed the full model's
values of its inputs, must reproduce the full model's values of its outputs.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from tagger.api import tag_proto
from tagger.errors import InputError, OutputError, TaggerError
from tagger.feeds import DimSettings, Feeds, model_feeds
from tagger.index import may_own_bodies, subgraphs
from tagger.keys import MODULE_KEY, TAG_KEY
from tagger.modelio import external_locations, load_model_and_locations, save_model, save_text
from tagger.paths import is_within
from tagger.tensor_types import TensorTypes
from tagger.verify import Verification, compare_outputs, full_model_values

__all__ = ["ExtractAllReport", "ExtractReport", "TensorSpec", "extract", "extract_all", "modules_at_depth"]

_RANDOM_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"})
_STANDARD_DOMAINS = frozenset({"", "ai.onnx"})
_NEARBY_LIMIT = 6


# --------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class TensorSpec:
    """A boundary tensor: its name in the full model, element type, and shape.

    `shape` holds an int per static dimension, the symbol of a named one, None for an unknown
    one; the whole shape is None when the rank is unknown.
    """

    name: str
    dtype: str
    shape: list[int | str | None] | None


@dataclass
class ExtractReport:
    """One extracted model: what was selected, its boundary, where it went, and its proof."""

    source: str
    output: str
    module: str | None
    tag: str | None
    nodes: int
    pulled: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    initializers: int
    external_data: list[str]
    retagged: bool
    verification: Verification | None = None
    model: onnx.ModelProto | None = field(default=None, repr=False, compare=False)

    @property
    def selection(self) -> str:
        """`module m.encoder`, `module (root)` or `tag /BertModel/*`."""
        if self.module is None:
            return f"tag {self.tag}"
        return f"module {self.module}" if self.module else "module (root)"

    def summary(self) -> str:
        pulled = f" (+{self.pulled} pulled)" if self.pulled else ""
        external = f" (external: {', '.join(self.external_data)})" if self.external_data else ""
        counts = ", ".join(
            _plural(n, word)
            for n, word in ((len(self.inputs), "input"), (len(self.outputs), "output"), (self.initializers, "initializer"))
        )
        line = f"{self.selection}: {_plural(self.nodes, 'node')}{pulled}, {counts}{external} -> {self.output}"
        return line if self.verification is None else f"{line}\n{self.verification.summary()}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("model")
        return data


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass
class ExtractAllReport:
    """Every module at one depth, one file each, plus `index.json`; failures are listed apart."""

    source: str
    depth: int
    out_dir: str
    index: str
    reports: list[ExtractReport]
    failures: dict[str, str]

    def summary(self) -> str:
        verified = [r for r in self.reports if r.verification is not None]
        passed = sum(r.verification.passed for r in verified)
        proof = f", verify passed {passed} of {len(verified)}" if verified else ""
        listed = "; ".join(f"{module or '(root)'}: {error}" for module, error in list(self.failures.items())[:3])
        failed = f", {len(self.failures)} failed: {listed}" if self.failures else ""
        return f"depth {self.depth}: {len(self.reports)} modules extracted{proof}{failed} -> {self.index}"


# --------------------------------------------------------------------------------------------
# the source model: structure, tags, dataflow facts, types


@dataclass
class _Dataflow:
    """Who produces and who reads each tensor of the main graph (body reads count for the owner)."""

    reads: list[list[str]]
    producer: dict[str, int]
    readers: dict[str, list[int]]
    initializers: set[str]
    graph_inputs: list[str]
    graph_outputs: set[str]
    independent: set[int]


@dataclass
class _Source:
    """The full model as loaded once: structure only, tagged, with its dataflow facts.

    Everything a single extraction looks up is indexed here once, so that `extract_all` costs
    one pass over the model plus the size of each module, not the model's size per module.
    """

    path: Path
    model: onnx.ModelProto
    flow: _Dataflow
    types: TensorTypes
    retagged: bool
    modules: list[str]
    tags: list[str]
    initializer_at: dict[str, int]
    sparse_at: dict[str, int]
    value_info_at: dict[str, int]
    locations: set[str]
    """External data locations of the full model, as written in it."""

    @property
    def nodes(self):
        return self.model.graph.node


def _load_source(path: str | os.PathLike) -> _Source:
    source = Path(path)
    model, locations = load_model_and_locations(source)
    graph = model.graph
    modules, tags = _tags(graph)
    retagged = None in modules
    if retagged:
        tag_proto(model, source.name)
        modules, tags = _tags(graph)
    flow = _dataflow(graph)
    initializer_at = {t.name: i for i, t in enumerate(graph.initializer)}
    return _Source(
        path=source,
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
    )


def _tags(graph: onnx.GraphProto) -> tuple[list[str | None], list[str | None]]:
    """Each main-graph node's `hierarchy.module` and `hierarchy.tag` (None when missing).

    Read from the last entry back (the last of a repeated key counts, as in `tagger.index`): the
    writer appends the tag entries after the exporter's, so this stops after two or three."""
    modules: list[str | None] = []
    tags: list[str | None] = []
    for node in graph.node:
        module = tag = None
        entries = node.metadata_props
        for position in range(len(entries) - 1, -1, -1):
            entry = entries[position]
            key = entry.key
            if key == MODULE_KEY and module is None:
                module = entry.value
                if tag is not None:
                    break
            elif key == TAG_KEY and tag is None:
                tag = entry.value
                if module is not None:
                    break
        modules.append(module)
        tags.append(tag)
    return modules, tags


def _dataflow(graph: onnx.GraphProto) -> _Dataflow:
    initializers = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    reads: list[list[str]] = []
    producer: dict[str, int] = {}
    readers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        names = [name for name in node.input if name]
        if may_own_bodies(node.op_type, node.domain) and (outer := _body_reads(node)):
            names = list(dict.fromkeys(names + outer))
        reads.append(names)
        for name in names:
            if name in readers:
                readers[name].append(i)
            else:
                readers[name] = [i]
        for name in node.output:
            producer[name] = i
    producer.pop("", None)
    flow = _Dataflow(
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
        names.extend(_outer_refs(body))
    return names


def _outer_refs(graph: onnx.GraphProto) -> list[str]:
    defined = {value.name for value in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.values.name for t in graph.sparse_initializer}
    refs: list[str] = []
    for node in graph.node:
        refs.extend(name for name in node.input if name and name not in defined)
        refs.extend(name for name in _body_reads(node) if name not in defined)
        defined.update(name for name in node.output if name)
    return list(dict.fromkeys(refs))


def _input_independent(nodes, flow: _Dataflow) -> set[int]:
    """Nodes whose every transitive input is an initializer or a constant: same values anywhere."""
    independent: set[int] = set()
    initializers, producer = flow.initializers, flow.producer
    for i, names in enumerate(flow.reads):
        for name in names:
            if name not in initializers and producer.get(name) not in independent:
                break
        else:
            node = nodes[i]
            if node.op_type not in _RANDOM_OPS or node.domain not in _STANDARD_DOMAINS:
                independent.add(i)
    return independent


# --------------------------------------------------------------------------------------------
# selection and boundary


@dataclass
class _Cut:
    """The nodes of one extraction and its boundary, by position and name in the full model."""

    label: str
    module: str | None
    tag: str | None
    selected: list[int]
    pulled: list[int]
    inputs: list[str]
    outputs: list[str]


def _select(src: _Source, module: str | None, tag: str | None) -> list[int]:
    if module is not None:
        chosen = [i for i, path in enumerate(src.modules) if is_within(path, module)]
        if not chosen:
            raise InputError(f"no node belongs to module {module!r}; {_nearby_modules(src, module)}")
        return chosen
    assert tag is not None
    chosen = [i for i, text in enumerate(src.tags) if fnmatch.fnmatchcase(text, tag)]
    if not chosen:
        examples = list(dict.fromkeys(src.tags))[:3]
        raise InputError(f"no node's hierarchy.tag matches {tag!r}; tags look like {', '.join(examples)}")
    return chosen


def _all_modules(src: _Source) -> list[str]:
    """Every module path named by a tag, with its ancestors, in order of first appearance."""
    found: dict[str, None] = {}
    for path in dict.fromkeys(src.modules):
        parts = path.split(".")
        for k in range(1, len(parts) + 1):
            found.setdefault(".".join(parts[:k]), None)
    found.pop("", None)
    return list(found)


def _nearby_modules(src: _Source, module: str) -> str:
    """Paths ending in it and siblings under its deepest existing ancestor, else close spellings."""
    modules = _all_modules(src)
    known = set(modules)
    parts = module.split(".")
    ancestor = next((".".join(parts[:k]) for k in range(len(parts) - 1, 0, -1) if ".".join(parts[:k]) in known), None)
    siblings = [m for m in modules if ancestor is not None and m.count(".") == ancestor.count(".") + 1 and is_within(m, ancestor)]
    nearby = list(dict.fromkeys([m for m in modules if m.endswith("." + module)] + siblings))
    nearby = nearby or difflib.get_close_matches(module, modules, n=_NEARBY_LIMIT, cutoff=0.6)
    nearby = nearby or [m for m in modules if "." not in m]
    if not nearby:
        return "the model names no modules"
    more = ", ..." if len(nearby) > _NEARBY_LIMIT else ""
    return f"modules near it: {', '.join(nearby[:_NEARBY_LIMIT])}{more}"


def modules_at_depth(model: str | os.PathLike, depth: int) -> list[str]:
    """The module paths with `depth` dotted components that own nodes of `model` (0: the root)."""
    return _modules_at(_load_source(model), depth)


def _modules_at(src: _Source, depth: int) -> list[str]:
    return list(_groups_at(src, depth))


def _groups_at(src: _Source, depth: int) -> dict[str, list[int]]:
    """Module path at `depth` -> the nodes within it, in one pass over the nodes."""
    groups: dict[str, list[int]] = {}
    for i, path in enumerate(src.modules):
        parts = path.split(".") if path else []
        if len(parts) >= depth:
            groups.setdefault(".".join(parts[:depth]), []).append(i)
    return groups


def _cut(src: _Source, module: str | None, tag: str | None, pull_producers: bool, selected: list[int] | None = None) -> _Cut:
    label = f"tag {tag}" if module is None else (f"module {module}" if module else "module (root)")
    selected = _select(src, module, tag) if selected is None else selected
    flow = src.flow
    chosen = set(selected)
    pulled = _pulled_producers(flow, chosen) if pull_producers else set()
    inside = chosen | pulled
    produced = {name for i in inside for name in src.nodes[i].output if name}
    read_from_outside = [
        name for i in sorted(inside) for name in flow.reads[i] if name not in produced and name not in flow.initializers
    ]
    outside = set(read_from_outside)
    inputs = [name for name in flow.graph_inputs if name in outside]
    inputs += [name for name in dict.fromkeys(read_from_outside) if name not in inputs]
    outputs = [
        name
        for i in selected
        for name in src.nodes[i].output
        if name and (name in flow.graph_outputs or any(r not in inside for r in flow.readers.get(name, ())))
    ]
    if not outputs:
        raise InputError(f"{label} computes nothing the rest of the model reads (no boundary outputs)")
    return _Cut(label, module, tag, selected, sorted(pulled), inputs, list(dict.fromkeys(outputs)))


def _pulled_producers(flow: _Dataflow, chosen: set[int]) -> set[int]:
    """The input-independent producers (transitively) of the tensors `chosen` reads from outside."""
    pulled: set[int] = set()
    stack = list(chosen)
    while stack:
        i = stack.pop()
        for name in flow.reads[i]:
            p = flow.producer.get(name)
            if p is not None and p not in chosen and p not in pulled and p in flow.independent:
                pulled.add(p)
                stack.append(p)
    return pulled


# --------------------------------------------------------------------------------------------
# building the model


def _build(src: _Source, cut: _Cut) -> tuple[onnx.ModelProto, list[int]]:
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


def _declarations(src: _Source, cut: _Cut) -> _Declarations:
    src.types.resolve([*cut.inputs, *cut.outputs])
    return _Declarations(
        inputs=[_value_info(src, name, cut.label) for name in cut.inputs],
        outputs=[_value_info(src, name, cut.label) for name in cut.outputs],
    )


def _inner_value_info(src: _Source, cut: _Cut, kept: list[int]) -> list[onnx.ValueInfoProto]:
    """The source's value_info of the tensors the kept nodes compute inside the cut, in source order."""
    boundary = set(cut.inputs) | set(cut.outputs)
    produced = {name for i in kept for name in src.nodes[i].output if name not in boundary}
    return [src.model.graph.value_info[i] for i in sorted(src.value_info_at[n] for n in produced if n in src.value_info_at)]


def _lean_copy(src: _Source, candidates: list[int]) -> onnx.ModelProto:
    """What graphsurgeon's `cleanup` needs to decide the nodes: the candidates, nothing else.

    No initializers (graphsurgeon would turn each into a numpy array, a copy of every weight of
    the layer, only for `cleanup` to ignore it) and no types (it would build an object for each);
    the extracted model takes both from the source (`_fill_from_source`)."""
    source = src.model
    lean = onnx.ModelProto(ir_version=source.ir_version)
    lean.opset_import.extend(source.opset_import)
    lean.graph.node.extend(src.nodes[i] for i in candidates)
    return lean


def _copy_initializers(graph: onnx.GraphProto, src: _Source, nodes: list[int]) -> None:
    """The initializers `nodes` read (bodies included), in source order, external entries as they are."""
    needed = {name for i in nodes for name in src.flow.reads[i]}
    dense = sorted(src.initializer_at[name] for name in needed if name in src.initializer_at)
    sparse = sorted(src.sparse_at[name] for name in needed if name in src.sparse_at)
    graph.initializer.extend(src.model.graph.initializer[i] for i in dense)
    graph.sparse_initializer.extend(src.model.graph.sparse_initializer[i] for i in sparse)


def _value_info(src: _Source, name: str, context: str) -> onnx.ValueInfoProto:
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


def _fill_from_source(model: onnx.ModelProto, src: _Source, cut: _Cut, kept: list[int], declarations: _Declarations) -> None:
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


# --------------------------------------------------------------------------------------------
# writing and checking


def _write_checked(model: onnx.ModelProto, data_source: Path, destination: Path) -> None:
    """Save under a temporary name beside `destination`, run the full checker, then rename."""
    if destination.is_dir():
        raise OutputError(f"output is a directory: {destination}")
    save_model(model, data_source, destination, check=_full_check)


def _full_check(path: Path) -> None:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise TaggerError(f"the extracted model fails the ONNX checker: {first}") from None


def _refuse_source_files(src: _Source, destination: Path) -> None:
    """Never write over the input model or one of its external data files."""
    protected = [src.path, *(src.path.parent / location for location in src.locations)]
    for path in protected:
        if destination.exists() and path.exists() and os.path.samefile(destination, path):
            raise OutputError(f"output {destination} is the input model or its external data")


def _spec(info: onnx.ValueInfoProto) -> TensorSpec:
    kind = info.type.WhichOneof("value")
    if kind not in ("tensor_type", "sparse_tensor_type"):
        return TensorSpec(info.name, str(kind), None)
    tensor = getattr(info.type, kind)
    dtype = onnx.TensorProto.DataType.Name(tensor.elem_type).lower()
    if not tensor.HasField("shape"):
        return TensorSpec(info.name, dtype, None)
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
    return TensorSpec(info.name, dtype, dims)


def _report(src: _Source, cut: _Cut, model: onnx.ModelProto, kept: list[int], output: Path) -> ExtractReport:
    selected = set(cut.selected)
    return ExtractReport(
        source=str(src.path),
        output=str(output),
        module=cut.module,
        tag=cut.tag,
        nodes=sum(i in selected for i in kept),
        pulled=sum(i not in selected for i in kept),
        inputs=[_spec(v) for v in model.graph.input],
        outputs=[_spec(v) for v in model.graph.output],
        initializers=len(model.graph.initializer) + len(model.graph.sparse_initializer),
        external_data=sorted(external_locations(model)),
        retagged=src.retagged,
        model=model,
    )


def _extract_cut(src: _Source, cut: _Cut, destination: Path, data_source: Path) -> ExtractReport:
    _refuse_source_files(src, destination)
    model, kept = _build(src, cut)
    _write_checked(model, data_source, destination)
    return _report(src, cut, model, kept, destination)


def _verify_all(src: _Source, cuts: list[_Cut], feeds: Feeds) -> dict:
    """The full model's values of every boundary tensor of `cuts`, from one onnxruntime run."""
    names = [name for cut in cuts for name in (*cut.inputs, *cut.outputs)]
    src.types.resolve(names)
    types = {name: tp for name in names if (tp := src.types.get(name)) is not None}
    return full_model_values(src.model, src.path.parent.resolve(), names, types, feeds)


def _verify(report: ExtractReport, cut: _Cut, values: dict) -> None:
    """Record the comparison; an extracted model onnxruntime cannot even load fails it."""
    try:
        report.verification = compare_outputs(Path(report.output), cut.inputs, cut.outputs, values)
    except TaggerError as exc:
        report.verification = Verification(False, 0, 0, float("nan"), [str(exc)])


# --------------------------------------------------------------------------------------------
# API


def extract(
    model: str | os.PathLike,
    module: str | None = None,
    tag: str | None = None,
    output: str | os.PathLike | None = None,
    pull_producers: bool = True,
    verify: bool = False,
    inputs: str | os.PathLike | None = None,
    dim: DimSettings | int | str | dict = 1,
) -> ExtractReport:
    """Write the subgraph of `module` (dotted path, `""` = whole model) or of the nodes whose tag
    matches the glob `tag` as a runnable ONNX model; see the module docstring for the rules.

    `output` defaults to `<stem>.<module>.onnx` beside the input. `verify=True` runs both models
    in onnxruntime and records the comparison in `report.verification`; the full model runs on
    the `.npz` at `inputs`, or on feeds generated with `dim` (as for `profile`; `tagger.feeds`).
    """
    if (module is None) == (tag is None):
        raise InputError("give exactly one of --module PATH or --tag PATTERN")
    for name, value in (("module", module), ("tag", tag)):
        if value is not None and not isinstance(value, str):
            raise InputError(f"--{name} must be a string, got {value!r}")
    src = _load_source(model)
    feeds = model_feeds(src.model, inputs, dim) if verify else None
    cut = _cut(src, module, tag, pull_producers)
    destination = Path(output) if output is not None else _default_output(src.path, module, tag)
    report = _extract_cut(src, cut, destination, src.path)
    if feeds is not None:
        _verify(report, cut, _verify_all(src, [cut], feeds))
    return report


def extract_all(
    model: str | os.PathLike,
    depth: int,
    out_dir: str | os.PathLike,
    pull_producers: bool = True,
    verify: bool = False,
    inputs: str | os.PathLike | None = None,
    dim: DimSettings | int | str | dict = 1,
) -> ExtractAllReport:
    """One model per module at `depth` (number of dotted components) in `out_dir`, plus `index.json`.

    A module that cannot be extracted is listed in `failures` (and in the index); the others are
    still written. With external data the data file is placed in `out_dir` once and shared.
    `verify`, `inputs` and `dim` as for `extract`.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise InputError(f"--depth must be a non-negative integer, got {depth!r}")
    src = _load_source(model)
    feeds = model_feeds(src.model, inputs, dim) if verify else None
    groups = _groups_at(src, depth)
    if not groups:
        raise InputError(f"no module has depth {depth}; the deepest module path has {_max_depth(src)} components")
    directory = Path(out_dir)
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"--out_dir is not a directory: {directory}")
    directory.mkdir(parents=True, exist_ok=True)
    failures: dict[str, str] = {}
    cuts: list[_Cut] = []
    for module, selected in groups.items():
        with _recorded(failures, module):
            cuts.append(_cut(src, module, None, pull_producers, selected))
    src.types.resolve(name for cut in cuts for name in (*cut.inputs, *cut.outputs))  # one inference for all
    values = _verify_all(src, cuts, feeds) if feeds is not None and cuts else {}
    reports: list[ExtractReport] = []
    data_source = src.path
    for cut, file_name in zip(cuts, _file_names((cut.module or "" for cut in cuts), {src.path.name}), strict=True):
        with _recorded(failures, cut.module or ""):
            report = _extract_cut(src, cut, directory / file_name, data_source)
            reports.append(report)
            if set(report.external_data) == src.locations:
                # every data file now lies in out_dir: later models share it instead of re-comparing it
                data_source = directory / src.path.name
            if verify:
                _verify(report, cut, values)
    index = directory / "index.json"
    save_text(_index_json(src, depth, reports, failures), index)
    return ExtractAllReport(str(src.path), depth, str(directory), str(index), reports, failures)


@contextlib.contextmanager
def _recorded(failures: dict[str, str], module: str) -> Iterator[None]:
    try:
        yield
    except TaggerError as exc:
        failures[module] = str(exc)


def _max_depth(src: _Source) -> int:
    return max((m.count(".") + 1 for m in _all_modules(src)), default=0)


def _default_output(source: Path, module: str | None, tag: str | None) -> Path:
    label = _safe_name(module) if module is not None else "tag-" + _safe_name(tag or "")
    return source.with_name(f"{source.stem}.{label}.onnx")


def _safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "root"


def _file_names(modules: Iterable[str], reserved: set[str]) -> list[str]:
    """`<module>.onnx` for each module, unique, never one of the `reserved` names (the source)."""
    names: list[str] = []
    taken = set(reserved)
    for module in modules:
        stem = _safe_name(module)
        name, k = f"{stem}.onnx", 1
        while name in taken:
            k += 1
            name = f"{stem}_{k}.onnx"
        taken.add(name)
        names.append(name)
    return names


def _index_json(src: _Source, depth: int, reports: list[ExtractReport], failures: dict[str, str]) -> str:
    entries = [
        {
            "module": report.module,
            "file": Path(report.output).name,
            "nodes": report.nodes,
            "pulled": report.pulled,
            "inputs": [asdict(spec) for spec in report.inputs],
            "outputs": [asdict(spec) for spec in report.outputs],
            "external_data": report.external_data,
            "verification": asdict(report.verification) if report.verification else None,
        }
        for report in reports
    ]
    data = {"model": src.path.name, "depth": depth, "modules": entries, "failures": failures}
    return json.dumps(data, indent=2) + "\n"
