"""What a model requires of its inputs, read from the model alone: sizes of dynamic dims, id ranges.

A model with dynamic axes does not run on just any sizes: a cache and its mask must agree, a
conv's input channels must match its weight, ids must stay inside the tables they index. The
rules, each resting on something the file itself states:

1. **One symbol, one value.** Dims that carry the same `dim_param` are one size (the exporter
   wrote the same name because the model ties them); an unnamed dynamic dim is its own size,
   called `INPUT[AXIS]`.
2. **Expressions.** A `dim_param` that is an integer expression of other dim names
   (`past_sequence_length + sequence_length`, as optimum writes a cached decoder's mask; `s0 + s1`,
   as the dynamo exporter writes derived sizes) takes the value of that expression.
3. **Weights met.** Followed from the input through ops that keep its shape (`Cast`,
   `Identity`, unary element-wise ops, element-wise ops with a weight), the first op that reads a
   weight fixes the axes that op ties to it: a Conv's input channels (`W.dims[1] * group`),
   ConvTranspose's (`W.dims[0]`), a normalization's channels or normalized dims, MatMul/Gemm's
   contracted dim, an element-wise weight's dims above 1. A weight is an initializer or a
   `Constant` of any graph.
4. **Sizes the graph accepts.** A Conv's spatial axes are at least its (dilated, unpadded)
   kernel. When onnxruntime's symbolic shape inference refuses the sizes chosen (a ViT adds a
   fixed position table after its patch conv: one image size fits), those axes grow together
   by the conv's stride until it accepts them (at most `_SEARCH_STEPS` tries).
5. **Stated beside the model.** A symbol no weight fixes takes the size the config files beside
   the model state (`tagger.inputs.stated_sizes`: an optimum export's image size and channels, an
   onnxruntime-genai output's head size and KV heads); a size above a stated limit (genai's
   `context_length`) is refused.
6. **Given sizes win**: `dim` `NAME=VALUE` (`--dim NAME=VALUE`) sets a symbol (or an expression's
   whole name); everything else, the default (`dim` N, 1).
7. **Id ranges.** An integer input followed through ops that only move or copy values
   (`Cast`, `Unsqueeze`, `Reshape`, `Gather` data, `Concat`, ...) into the indices of a `Gather`
   whose data is a weight must stay below that table's size on the gathered axis; the smallest
   table wins. Inputs that reach no table keep 0/1, valid for any table of two rows.
8. **Other sizes when a run is refused.** Shape inference may accept a conv-spatial size that a
   run refuses (a Swin's window Reshape takes one grid only): the plan lists larger sizes of
   those symbols (`InputPlan.alternatives`: the next steps of the stride, doubling, the common
   image sizes), and `tagger.inputs.feeds.first_that_runs` tries them before giving up.

Where the file states no relation (a mask whose length is named `total_sequence_length` with
nothing tying it to the cache's name), the sizes stay independent; onnxruntime then refuses the
inputs and `tagger.inputs.feeds.refusal` says which input and how to set the size.

This module decides the plan; what the weights an input reaches say (rules 3, 4's kernel bound,
7) is read by `tagger.inputs.input_weights`, and the sizes given (rule 6) arrive as
`tagger.inputs.dim_settings.DimSettings`.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from tagger.errors import InputError, ParameterError, param
from tagger.inputs.dim_settings import DimSettings
from tagger.inputs.input_weights import InputWeights
from tagger.inputs.stated_sizes import StatedSizes, stated_sizes
from tagger.inputs.symbolic_shapes import infer_symbolic, weights_as_inputs

__all__ = ["InputPlan", "plan_inputs"]


@dataclass
class InputPlan:
    """The shape of every graph input, the value chosen per symbol and why, and id bounds."""

    shapes: dict[str, tuple[int, ...]]
    dims: dict[str, int]
    reasons: dict[str, str]
    id_bounds: dict[str, int]
    """Integer input -> exclusive upper bound of its values (the smallest table it indexes)."""
    alternatives: list[dict[str, int]] = field(default_factory=list)
    """Other sizes of the conv-spatial symbols to try when onnxruntime refuses these (rule 8)."""


_NOTHING_GIVEN = DimSettings()
"""The default for every dynamic dim, no size per symbol."""


def plan_inputs(model: onnx.ModelProto, settings: DimSettings = _NOTHING_GIVEN, base_dir: Path | None = None) -> InputPlan:
    """Decide every dynamic dim of the graph inputs and every integer input's range (rules above);
    `base_dir`: the model's directory, whose config files may state sizes (`tagger.inputs.stated_sizes`)."""
    facts = InputWeights(model)
    inputs = _graph_inputs(model)
    keys = {value.name: _dim_keys(value) for value in inputs}
    known = {key for dims in keys.values() for key in dims if isinstance(key, str)}
    expressions = {key: parsed for key in known if (parsed := _expression(key)) is not None}
    referenced = {name for names in expressions.values() for name in names[1]}
    unknown = sorted(set(settings.named) - known - referenced)
    if unknown:
        choices = ", ".join(sorted(known | referenced)) or "none: every dim is static"
        raise ParameterError("dim", f"names no dim of the model's inputs: {', '.join(unknown)} (its dims: {choices})")
    required, lower = facts.weight_sizes(keys)
    stated = stated_sizes(base_dir, keys)
    dims: dict[str, int] = {}
    reasons: dict[str, str] = {}
    for key in sorted((known - set(expressions)) | referenced):
        dims[key], reasons[key] = _choose(key, settings, required, stated, lower)
    searched = {key: lower[key] for key in lower if reasons[key] in ("default", "at least the conv's kernel")}
    if searched:
        _search_spatial(model, keys, dims, reasons, searched)
    for key, (tree, _) in expressions.items():
        if key in settings.named:
            dims[key], reasons[key] = settings.named[key], "given"
            continue
        dims[key] = _evaluate(tree, dims)
        reasons[key] = "expression"
        if dims[key] < 0:
            evaluated = f"dim {key!r} evaluates to {dims[key]} with {_listing(dims)}"
            raise InputError(f"{evaluated}; set its parts with {param('dim')} NAME=VALUE")
    _check_limits(dims, stated.limits)
    shapes = {name: tuple(key if isinstance(key, int) else dims[key] for key in dim_keys) for name, dim_keys in keys.items()}
    bounds = {v.name: bound for v in inputs if _is_integer(v) and (bound := facts.id_bound(v.name)) is not None}
    return InputPlan(shapes, dims, reasons, bounds, _alternatives(dims, searched))


def _choose(
    key: str,
    settings: DimSettings,
    required: Mapping[str, tuple[int, str]],
    stated: StatedSizes,
    lower: Mapping[str, tuple[int, int]],
) -> tuple[int, str]:
    """A symbol's size and why: given, tied to a weight, stated beside the model, else the default
    (at least a conv's kernel)."""
    if key in settings.named:
        return settings.named[key], "given"
    if key in required:
        return required[key]
    if key in stated.sizes:
        return stated.sizes[key]
    size = max(settings.default, lower.get(key, (0, 0))[0])
    return size, "default" if size == settings.default else "at least the conv's kernel"


def _check_limits(dims: Mapping[str, int], limits: Mapping[str, tuple[int, str]]) -> None:
    for key, (largest, reason) in limits.items():
        if dims.get(key, 0) > largest:
            exceeds = f"dim {key}={dims[key]} exceeds {largest}, the {reason}"
            raise InputError(f"{exceeds}; set a smaller one with {param('dim')} {key}=VALUE")


_RETRIES = 12
"""How many other sizes of the conv-spatial symbols are tried when onnxruntime refuses a run."""
_COMMON_SIZES = (224, 256, 384, 512)
"""Image sizes models are commonly made for."""


def _alternatives(dims: Mapping[str, int], searched: Mapping[str, tuple[int, int]]) -> list[dict[str, int]]:
    """Larger sizes of the conv-spatial symbols to try, in order, when onnxruntime refuses a run
    that shape inference accepted (a Swin's window Reshape takes one grid only): the next few
    steps of the stride, then doubling, then the common image sizes; at most `_RETRIES`."""
    if not searched:
        return []
    first = next(iter(searched))
    least, stride = searched[first]
    targets = {least + k * stride for k in range(1, 8)} | {least << k for k in range(1, 9)} | set(_COMMON_SIZES)
    trials: list[dict[str, int]] = []
    for target in sorted(t for t in targets if t > dims[first]):
        trial = {key: _on_grid(target, *searched[key]) for key in searched}
        if trial not in trials:
            trials.append(trial)
    return trials[:_RETRIES]


def _on_grid(target: int, least: int, stride: int) -> int:
    """The smallest size at least `target` that a conv of kernel extent `least` and `stride` covers exactly."""
    return least + max(0, -(-(target - least) // stride)) * stride


_SEARCH_STEPS = 64
"""How many sizes per conv-spatial symbol the search tries (a ViT-L at 384 px, patch 16, is the 24th)."""


def _search_spatial(
    model: onnx.ModelProto,
    keys: Mapping[str, list[int | str]],
    dims: dict[str, int],
    reasons: dict[str, str],
    searched: Mapping[str, tuple[int, int]],
) -> None:
    """Conv-spatial sizes the rest of the graph accepts: a ViT adds a fixed position table after
    its patch conv, so only one image size fits. When onnxruntime's symbolic shape inference
    refuses the sizes chosen, the searched symbols grow together from the kernel by the stride
    until it accepts them; if none is accepted, the sizes stay as they were."""
    if _accepted(model, keys, dims):
        return
    for step in range(_SEARCH_STEPS):
        trial = {**dims, **{key: least + step * stride for key, (least, stride) in searched.items()}}
        if _accepted(model, keys, trial):
            dims.update(trial)
            reasons.update((key, "the size shape inference accepts") for key in searched)
            return


def _accepted(model: onnx.ModelProto, keys: Mapping[str, list[int | str]], dims: Mapping[str, int]) -> bool:
    """Whether onnxruntime's symbolic shape inference runs through the graph with these input
    sizes (True when it is not installed: nothing says otherwise). Weights are not read."""
    trial = weights_as_inputs(model)
    graph = trial.graph
    del graph.value_info[:]
    for value in graph.input:
        for dim, key in zip(value.type.tensor_type.shape.dim, keys.get(value.name, ()), strict=False):
            size = key if isinstance(key, int) else dims.get(key)
            if size is not None:  # an expression's dim stays symbolic here
                dim.dim_value = size
    try:
        infer_symbolic(trial, auto_merge=False, partial=False)
    except ImportError:
        return True
    except Exception:  # noqa: BLE001 - any refusal of the sizes means "not accepted"
        return False
    return True


def _listing(dims: Mapping[str, int]) -> str:
    return ", ".join(f"{key}={value}" for key, value in dims.items())


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def _is_integer(value: onnx.ValueInfoProto) -> bool:
    elem_type = value.type.tensor_type.elem_type
    if elem_type in (0, onnx.TensorProto.BOOL):
        return False
    try:
        return bool(np.issubdtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type), np.integer))
    except (KeyError, TypeError, ValueError):
        return False


def _dim_keys(value: onnx.ValueInfoProto) -> list[int | str]:
    """Per axis: the static size, the symbol, or `INPUT[AXIS]` for an unnamed dynamic dim."""
    if value.type.WhichOneof("value") != "tensor_type":
        raise InputError(f"cannot make a feed for input {value.name!r}: not a tensor")
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        unknown = f"cannot make a feed for input {value.name!r}: its rank is unknown"
        raise InputError(f"{unknown}; pass arrays with {param('inputs')} NPZ")
    keys: list[int | str] = []
    for axis, dim in enumerate(tensor_type.shape.dim):
        if dim.HasField("dim_value"):
            keys.append(dim.dim_value)
        else:
            keys.append(dim.dim_param.strip() if dim.dim_param.strip() else f"{value.name}[{axis}]")
    return keys


_ALLOWED = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.USub, ast.Name, ast.Load)


def _expression(text: str) -> tuple[ast.Expression, frozenset[str]] | None:
    """An integer expression over other dim names (not a bare name), or None."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return None
    if isinstance(tree.body, ast.Name):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            continue
        if not isinstance(node, _ALLOWED):
            return None
    return tree, frozenset(node.id for node in ast.walk(tree) if isinstance(node, ast.Name))


def _evaluate(tree: ast.Expression, dims: Mapping[str, int]) -> int:
    def value(node: ast.AST) -> int:
        if isinstance(node, ast.Constant):
            return int(node.value)
        if isinstance(node, ast.Name):
            return dims[node.id]
        if isinstance(node, ast.UnaryOp):
            return -value(node.operand)
        assert isinstance(node, ast.BinOp)
        left, right = value(node.left), value(node.right)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        return left // right if right else 0

    return value(tree.body)
