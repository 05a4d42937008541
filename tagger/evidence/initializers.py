"""Parameter names a node consumes: `encoder.layer.0.attention.self.query.weight` names module
`encoder.layer.0.attention.self.query`.

Only names that are parameter paths count: every component an attribute name (an identifier)
or a list index (digits), as `named_parameters()` spells them. Exporter temporaries such as
`val_17` or `onnx::MatMul_352` carry no module, nor do tool names built on a tensor name
(`input.1_scale`: `1_scale` is neither an identifier nor an index). Tool-derived names (`…weight_quantized`,
`…weight_scale`) still end in one attribute, so they resolve the same way. When a node consumes
parameters of several modules (a fused op), the module owning most of them wins, and their
lowest common ancestor on a tie.

An INT64 initializer is no parameter either, whatever its name: nothing learned is stored in
integers, so it is an index buffer (`position_ids`, `token_type_ids`), and reading it applies no
weight (fact B is about applying parameters): any module holding its owner may slice it
(ConvBertModel slices its embeddings' `token_type_ids` to build their default argument). Its
readers are left to inference. (Quantized weights are 8-bit, their biases 32-bit.)

Initializers a tool derives from a tensor the graph computes or receives are not parameters
either. The facts: a tool that makes an initializer for a tensor names it after that tensor plus
a suffix (a static QDQ quantizer's `past_key_values.0.key_scale` and `…_zero_point` for the KV
cache input `past_key_values.0.key`, `present.0.key_scale` for an output), and a graph's inputs
and outputs are named after the model's arguments and results, never after a parameter (a
parameter enters a graph as an initializer). So an initializer whose name is the name of a graph
input or output, or of a node output, followed by `_` and a suffix without dots names that
tensor, not a module (`past_key_values.0` is none); a real parameter path never extends such a
name that way. One exception: a node output that is no graph output but is itself named by a
parameter path stands for that parameter (a quantizer's `DequantizeLinear` in a bias's place
keeps its name, `m.embeddings.LayerNorm.bias`), so `…bias_quantized` stays the bias's module's.

A tool that folds the next op into a weighted node names the new bias after the weight
(`conv.weight` + `conv.weight_bias`: onnxscript's BatchNorm fusion, run by the dynamo exporter):
such a node computes two modules' ops, so it belongs to their common caller, the weight's
module's parent. The new bias alone names that caller too (a quantizer splits the node: the
weight goes to a `ConvInteger`, the bias to the `Add` after it).

`torch.nn.MultiheadAttention` never calls its `out_proj` child: its forward passes
`out_proj.weight` and `out_proj.bias` to `F.multi_head_attention_forward`, so the attention module
itself applies them (the exporter scopes that Gemm to it). A module that owns the attention's
own parameters (`in_proj_weight`, `in_proj_bias`, `q_proj_weight`) beside an `out_proj` child is
such an attention; its `out_proj` parameters are read by it. (A custom attention with those names
that does call `out_proj` gets its caller: an ancestor of the truth, never another branch.)

onnxruntime's contrib ops that apply an activation after the weights or bias they read
(`BiasGelu`, `FusedConv`: `tagger.model.contrib`) compute the activation's value too: they belong to the
weights' module's caller. A fused residual norm that also adds a Linear's bias (its fifth input:
`SkipLayerNormalization` of an `AddBias` fusion) computes that Linear's last op, a residual sum
and a norm: the bias names the Linear's caller, and only beside the norm's own parameters. The
sum and the norm are the caller's in a post-norm block (BERT's output), but in a pre-norm one
the layer adds the residual and the norm is the next layer's or the final one (SigLIP's
`post_layernorm`), so where the norm's parameters name nothing (merged) the bias alone would
place the node below its truth.

A static QDQ quantizer replaces a parameter by its quantized copy and a `DequantizeLinear` of it,
hoisted to the top of the graph; the op applying the parameter reads the DequantizeLinear's
output, named after no parameter. The pair stands for the tensor it quantizes (the QDQ format),
so a node reading the dequantized copy of a parameter reads that parameter, as merges, ties,
repeated calls and clones are judged (`_through_dequantize`); the quantizer's numbered copies of a
bias several nodes read (`bias0`, `bias00`: one per reader) are read as the one they were made
from; a folded bias stays one once quantized (`conv.weight_bias_quantized`), and the weight it
is named after is the fold's too (the conv's weight scaled by the norm's): once a quantizer split
the fused op into a product, its rescale and a bias `Add`, each reads only part of the fold.

An initializer that may stand for several parameters an exporter merged because they were equal
(a fresh model's zero biases) names no reader: `merged_parameters` says which. TorchScript
writes each further equal parameter as an `Identity` of the one it keeps: such a copy whose
output names no parameter (a stripped file) is another module's, and names none
(`_copy_of_another`). A merged folded bias still says that each node reading it is a fused op:
such a node reading its own weight belongs to that weight's module's caller.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Iterable

from tagger.evidence import Context, ParameterFacts
from tagger.evidence.clones import clone_reads, later_reads, outermost_list
from tagger.evidence.merged_parameters import merged_parameters, tied_lookup_tables
from tagger.model.contrib import CONTRIB_DOMAIN, applies_activation, fused_bias
from tagger.model.index import ModelIndex, NodeView, graphs_within
from tagger.model.paths import lca_all, parent

SOURCE = "initializer"
_ATTENTION_CLASS = "MultiheadAttention"
__all__ = ["SOURCE", "attention_modules", "module_of_parameter", "parameter_owners", "propose"]

_PARAMETER = re.compile(r"^[A-Za-z_]\w*(\.([A-Za-z_]\w*|\d+))+$")
"""Attribute names and list indices joined by dots: what `named_parameters()` and `named_buffers()` spell."""


_ATTENTION_OWN = frozenset({"in_proj_weight", "in_proj_bias", "q_proj_weight"})
"""Parameters `nn.MultiheadAttention` holds itself (packed or separate q/k/v projections)."""


def module_of_parameter(name: str, attentions: Collection[str] = ()) -> str | None:
    """The module applying a parameter or buffer named by its dotted path, else None: its owner,
    or the `nn.MultiheadAttention` among `attentions` whose `out_proj` it belongs to."""
    if not _PARAMETER.match(name):
        return None
    owner = name.rpartition(".")[0]
    caller, _, child = owner.rpartition(".")
    return caller if child == "out_proj" and caller in attentions else owner


def attention_modules(names: Iterable[str]) -> frozenset[str]:
    """The modules that parameter names show to be `nn.MultiheadAttention`s (see the module docstring)."""
    found = set()
    for name in names:
        owner, _, attribute = _unquantized(name).rpartition(".")
        if attribute in _ATTENTION_OWN and _PARAMETER.match(name):
            found.add(owner)
    return frozenset(found)


def parameter_owners(index: ModelIndex, classes: dict[str, str] | None = None) -> dict[str, str]:
    """The module applying each initializer the file names by a parameter path, leaving out the
    names derived from a tensor the graph computes or receives (see the module docstring).
    `classes`: the true tree's class names, where known: an `nn.MultiheadAttention` is one even
    when a tool folded away the parameters that show it (onnxslim's `in_proj_bias`)."""
    computed: set[str] | None = None
    owners: dict[str, str] = {}
    shared: dict[str, str] = {}  # one copy of each owner: a module owns several parameters
    attentions = attention_modules(name for scope in index.graphs for name in scope.initializers)
    attentions |= {path for path, name in (classes or {}).items() if name == _ATTENTION_CLASS}
    for scope in index.graphs:
        for name in scope.initializers:
            owner = module_of_parameter(name) if name not in scope.indices else None
            if owner is None:
                continue
            if "_" in name[len(owner) :]:  # only such a name can extend a tensor's name
                computed = _computed_tensors(index) if computed is None else computed
                if _derived_from_tensor(name, computed):
                    continue
            owner = module_of_parameter(name, attentions) if attentions else owner
            owners[name] = shared.setdefault(owner, owner)
    return owners


def _computed_tensors(index: ModelIndex) -> set[str]:
    """The tensors whose names a derived name may extend: every graph's (and function's) inputs
    and outputs, and the node outputs not named by a parameter path; initializers excluded."""
    tensors = {output for view in index.views for output in view.output if module_of_parameter(output) is None}
    for graph in graphs_within(index.model.graph):
        tensors.update(value.name for value in graph.input)
        tensors.update(value.name for value in graph.output)
    for function in index.model.functions:
        tensors.update(function.input)
        tensors.update(function.output)
    for scope in index.graphs:
        tensors.difference_update(scope.initializers)
    return tensors


def _derived_from_tensor(name: str, tensors: set[str]) -> bool:
    """Whether `name` is a tensor's name plus `_` and a suffix without dots (`past_key_values.0.key_scale`)."""
    cut = name.find("_", name.rfind(".") + 1)
    while cut > 0:
        if name[:cut] in tensors:
            return True
        cut = name.find("_", cut + 1)
    return False


def propose(index: ModelIndex, context: Context) -> dict[int, str]:
    found: dict[int, str] = {}
    owners = parameter_owners(index, context.classes if context.tree_origin else None)
    for owner in dict.fromkeys(name.rpartition(".")[0] for name in owners):  # each a parameter path: `module_of_parameter`
        context.modules.add(owner)  # the owner exists even where its caller applies its parameters
    plain_readers = _readers(index, owners)
    copies = _dequantized_copies(index.views, plain_readers)
    families = _quantizer_copies(owners) if copies else []
    readers = _through_dequantize(plain_readers, copies, families)
    stand_ins = _stand_ins(index.views, copies, owners)
    merged, tied = merged_parameters(index, readers, owners, context.base_dir)
    merged |= _made_for(owners, merged, families)
    named = {name: owner for name, owner in owners.items() if name not in merged}  # tied: still its owner's
    untrained = bool(merged)  # constants merged across modules: only a fresh init makes them
    merged |= tied
    tables = tied_lookup_tables(index, plain_readers, context.base_dir)
    lookups = frozenset(node for name in tables for node in plain_readers[name])
    rereads = {
        name: len(readers[name]) for name in named if len(readers.get(name, ())) > 1 and outermost_list(named[name]) is not None
    }
    context.parameters = ParameterFacts(named, frozenset(merged), lookups, rereads, untrained)
    folded = {name for name in owners if _folded_bias(_unquantized(name), owners)}
    fused = {_unquantized(name)[: -len("_bias")] for name in folded}
    for name in folded | {name for name in owners if _quantized_from(_unquantized(name)) in fused}:
        owners[name] = owners[name].rpartition(".")[0]  # the folded op's weight and bias: the two modules' caller
    if not owners:
        return found
    clones = _entry_reads(context, readers, named)
    views = index.views
    plain = not clones and not folded and not stand_ins  # then only a contrib op's node needs `_owned`
    for node_id in sorted({node for nodes in (*plain_readers.values(), *readers.values()) for node in nodes}):
        view = views[node_id]
        if _copy_of_another(view, owners):
            continue
        if plain and view.domain != CONTRIB_DOMAIN:
            owned = [owners[name] for name in view.input if name in owners and name not in merged]
        else:
            owned = _owned(node_id, view, owners, merged, folded, clones, stand_ins)
        if owned:
            one = len(owned) == 1 or owned.count(owned[0]) == len(owned)  # a weight and a bias of one module
            found[node_id] = owned[0] if one else _majority(owned)  # w + w_bias: a tie, their LCA
    return found


def _dequantized_copies(views: list[NodeView], readers: dict[str, list[int]]) -> dict[int, list[int]]:
    """Each `DequantizeLinear` reading a parameter (or its scale), with the nodes reading its output."""
    copies = {
        view.output[0]: node_id
        for nodes in readers.values()
        for node_id in nodes
        for view in [views[node_id]]
        if view.op_type == "DequantizeLinear" and view.output and view.input
    }  # fmt: skip
    found: dict[int, list[int]] = {node_id: [] for node_id in copies.values()}
    for node_id, view in enumerate(views) if copies else ():
        for name in view.input:
            if name in copies:
                found[copies[name]].append(node_id)
    return found


def _through_dequantize(
    readers: dict[str, list[int]], copies: dict[int, list[int]], families: list[list[str]]
) -> dict[str, list[int]]:
    """Each parameter's readers, a `DequantizeLinear` of it replaced by the nodes reading its
    output (a static quantizer leaves that one reader on each initializer), and the readers of
    its quantizer copies joined to it (it gives each node reading a bias several nodes read a copy
    of its own): merges, ties and repeated calls show only in who reads all of them."""
    if not copies:
        return readers
    through = {name: {r for node_id in nodes for r in copies.get(node_id, [node_id])} for name, nodes in readers.items()}
    for family in families:
        read = [name for name in family if name in through]
        joined = set().union(*(through[name] for name in read))
        for name in read:
            through[name] = joined
    return {name: sorted(nodes) for name, nodes in through.items()}


def _stand_ins(views: list[NodeView], copies: dict[int, list[int]], owners: dict[str, str]) -> dict[str, str]:
    """The output of each `DequantizeLinear` of a parameter, with the parameter it stands for: in
    the QDQ format the pair stands for the tensor it quantizes (onnxruntime's `quantize_static`
    hoists every weight's DequantizeLinear to the top of the graph, and the ops applying the
    weight read its output, named after no parameter)."""
    return {views[dq].output[0]: views[dq].input[0] for dq in copies if views[dq].input[0] in owners}


def _quantizer_copies(names: Iterable[str]) -> list[list[str]]:
    """The tensors a static quantizer made for one tensor several nodes read, each family with a
    numbered copy: it keeps the name for the first reader and gives each further one a copy
    named after it with a number (`bias` -> `bias0`, `bias1`; `qdq_quantizer._dup_initializer`),
    each with its quantized values, scale and zero point; so the tensor was read by all of
    their readers. Two parameters that merely end in digits (`lambda1`, `lambda2`) have no
    unnumbered one beside them."""
    families: dict[str, list[str]] = {}
    for name in names:
        families.setdefault(_quantized_from(name).rstrip("0123456789"), []).append(name)
    found = []
    for stem, members in families.items():
        made_for = {_quantized_from(name) for name in members}
        if stem in made_for and len(made_for) > 1:
            found.append(members)
    return found


def _made_for(owners: Iterable[str], merged: set[str], families: list[list[str]]) -> set[str]:
    """The tensors a static quantizer made for a merged one (its numbered copies, `families`,
    quantized values, scales and zero points): they stand for what it stands for, though each
    is read once."""
    if not merged:
        return set()
    stems = {_quantized_from(name) for name in merged}
    found = {name for name in owners if _quantized_from(name) in stems}
    for family in families:
        if not merged.isdisjoint(family):
            found.update(family)
    return found


def _entry_reads(context: Context, readers: dict[str, list[int]], named: dict[str, str]) -> dict[tuple[int, str], str]:
    """(node, parameter) -> the module a read of a list entry's parameter names where not its
    owner (`clones.py`): told by the true tree when known; else, in an untrained file (where
    clones may be merged), the outermost list for the reads after the first; else none."""
    facts = context.parameters
    if context.tree_origin:
        return clone_reads({n: readers[n] for n in named if n in readers}, named, context.modules)
    return later_reads(readers, named, facts.rereads) if facts.untrained else {}


def _owned(
    node_id: int, view: NodeView, owners: dict[str, str], merged: set[str], folded: set[str], clones, stand_ins: dict[str, str]
) -> list[str]:
    """The modules whose parameters node `node_id` applies, one per parameter it reads (in input
    order; a parameter's dequantized copy reads as the parameter): a clone's read goes to its list
    entry, a fused op's to its weight module's caller.
    (`propose` reads a node of the standard domain without clones or folded biases directly: none
    of that applies to it, and a call per node costs more at 100k nodes than the claims.)"""
    inputs = [stand_ins.get(name, name) for name in view.input] if stand_ins else view.input
    bias = fused_bias(view)
    bias = stand_ins.get(bias, bias) if bias else bias
    owned = [
        parent(owner) if name == bias else owner
        for name in inputs
        if name in owners and name not in merged
        for owner in [clones.get((node_id, name), owners[name])]
    ]
    if bias and len(owned) == 1 and bias in owners and bias not in merged:
        return []  # the fused bias alone: the norm it feeds is unnamed (see the module docstring)
    if owned and (applies_activation(view) or not folded.isdisjoint(merged.intersection(inputs))):
        owned = [parent(module) for module in owned]  # a fused op: its weight's module and the next one
    return owned


def _copy_of_another(view: NodeView, owners: dict[str, str]) -> bool:
    """Whether a node is TorchScript's copy of one parameter standing for another that the file
    no longer names. Its exporter keeps one initializer for equal tensors, named after the first
    parameter, whose own readers read it directly; each other parameter equal to it becomes an
    `Identity` of it named after that parameter, which its readers read. So an `Identity` of a
    parameter whose output names no parameter (a tool renamed it: a stripped file) is another
    parameter's, equal in value (the encoder's and the decoder's sinusoidal position tables of
    an encoder-decoder, a fresh model's merged biases): it names no module, nor do its readers."""
    return (
        view.op_type == "Identity"
        and len(view.input) == 1
        and view.input[0] in owners
        and all(module_of_parameter(name) is None for name in view.output)
    )


def _readers(index: ModelIndex, owners: dict[str, str]) -> dict[str, list[int]]:
    """The nodes reading each parameter, in index order (not a quantization parameter read for
    an activation: `_activation_quantization`)."""
    readers: dict[str, list[int]] = {}
    disjoint = owners.keys().isdisjoint  # one view for every node
    views = index.views
    lookups = _lookup_outputs(views)
    for node_id in [i for i, view in enumerate(views) if not disjoint(view.input)]:  # a comprehension: most read none
        view = views[node_id]
        skipped = _activation_quantization(view, index.graphs[index.graph_of[node_id]].initializers, lookups)
        for name in view.input:
            if name in owners and name not in skipped:
                found = readers.get(name)
                if found is None:
                    readers[name] = [node_id]
                elif found[-1] != node_id:  # a node reading it twice is one reader (ids ascend)
                    found.append(node_id)
    return readers


_OPERAND_QUANTIZATION: dict[str, tuple[tuple[int, tuple[int, ...]], ...]] = {
    "MatMulInteger": ((0, (2,)), (1, (3,))),
    "ConvInteger": ((0, (2,)), (1, (3,))),
    "QLinearMatMul": ((0, (1, 2)), (3, (4, 5)), (-1, (6, 7))),
    "QLinearConv": ((0, (1, 2)), (3, (4, 5)), (-1, (6, 7))),
}
"""Per quantized product (the ONNX definitions): each operand's position (-1: the output) and the
positions of the scale and zero point it is quantized with."""


_CONVERSIONS = frozenset({"QuantizeLinear", "DequantizeLinear"})
"""Ops converting their one operand (input 0) with the scale and zero point they read (1, 2)."""


def _lookup_outputs(views: list[NodeView]) -> frozenset[str]:
    """The outputs of the graph's lookups (`Gather`): rows of a table are the table's values."""
    return frozenset(view.output[0] for view in views if view.op_type == "Gather" and view.output)


def _activation_quantization(view: NodeView, initializers: frozenset[str], lookups: frozenset[str]) -> frozenset[str]:
    """The inputs of `view` that quantize an activation, not a parameter, whatever they are named:
    a product's scale or zero point belongs to the operand it quantizes, and one beside a computed
    operand (or the output) is that value's, while the product applies its other operand, the
    weight (onnxruntime's `quantize_dynamic` quantizes a lookup in a quantized embedding table
    with the table's scale and zero point: OPT's `project_in` reads them as its input's, not as
    the embedding's). A `QuantizeLinear` or `DequantizeLinear` converts its operand with them: of
    a stored tensor or of a lookup's rows (the table's values), a use of that tensor; of anything
    computed after, that value's (MPNet's encoder permutes the rows of its
    `relative_attention_bias`: `quantize_dynamic` keeps them int8 through the permute and
    dequantizes after it with the table's parameters, `quantize_static` quantizes the permute's
    output with them). A node reading the stored scales or zero points of two tensors and
    nothing else (the dynamic quantizer's product of its input's and its weight's scale, when the
    input is such a lookup) combines two operands' quantization: it applies neither's parameters."""
    inputs = view.input
    if view.op_type in _CONVERSIONS and inputs and inputs[0] not in initializers and inputs[0] not in lookups:
        return frozenset(inputs[1:3])
    layout = _OPERAND_QUANTIZATION.get(view.op_type)
    if layout is not None:
        return frozenset(
            inputs[k]
            for operand, params in layout
            if operand < 0 or (operand < len(inputs) and inputs[operand] not in initializers)
            for k in params
            if k < len(inputs)
        )
    stored = len(inputs) > 1 and all(name in initializers and name.endswith(("_scale", "_zero_point")) for name in inputs)
    if stored and len({_quantized_from(name) for name in inputs}) > 1:
        return frozenset(inputs)
    return frozenset()


def _folded_bias(name: str, owners: dict[str, str]) -> bool:
    """Whether `name` is a bias named after another tensor of its module (`w_bias` beside `w`, or
    beside `w_quantized` once a quantizer rewrote `w`): a fusion's new bias, not a parameter."""
    if not name.endswith("_bias"):
        return False
    stem = name[: -len("_bias")]
    return any(_quantized_from(other) == stem for other in owners)


_QUANTIZED = ("_quantized", "_quantized_scale", "_quantized_zero_point")
_QUANTIZER_TENSORS = ("_quantized", "_quantized_scale", "_quantized_zero_point", "_scale", "_zero_point")


def _quantized_from(name: str) -> str:
    """The tensor a static quantizer made `name` for (`w_quantized`, `w_scale`, `w_zero_point`,
    a bias's `b_quantized_scale`: `w`, `b`), or `name` itself."""
    for suffix in _QUANTIZER_TENSORS:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _unquantized(name: str) -> str:
    """The name a static quantizer derived `name` from (`w_bias_quantized` and its scale and zero
    point: `w_bias`), or `name` itself."""
    for suffix in _QUANTIZED:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _majority(owners: list[str]) -> str:
    counts = Counter(owners).most_common()
    if len(counts) == 1 or counts[0][1] > counts[1][1]:
        return counts[0][0]
    return lca_all(owners) or ""
