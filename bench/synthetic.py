"""Deterministic, realistic large models for the scale benchmark.

A stack of BERT-like encoder layers built with onnx.helper, 43 nodes a layer with the
auxiliary-op density of a real export (Shape/Gather/Unsqueeze/Concat/Reshape/Transpose around
attention), TorchScript-style scoped node and tensor names, and on every node the five
metadata entries torch 2.13's dynamo exporter writes (`namespace`, `class_hierarchy`,
`fx_node`, `name_scopes`, `stack_trace`; unique fx node names, fully qualified classes, sizes
as in a real BERT export). It runs in onnxruntime. `big_weights` adds one large MatMul whose
weights live in external data."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["build", "LAYER_NODES"]

HIDDEN = 8
HEADS = 2
SEQ = 4
LAYER_NODES = 43

# Shared constants, named as TorchScript names folded constants (no module path in them).
ZERO = "onnx::Gather_1"
AXES0 = "onnx::Unsqueeze_2"
SHAPE_TAIL = "onnx::Concat_3"
HEADS_SHAPE = "onnx::Reshape_4"
HIDDEN_SHAPE = "onnx::Reshape_5"
SCALE = "onnx::Div_6"


@dataclass
class _Builder:
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    calls: dict[str, int] = field(default_factory=dict)
    """fx node names are unique: `linear`, `linear_1`, ... (counted per label)."""
    lean: bool = False
    """No metadata; only every third node named with its scope, the others `node_<op>_<n>` (`val_<n>` outputs)."""

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], scope: str, classes: list[str], label: str, **attrs) -> str:
        """Add a node named like TorchScript, carrying the metadata dynamo writes; returns its output."""
        number = len(self.nodes)
        if self.lean and number % 3:
            name, output = f"node_{op}_{number}", f"val_{number}"
        else:
            name = f"{_slashed(scope)}/{op}_{number}"
            output = f"{name}_output_0"
        node = helper.make_node(op, inputs, [output], name=name, **attrs)
        self.nodes.append(node)
        if self.lean:
            return output
        fx_name = f"{label}_{self.calls.setdefault(label, 0)}"
        self.calls[label] += 1
        for key, value in _dynamo_metadata(_called_scopes(scope), classes, fx_name, label):
            node.metadata_props.add(key=key, value=value)
        return output


def _called_scopes(scope: str) -> list[str]:
    """The module paths dynamo's `name_scopes` lists: every module called on the way, not the
    ModuleList holding numbered layers (`encoder.layer`), which is never called."""
    parts = scope.split(".") if scope else []
    return [""] + [".".join(parts[: i + 1]) for i in range(len(parts)) if i + 1 == len(parts) or not parts[i + 1].isdigit()]


_FX_ARGS = "(args = (%hidden_states, %attention_mask, 1), kwargs = {})"


def _dynamo_metadata(scopes: list[str], classes: list[str], fx_name: str, label: str) -> list[tuple[str, str]]:
    """The five entries torch 2.13's dynamo exporter writes on every node, in its order and at
    the sizes of a real BERT export (about 1.7 kB a node, most of it the stack trace)."""
    target = f"aten.{label}.default"
    frames = "".join(
        f'  File "/usr/lib/python3.11/site-packages/transformers/models/bert/modeling_bert.py", line {100 + 37 * depth}, '
        f"in forward\n    hidden_states = self.{path.rpartition('.')[2] or 'encoder'}(hidden_states, attention_mask)\n"
        for depth, path in enumerate(scopes)
    )
    namespace = "/".join(f"{path}: {cls}" for path, cls in zip(scopes, classes, strict=False)) + f"/{fx_name}: {target}"
    return [
        ("namespace", namespace),
        ("pkg.torch.onnx.class_hierarchy", repr(classes[: len(scopes)] + [target])),
        ("pkg.torch.onnx.fx_node", f"%{fx_name} : [num_users=1] = call_function[target=torch.ops.{target}]{_FX_ARGS}"),
        ("pkg.torch.onnx.name_scopes", repr(scopes + [fx_name])),
        ("pkg.torch.onnx.stack_trace", frames.strip()),
    ]


def _slashed(scope: str) -> str:
    out: list[str] = []
    for part in scope.split(".") if scope else []:
        if part.isdigit() and out:
            out[-1] += f".{part}"
        else:
            out.append(part)
    return "/" + "/".join(out) if out else ""


_BERT_MODULE = "transformers.models.bert.modeling_bert."
_BERT = [_BERT_MODULE + "BertModel", _BERT_MODULE + "BertEncoder"]


def _linear(b: _Builder, x: str, scope: str, classes: list[str]) -> str:
    w = b.init(f"{scope}.weight", b.rng.standard_normal((HIDDEN, HIDDEN)).astype(np.float32) * 0.1)
    bias = b.init(f"{scope}.bias", b.rng.standard_normal(HIDDEN).astype(np.float32) * 0.1)
    lin = classes + ["torch.nn.modules.linear.Linear"]
    return b.node("Add", [b.node("MatMul", [x, w], scope, lin, "linear"), bias], scope, lin, "linear")


def _heads(b: _Builder, x: str, scope: str, classes: list[str], shape: str) -> str:
    """The view/transpose of one projection, with the Shape/Gather/Concat chain a real export has."""
    shp = b.node("Shape", [x], scope, classes, "sym_size")
    idx = b.node("Gather", [shp, ZERO], scope, classes, "select", axis=0)
    unsq = b.node("Unsqueeze", [idx, AXES0], scope, classes, "unsqueeze")
    b.node("Concat", [unsq, SHAPE_TAIL], scope, classes, "cat", axis=0)
    view = b.node("Reshape", [x, shape], scope, classes, "view")
    return b.node("Transpose", [view], scope, classes, "transpose", perm=[0, 2, 1, 3])


def _layer(b: _Builder, x: str, mask: str, layer: int) -> str:
    root = f"encoder.layer.{layer}"
    layer_cls = _BERT + [_BERT_MODULE + "BertLayer"]
    att = layer_cls + [_BERT_MODULE + "BertAttention"]
    self_cls = att + [_BERT_MODULE + "BertSelfAttention"]
    sa = f"{root}.attention.self"
    q = _heads(b, _linear(b, x, f"{sa}.query", self_cls), sa, self_cls, HEADS_SHAPE)
    k = _heads(b, _linear(b, x, f"{sa}.key", self_cls), sa, self_cls, HEADS_SHAPE)
    v = _heads(b, _linear(b, x, f"{sa}.value", self_cls), sa, self_cls, HEADS_SHAPE)
    kt = b.node("Transpose", [k], sa, self_cls, "transpose", perm=[0, 1, 3, 2])
    scores = b.node("Div", [b.node("MatMul", [q, kt], sa, self_cls, "matmul"), SCALE], sa, self_cls, "div")
    probs = b.node("Softmax", [b.node("Add", [scores, mask], sa, self_cls, "add")], sa, self_cls, "softmax", axis=-1)
    ctx = b.node("Transpose", [b.node("MatMul", [probs, v], sa, self_cls, "matmul")], sa, self_cls, "transpose", perm=[0, 2, 1, 3])
    ctx = b.node("Reshape", [ctx, HIDDEN_SHAPE], sa, self_cls, "view")
    out_cls = att + [_BERT_MODULE + "BertSelfOutput"]
    so = f"{root}.attention.output"
    h = b.node("Add", [_linear(b, ctx, f"{so}.dense", out_cls), x], so, out_cls, "add")
    h = _layer_norm(b, h, f"{so}.LayerNorm", out_cls)
    inter_cls = layer_cls + [_BERT_MODULE + "BertIntermediate"]
    it = f"{root}.intermediate"
    act_cls = inter_cls + ["transformers.activations.GELUActivation"]
    act = b.node("Gelu", [_linear(b, h, f"{it}.dense", inter_cls)], f"{it}.intermediate_act_fn", act_cls, "gelu")
    o_cls = layer_cls + [_BERT_MODULE + "BertOutput"]
    out = b.node("Add", [_linear(b, act, f"{root}.output.dense", o_cls), h], f"{root}.output", o_cls, "add")
    return _layer_norm(b, out, f"{root}.output.LayerNorm", o_cls)


def _layer_norm(b: _Builder, x: str, scope: str, classes: list[str]) -> str:
    gamma = b.init(f"{scope}.weight", np.ones(HIDDEN, dtype=np.float32))
    beta = b.init(f"{scope}.bias", np.zeros(HIDDEN, dtype=np.float32))
    norm = classes + ["torch.nn.modules.normalization.LayerNorm"]
    return b.node("LayerNormalization", [x, gamma, beta], scope, norm, "layer_norm", axis=-1)


def _constants(b: _Builder) -> None:
    b.init(ZERO, np.array(0, dtype=np.int64))
    b.init(AXES0, np.array([0], dtype=np.int64))
    b.init(SHAPE_TAIL, np.array([SEQ, HEADS, HIDDEN // HEADS], dtype=np.int64))
    b.init(HEADS_SHAPE, np.array([1, SEQ, HEADS, HIDDEN // HEADS], dtype=np.int64))
    b.init(HIDDEN_SHAPE, np.array([1, SEQ, HIDDEN], dtype=np.int64))
    b.init(SCALE, np.array(np.sqrt(HIDDEN // HEADS), dtype=np.float32))


def build(layers: int, big_weights: int = 0, lean: bool = False) -> onnx.ModelProto:
    """A model with `layers` encoder layers (~LAYER_NODES nodes each). With `big_weights` > 0,
    a final projection of that many float32 weights (stored as external data when saved with
    `onnx.save(..., save_as_external_data=True)`). `lean`: no metadata, a third of the nodes
    scoped (what a graph looks like after a tool dropped the metadata and most names)."""
    b = _Builder(lean=lean)
    _constants(b)
    mask = b.node("Cast", ["mask"], "", [_BERT[0]], "_to_copy", to=TensorProto.FLOAT)
    h = "x"
    for layer in range(layers):
        h = _layer(b, h, mask, layer)
    outputs, columns = [h], HIDDEN
    if big_weights:
        columns = max(1, big_weights // HIDDEN)
        w = b.init("head.weight", np.zeros((HIDDEN, columns), dtype=np.float32))
        outputs = [b.node("MatMul", [h, w], "head", [_BERT[0], "torch.nn.modules.linear.Linear"], "linear")]
    graph = helper.make_graph(
        b.nodes,
        f"bert_{layers}",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SEQ, HIDDEN]),
            helper.make_tensor_value_info("mask", TensorProto.INT64, [1, 1, 1, SEQ]),
        ],
        [helper.make_tensor_value_info(outputs[0], TensorProto.FLOAT, [1, SEQ, columns])],
        b.inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
