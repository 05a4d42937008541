"""The graph the rules read: what the caller knows beyond labels (`GraphFacts`), and the dataflow
by position, built once (`Graph`: who reads whom, what kind of op each node is, which nodes are
computed from constants alone)."""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field

import onnx

from tagger.model.contrib import CONTRIB_DOMAIN
from tagger.model.index import NodeView

__all__ = [
    "NORMS",
    "PRODUCTS",
    "RESHAPES",
    "RESIDUAL_NORMS",
    "SAME_SHAPE",
    "SHAPE_READS",
    "WEIGHTED_OPS",
    "Graph",
    "GraphFacts",
    "tensor_shapes",
]

_ORDERED_SHARE = 0.3
RESHAPES = frozenset({"Reshape", "Flatten"})
SHAPE_READS = frozenset({"Shape", "Size"})
"""Ops that read only their input's shape: any module holding a value may read it, so such a
read is no computation of the value's module (rules 2 and 4)."""
SIZE_ARITHMETIC = frozenset(
    {"Gather", "Slice", "Squeeze", "Unsqueeze", "Concat", "Cast", "Add", "Sub", "Mul", "Div", "Mod", "Neg", "Min", "Max",
     "Floor", "Ceil", "Reshape", "Transpose", "Identity", "Equal", "Where", "ConstantOfShape"}
)  # fmt: skip
"""Ops that compute a size from sizes (dimensions picked, combined, converted; a pad list built)."""
WEIGHTED_OPS = frozenset(
    {"MatMul", "Gemm", "Conv", "ConvTranspose", "MatMulInteger", "ConvInteger", "QLinearMatMul", "MatMulNBits"}
)
"""Ops that apply a weight to their input (a quantized conv's rescale `Mul` reads a weight's scale
but applies no weight; onnxruntime's int4 `MatMulNBits` applies its packed weight as MatMul did)."""
PRODUCTS = WEIGHTED_OPS
NORMS = frozenset(
    {
        "LayerNormalization",
        "BatchNormalization",
        "InstanceNormalization",
        "GroupNormalization",
        "RMSNormalization",
        "SimplifiedLayerNormalization",
    }
)
"""Norm ops: one applies a norm module's parameters (its weight and bias) to its input."""
RESIDUAL_NORMS = frozenset({"SkipLayerNormalization", "SkipSimplifiedLayerNormalization"})
"""onnxruntime's norms fused with the residual sum before them (`tagger.model.contrib`)."""
SAME_SHAPE = NORMS | RESIDUAL_NORMS | {
    "Cast",
    "Identity",
    "Dropout",
    "Relu",
    "Gelu",
    "FastGelu",
    "BiasGelu",
    "Tanh",
    "Sigmoid",
    "Erf",
    "Softmax",
    "Neg",
}
"""Ops whose (first) output has the shape of their first input (ONNX's and onnxruntime's definitions)."""


@dataclass(frozen=True)
class GraphFacts:
    """What inference may know beyond labels: modules with children, weight-like constants,
    module lists (which own no op: an inferred list becomes its parent), and tensor ranks."""

    containers: set[str] = field(default_factory=set)
    weights: frozenset[str] = frozenset()
    """Initializers that are weights of no module the file names: unnamed folded or transposed
    parameters (`val_103`), and names that may stand for several merged parameters; and the values
    standing for one of them (an `Identity` or `DequantizeLinear` of it)."""
    sequences: set[str] = field(default_factory=set)
    ranks: dict[str, int] = field(default_factory=dict)
    """Rank of a tensor where the file records its shape (value_info, graph inputs/outputs)."""
    shape_lengths: dict[str, int] = field(default_factory=dict)
    """Length of 1-D integer initializers (Reshape targets): the rank a Reshape produces."""
    reshaped: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Recorded shapes, every dimension a number, of the tensors a Reshape or Flatten reads or
    writes: whether a reshape after a Linear restores what its flatten read."""
    parameters: frozenset[str] = frozenset()
    """Initializers named by a parameter path (and not merged): two nodes reading one are two calls."""
    arguments: frozenset[str] = frozenset()
    """Graph inputs that are no initializer: the model's arguments, values from outside every module."""
    resorted: bool = False
    """The file was saved by a tool that sorts every graph breadth-first (`tagger.model.producers`):
    its order is not the exporter's."""


class Graph:
    """Dataflow by position, built once: who reads whom, and what kind of op each node is."""

    def __init__(self, nodes: Sequence[NodeView], facts: GraphFacts) -> None:
        producer: dict[str, int] = {}
        writers: list[tuple[int, ...]] = []
        readers: list[list[int]] = [[] for _ in nodes]
        get = producer.get
        produced = functools.partial(operator.is_not, None)
        for i, node in enumerate(nodes):
            found = tuple(filter(produced, map(get, node.input)))
            writers.append(found)
            for j in found:
                read = readers[j]
                if not read or read[-1] != i:
                    read.append(i)
            for name in node.output:
                if name:
                    producer[name] = i
        self.writers = writers
        self.readers: list[tuple[int, ...]] = list(map(tuple, readers))  # half a list's bytes; most nodes have one reader
        self.op = [node.op_type for node in nodes]
        self.constant = _constants(writers, self.readers, [node.input for node in nodes])
        weights = facts.weights
        self.weighted = [node.op_type in WEIGHTED_OPS and not weights.isdisjoint(node.input) for node in nodes]
        self.normed = [node.op_type in NORMS and not weights.isdisjoint(node.input) for node in nodes]
        """Norm ops applying a weight the file does not name (a fresh export's merged parameters)."""
        self.tool_made = [_made_by_tool(node.op_type, node.domain) for node in nodes]
        """Ops no exporter writes: a later tool made the node and put it where its sort landed it."""
        self.nodes = nodes
        self.facts = facts

    @functools.cached_property
    def shape_values(self) -> list[bool]:
        """Per node, whether its value is computed from shape reads alone: a `Shape` or `Size`,
        or a node whose computed inputs (constants aside) are all such values."""
        return self._from_shape_reads(None)

    @functools.cached_property
    def sizes(self) -> list[bool]:
        """Per node, whether its value is a size: a `Shape` or `Size`, or index arithmetic
        (`SIZE_ARITHMETIC`) on sizes and constants alone - not a value computed from sizes, such
        as the positions a `Range` makes or the rotary table computed from them."""
        return self._from_shape_reads(SIZE_ARITHMETIC)

    def _from_shape_reads(self, through: frozenset[str] | None) -> list[bool]:
        """Per node, whether it is a shape read or computes from such values and constants alone,
        by ops of `through` only (None: any op)."""
        found = [False] * len(self.nodes)
        for i, writers in enumerate(self.writers):
            if self.op[i] in SHAPE_READS:
                found[i] = True
                continue
            if through is not None and self.op[i] not in through:
                continue
            computed = [j for j in writers if not self.constant[j]]
            found[i] = bool(computed) and all(found[j] for j in computed)
        return found

    def lookup(self, k: int) -> tuple[str, str] | None:
        """Node `k`'s table and indices when it is a lookup (`Gather`), else None."""
        inputs = self.nodes[k].input
        return (inputs[0], inputs[1]) if self.op[k] == "Gather" and len(inputs) > 1 else None

    def ordered(self) -> bool:
        """Whether the file keeps the exporter's order (fact A's check, see `flows.py`)."""
        linked = total = 0
        for i, writers in enumerate(self.writers):
            if writers:
                total += 1
                linked += (i - 1) in writers
        return total == 0 or linked >= _ORDERED_SHARE * total


@functools.cache
def _made_by_tool(op_type: str, domain: str) -> bool:
    """Whether an op is one no exporter writes: onnxruntime's contrib ops (`com.microsoft`) and
    the fused ops it registers in the ONNX domain without an ONNX schema
    (`SimplifiedLayerNormalization`). Its place in the order is the tool's, not the exporter's."""
    if domain == CONTRIB_DOMAIN:
        return True
    return domain in ("", "ai.onnx") and not onnx.defs.has(op_type)


def _constants(writers: list[tuple[int, ...]], readers: list[tuple[int, ...]], inputs: list[tuple[str, ...]]) -> list[bool]:
    """Nodes computed from constants alone (a `Constant`, a `ConstantOfShape` of one): they
    depend on nothing that runs, so their place in the order means nothing (fact A). Found in
    waves from the nodes without inputs, through readers only: the many nodes no constant
    reaches are never looked at. A node's writers come before it, so a wave looked at in order
    settles the writers first; a node seen before a writer turned constant is seen again with it."""
    constant = list(map(operator.not_, map(any, inputs)))  # no input at all: a `Constant`
    wave = list(itertools.compress(range(len(constant)), constant))
    while wave:
        found = []
        for i in sorted(set(itertools.chain.from_iterable(map(readers.__getitem__, wave)))):
            made = writers[i]
            if not constant[i] and all(map(constant.__getitem__, made)):
                names = inputs[i]
                if len(made) == len(names) - names.count(""):
                    constant[i] = True
                    found.append(i)
        wave = found
    return constant


def tensor_shapes(model: onnx.ModelProto) -> tuple[dict[str, int], dict[str, int], dict[str, tuple[int, ...]]]:
    """Ranks of the main graph's tensors whose shape the file records, the lengths of its 1-D
    integer initializers (Reshape targets), and the full recorded shapes around its reshapes:
    what `_restores` compares."""
    graph = model.graph
    recorded = [
        info
        for info in (*graph.value_info, *graph.input, *graph.output)
        if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape")
    ]
    ranks = {info.name: len(info.type.tensor_type.shape.dim) for info in recorded}
    lengths = {
        tensor.name: tensor.dims[0]
        for tensor in graph.initializer
        if len(tensor.dims) == 1 and tensor.data_type == onnx.TensorProto.INT64
    }
    around = {name for node in graph.node if node.op_type in RESHAPES for name in (*node.input[:1], *node.output[:1])}
    reshaped = {
        info.name: tuple(d.dim_value for d in info.type.tensor_type.shape.dim)
        for info in recorded
        if info.name in around and all(d.HasField("dim_value") and d.dim_value > 0 for d in info.type.tensor_type.shape.dim)
    }
    return ranks, lengths, reshaped
