"""Scoped node names: TorchScript `/encoder/layer.0/attention/self/MatMul`, the names tools
derive from them (`…/Add_output_0`, `…/MatMul_quant`, `…_QuantizeLinear`) and `a/b/c` scopes
of other converters. Everything before the last `/` is the scope.

Which scope segments name modules rests on how the TorchScript exporter names a node:
`/<scope>/<OpType>[_N]`, where each scope segment is the unqualified name of a module called at
that depth (its last non-numeric attribute plus any index: `layers.0`) and the op type is the
node's own (`…/output/dense/MatMul`, `…/layer_norm/Mul_1`). A tool that replaces a node names
the new one after it and appends its own suffix (onnxruntime's `…/dense/MatMul/MatMulAddFusion`,
`…/layer_norm/Mul_1/SimplifiedLayerNormFusion/`), so everything from an op name on is the old
node's name, not a module. Hence:

1. A segment that is an op name ends the module part of a scope: neither it nor what lies below
   it is a module. An op name is an op type, optionally with `_N` (`MatMul`, `Mul_1`), or the
   exporter's name of its output (`Mul_1_output_0`); op types are those of the file and of the
   standard ONNX domains (the exporter's vocabulary: a tool may have replaced every node of the
   type a name keeps). Only a module the file names by other evidence (parameters, metadata, the
   module map) overrides this: a module really called like an op (`LSTM`) stays a module.
2. Where the file names modules by parameters, a scope must agree with them. A TorchScript
   (`/`-rooted) segment resolves to the known module below its caller that it is the
   unqualified name of (`/decoder/…` is `model.decoder` when `self.model.decoder(...)` skipped
   `model`), and only when none is known to a new child of the caller: an output head whose
   weight is tied or transposed (`/lm_head/MatMul` beside `onnx::MatMul_803`) keeps its scope,
   since the exporter names only modules that ran. A segment that reads as several known modules
   alike is no evidence (`ScopeReading._known_below`: entries of a list run by `layer.forward(x)`
   share one scope; parameters and inference place those nodes). Any other scoped name (a tool's suffix on a
   dynamo name, `node_MatMul_34/MatMulAddFusion`) counts only when its first module is a known
   child of the root.
3. A module reached by two paths (a tied embedding: T5's `shared` is also `decoder.embed_tokens`)
   has one TorchScript name, its first `named_modules()` path, and appears under every caller by
   that path's unqualified name (`/decoder/shared/Gather` reads `shared.weight`). A module's ops
   read its own parameters, so a `/`-rooted scope that reads as no known module, whose nodes read
   parameters of a known module with the scope's last segment as unqualified name, is that
   module (`shared`), not a new child of the caller (`ModuleSet.read_shared`).
"""

from __future__ import annotations

import functools
import re

import onnx

from tagger.evidence import Context
from tagger.evidence.merged_parameters import varying
from tagger.model.index import ModelIndex
from tagger.model.paths import scope_segments

SOURCE = "name"
__all__ = ["SOURCE", "module_of_scope", "op_names", "propose"]

_TENSOR_LIKE = re.compile(r"_output_\d+$")
_OP_NAME_SUFFIX = re.compile(r"(_\d+)?(_output_\d+)?$")
"""What the exporter appends to an op type in a node name (`Mul_1`) or an output name (`Mul_1_output_0`)."""


@functools.cache
def _standard_op_types() -> frozenset[str]:
    """Every op type the standard domains ever defined: each has a latest schema, and reading
    those alone takes a tenth of the time of every version's (20 ms at start-up)."""
    return frozenset(schema.name for schema in onnx.defs.get_all_schemas())


def op_names(index: ModelIndex) -> frozenset[str]:
    """Every op type a node name may start with: the file's and the standard domains'. The same
    object for an equal set (`_canonical`): `_is_op_name`'s cache compares its keys, and a new
    object equal to a cached key's costs a comparison of 230 names on every hit (1.5 µs, 0.3 s
    at 300k nodes), where the same one costs nothing."""
    return _canonical(_standard_op_types() | {view.op_type for view in index.views})


_CANONICAL: dict[frozenset[str], frozenset[str]] = {}


def _canonical(ops: frozenset[str]) -> frozenset[str]:
    """The first object seen equal to `ops` (a few per process: one per distinct set of op types;
    emptied past 64, when a later hit costs no more than before)."""
    if len(_CANONICAL) > 64:
        _CANONICAL.clear()
    return _CANONICAL.setdefault(ops, ops)


@functools.lru_cache(maxsize=1 << 16)
def _is_op_name(segment: str, ops: frozenset[str]) -> bool:
    """Cached: a model's scopes repeat the same segments (`encoder`, `attention`) in every layer
    (a frozenset keeps its hash, so the key costs the segment's)."""
    return segment in ops or _OP_NAME_SUFFIX.sub("", segment, count=1) in ops


def module_segments(segments: list[str], context: Context, torchscript: bool) -> list[str]:
    """The module part of a scope (rule 1): the segments before the first op name, unless the
    segments up to that op name resolve to a module known from other evidence."""
    ops, modules = context.op_names, context.modules
    for end, segment in enumerate(segments):
        if _is_op_name(segment, ops) and modules.resolve(segments[: end + 1], torchscript) not in modules:
            return segments[:end]
    return segments


def module_of_scope(scope: str, context: Context, segments: list[str] | None = None) -> str | None:
    """The module path a scope prefix (`/encoder/layer.0/`) points at, or None.

    Cached by the scope in `context.scope_modules`: names are unique, scopes repeat. `segments`:
    the scope's module segments (`module_segments`), when the caller has them already.
    """
    cache = context.scope_modules
    if scope in cache:
        return cache[scope]
    torchscript = scope.startswith("/")
    if segments is None:
        segments = scope_segments(scope + "_")
        segments = None if segments is None else module_segments(segments, context, torchscript)
    modules = context.modules
    module = None if segments is None else modules.resolve(segments, torchscript=torchscript)
    if module is not None and not torchscript and not modules.has_top_level(module):
        module = None  # rule 2
    cache[scope] = module
    return module


def _borrowed(name: str, outputs: tuple[str, ...]) -> bool:
    """A tool named this node after some tensor (onnxslim's `…/Add_output_0`) that is not its own
    output: that scope belongs to whoever produced the tensor, so the output names decide.
    (A name equal to one of the node's inputs is borrowed too; `propose` tests that first.)"""
    return _TENSOR_LIKE.search(name) is not None and name not in outputs


def propose(index: ModelIndex, context: Context) -> dict[int, str]:
    """Read every scope first (the module set learns `_N` call suffixes from all of them), then
    resolve each node's own name scope."""
    context.op_names = op_names(index)
    seen, named = _scopes(index)
    segments_of: dict[str, list[str] | None] = {}
    for scope in seen:
        segments = scope_segments(scope + "_")
        segments_of[scope] = None if segments is None else module_segments(segments, context, scope.startswith("/"))
    for segments in segments_of.values():
        if segments:
            context.modules.observe(segments)
    _read_shared_modules(index, named, segments_of, context)
    found: dict[int, str] = {}
    cache = context.scope_modules
    alike: dict[str, tuple[str, ...]] = {}
    for node_id, scope in named:
        module = cache[scope] if scope in cache else module_of_scope(scope, context, segments_of[scope])
        if module is not None:
            found[node_id] = module
        elif scope.startswith("/") and segments_of[scope]:
            if scope not in alike:
                readings = context.modules.alike_readings(segments_of[scope])
                alike[scope] = readings if context.tree is None else tuple(r for r in readings if r in context.modules)
            if len(alike[scope]) > 1:
                context.alike[node_id] = alike[scope]
    return found


def _read_shared_modules(
    index: ModelIndex, named: list[tuple[int, str]], segments_of: dict[str, list[str] | None], context: Context
) -> None:
    """Rule 3: teach the module set the TorchScript scopes that name a known module by its one path.

    Only parameters holding learnt values show a tie. Equal parameters are one initializer named
    after the first (a fresh init's zero biases); read by several nodes it names none of them
    (`merged_parameters`), but a tool may leave it one reader in another module: onnxslim drops
    every zero-bias `Add` but the one that writes a graph output, the last layer's norm reading
    `embeddings.LayerNorm.bias`. One value repeated is no evidence of which module that was."""
    parameters = context.parameters.owners
    if not parameters:
        return
    read: dict[str, set[str]] = {}
    views, disjoint, modules = index.views, parameters.keys().isdisjoint, context.modules
    for node_id, scope in named:
        inputs = views[node_id].input
        if disjoint(inputs) or not scope.startswith("/") or not segments_of[scope]:
            continue
        read.setdefault(scope, set()).update(name for name in inputs if name in parameters)
    unknown = {
        scope: names
        for scope, names in read.items()
        if (module := modules.resolve(segments_of[scope])) is not None and module not in modules
    }  # the scopes `read_shared` rereads: values are read for their parameters only
    learnt = varying(index, set().union(*unknown.values()), context.base_dir) if unknown else set()
    for scope, names in unknown.items():
        modules.read_shared(segments_of[scope], {parameters[name] for name in names if name in learnt})


def _scopes(index: ModelIndex) -> tuple[set[str], list[tuple[int, str]]]:
    """Every scope in node and output names, and the nodes whose own name gives theirs."""
    views = index.views
    seen = {output[: output.rfind("/") + 1] for view in views for output in view.output if "/" in output}
    named: list[tuple[int, str]] = []
    for node_id in [i for i, view in enumerate(views) if "/" in view.name]:  # a comprehension: most names have none
        node = views[node_id]
        name = node.name
        scope = name[: name.rfind("/") + 1]
        seen.add(scope)
        if name not in node.input and not ("_output_" in name and _borrowed(name, node.output)):
            named.append((node_id, scope))
    return seen, named
