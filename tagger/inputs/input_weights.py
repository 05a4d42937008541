"""What the weights a graph input reaches say of it: the sizes of its axes, the range of its values.

Rules 3, 4 and 7 of `tagger.inputs.input_rules`, read from the graph alone (any graph: bodies read outer
names directly; a weight is an initializer or a `Constant` of any graph):

- followed through ops that keep its shape, the first op reading a weight ties some axes of the
  input to that weight's dims (`_TIE_RULES`, one function per op), and a Conv bounds its spatial
  axes below by its kernel, growing by its stride (`InputWeights.weight_sizes`);
- followed through ops that only move or copy values, an integer input indexing a `Gather` table
  stays below the table's size on the gathered axis (`InputWeights.id_bound`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping

import onnx

from tagger.model.index import graphs_within

__all__ = ["InputWeights"]

_SAME_SHAPE = frozenset(
    {"Identity", "Cast", "CastLike", "Dropout", "Relu", "Sigmoid", "Tanh", "Neg", "Abs", "Sqrt", "Exp", "Log", "Erf", "Softmax"}
)
"""Ops whose first output has the shape of their first input."""
_ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Where"})
"""Broadcasting element-wise ops: a weight operand ties the axes where its dims are above 1."""
_SAME_VALUES_FIRST = frozenset(
    {"Identity", "Cast", "CastLike", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Expand", "Transpose", "Slice", "Tile", "Split"}
)
"""Ops whose outputs hold only values of their first input (ids keep their range through them)."""


class InputWeights:
    """Who reads each tensor (any graph; bodies read outer names directly) and the weights' dims."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        self.weights: dict[str, tuple[int, ...]] = {}
        for graph in graphs_within(model.graph):
            for tensor in graph.initializer:
                self.weights[tensor.name] = tuple(tensor.dims)
            for node in graph.node:
                for name in node.input:
                    if name:
                        self.consumers[name].append(node)
                if node.op_type == "Constant" and node.output:
                    for attribute in node.attribute:
                        if attribute.name == "value" and attribute.type == onnx.AttributeProto.TENSOR:
                            self.weights[node.output[0]] = tuple(attribute.t.dims)

    # ---------------------------------------------------------------- sizes from weights

    def weight_sizes(self, keys: Mapping[str, list[int | str]]) -> tuple[dict[str, tuple[int, str]], dict[str, tuple[int, int]]]:
        """Symbol -> (size, reason) fixed by a weight; symbol -> (least size, step): a conv's
        spatial axis is at least its kernel and grows by its stride."""
        required: dict[str, tuple[int, str]] = {}
        lower: dict[str, tuple[int, int]] = {}
        for name, dim_keys in keys.items():
            for node, position in self._shape_keeping_readers(name, len(dim_keys)):
                for axis, size, step in self._ties(node, position, len(dim_keys)):
                    key = dim_keys[axis]
                    if isinstance(key, int):
                        continue
                    if step:
                        least, known_step = lower.get(key, (0, step))
                        lower[key] = (max(least, size), max(known_step, step))
                    elif key not in required:
                        required[key] = (size, f"{node.op_type} {node.name or '(unnamed)'}")
        return required, lower

    def _shape_keeping_readers(self, name: str, rank: int) -> Iterator[tuple[onnx.NodeProto, int]]:
        """(node, input position) of every reader of `name` or of a same-shape copy of it."""
        seen = {name}
        todo = [name]
        while todo:
            tensor = todo.pop()
            for node in self.consumers.get(tensor, []):
                for position, read in enumerate(node.input):
                    if read != tensor:
                        continue
                    yield node, position
                    if node.output and self._keeps_shape(node, position, rank) and node.output[0] not in seen:
                        seen.add(node.output[0])
                        todo.append(node.output[0])

    def _keeps_shape(self, node: onnx.NodeProto, position: int, rank: int) -> bool:
        if node.op_type in _SAME_SHAPE:
            return position == 0
        if node.op_type in _ELEMENTWISE and node.domain in ("", "ai.onnx"):
            others = [self.weights.get(other) for i, other in enumerate(node.input) if i != position]
            return all(dims is not None and len(dims) <= rank for dims in others)  # broadcast against smaller weights only
        return False

    def _ties(self, node: onnx.NodeProto, position: int, rank: int) -> Iterator[tuple[int, int, int]]:
        """(axis of the input, size, step) that `node` ties to its weights: the axis is `size`
        (step 0), or at least `size` and grows by `step`."""
        rule = _TIE_RULES.get(node.op_type)
        if rule is None or node.domain not in ("", "ai.onnx") or rank == 0:
            return
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        weights = [self.weights.get(name) for name in node.input]
        yield from rule(weights, position, rank, attrs)

    # ---------------------------------------------------------------- id ranges

    def id_bound(self, name: str) -> int | None:
        """The smallest table size among the `Gather`s whose indices carry `name`'s values."""
        bound: int | None = None
        seen = {name}
        todo = [name]
        while todo:
            tensor = todo.pop()
            for node in self.consumers.get(tensor, []):
                if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == tensor:
                    table = self.weights.get(node.input[0])
                    if table:
                        axis = _axis(node, len(table))
                        bound = table[axis] if bound is None else min(bound, table[axis])
                    continue
                carries = node.op_type == "Concat" or (
                    node.op_type in (*_SAME_VALUES_FIRST, "Gather") and node.input and node.input[0] == tensor
                )
                if not carries:
                    continue
                for output in node.output:
                    if output and output not in seen:
                        seen.add(output)
                        todo.append(output)
        return bound


_Weights = list[tuple[int, ...] | None]
"""The dims of each input of a node that is a weight, None for the others."""


def _conv_ties(weights: _Weights, position: int, rank: int, attrs: Mapping) -> Iterator[tuple[int, int, int]]:
    weight = weights[1] if len(weights) > 1 else None
    if position != 0 or weight is None or len(weight) != rank or rank < 3:
        return
    yield 1, weight[1] * int(attrs.get("group", 1)), 0
    yield from _kernel_bounds(weight, attrs, rank)


def _conv_transpose_ties(weights: _Weights, position: int, rank: int, attrs: Mapping) -> Iterator[tuple[int, int, int]]:
    weight = weights[1] if len(weights) > 1 else None
    if position == 0 and weight is not None and len(weight) == rank and rank >= 3:
        yield 1, weight[0], 0


def _channel_norm_ties(weights: _Weights, position: int, rank: int, attrs: Mapping) -> Iterator[tuple[int, int, int]]:
    scale = weights[1] if len(weights) > 1 else None
    if position == 0 and scale and rank >= 2:
        yield 1, scale[0], 0


def _layer_norm_ties(weights: _Weights, position: int, rank: int, attrs: Mapping) -> Iterator[tuple[int, int, int]]:
    scale = weights[1] if len(weights) > 1 else None
    if position != 0 or scale is None:
        return
    start = int(attrs.get("axis", -1)) % rank
    for offset, size in enumerate(scale[-(rank - start) :] if scale else ()):
        yield start + offset, size, 0


def _matmul_ties(weights: _Weights, position: int, rank: int, attrs: Mapping) -> Iterator[tuple[int, int, int]]:
    other = weights[1 - position] if len(weights) == 2 and position in (0, 1) else None
    if other is None or len(other) != 2:
        return
    if position == 0:
        yield rank - 1, other[0], 0
    elif rank >= 2:
        yield rank - 2, other[1], 0


def _gemm_ties(weights: _Weights, position: int, rank: int, attrs: Mapping) -> Iterator[tuple[int, int, int]]:
    weight = weights[1] if len(weights) > 1 else None
    if position == 0 and weight is not None and len(weight) == 2 and rank == 2:
        yield (0 if attrs.get("transA") else 1), weight[1 if attrs.get("transB") else 0], 0


def _elementwise_ties(weights: _Weights, position: int, rank: int, attrs: Mapping) -> Iterator[tuple[int, int, int]]:
    for i, dims in enumerate(weights):
        if i == position or dims is None or len(dims) > rank:
            continue
        for offset, size in enumerate(dims):
            if size > 1:
                yield rank - len(dims) + offset, size, 0


_TIE_RULES = {
    "Conv": _conv_ties,
    "ConvTranspose": _conv_transpose_ties,
    "BatchNormalization": _channel_norm_ties,
    "InstanceNormalization": _channel_norm_ties,
    "LayerNormalization": _layer_norm_ties,
    "MatMul": _matmul_ties,
    "Gemm": _gemm_ties,
    **dict.fromkeys(_ELEMENTWISE, _elementwise_ties),
}
"""Per op, the axes of an input that its weights fix (standard domain only)."""


def _axis(node: onnx.NodeProto, rank: int) -> int:
    for attribute in node.attribute:
        if attribute.name == "axis":
            return attribute.i % rank
    return 0


def _kernel_bounds(weight: tuple[int, ...], attrs: Mapping[str, object], rank: int) -> Iterator[tuple[int, int, int]]:
    """A Conv's spatial input sizes are at least its dilated kernel, less its explicit pads, and
    the sizes it covers exactly grow by its stride."""
    spatial = rank - 2
    dilations = list(attrs.get("dilations") or [1] * spatial)  # type: ignore[call-overload]
    strides = list(attrs.get("strides") or [1] * spatial)  # type: ignore[call-overload]
    pads = list(attrs.get("pads") or [0] * (2 * spatial))  # type: ignore[call-overload]
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        return
    for i in range(spatial):
        extent = dilations[i] * (weight[2 + i] - 1) + 1 - pads[i] - pads[i + spatial]
        yield 2 + i, max(extent, 1), max(int(strides[i]), 1)
