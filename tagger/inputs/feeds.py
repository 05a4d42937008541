"""Feeds for a model's graph inputs: read from an `.npz`, or generated from the model alone.

`profile` and `extract --verify` run a model without knowing its architecture. Generated feeds
are valid rather than realistic:

1. shapes follow `tagger.inputs.input_rules` (one value per symbol, expressions of symbols, sizes tied
   to the weights an input meets, `--dim NAME=VALUE` and `--dim N` for the rest);
2. floating-point inputs are standard-normal (a fixed seed, so a run is reproducible);
3. integer inputs that index a table stay below its size; others are 0 or 1 (valid token
   types, masks and indices of any table with two rows); booleans are random.

Generated sizes also follow what the config files beside the model state (`tagger.inputs.stated_sizes`);
and when onnxruntime refuses generated feeds, `first_that_runs` tries the plan's other sizes
(`tagger.inputs.input_rules` rule 8), then each symbol left at the default size raised by one, then
set to 0 where no output's dim is that symbol alone (`_other_sizes`: a mask over past and new
tokens whose length the file does not tie to them; an empty cache), before giving up.

When onnxruntime refuses the feeds, `refusal` turns its message into one line that names the
node, the inputs it reads, the sizes used, and how to give others (parameters `dim`, `inputs`). When it
cannot even load the model (a tool wrote a file it refuses: onnxconverter-common's fp16 with
`keep_io_types`, its own optimizer's reused initializer names), `load_refusal` makes its first line
the error: the file is bad input (exit 2), whichever command ran it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnx
from onnx import TensorProto

from tagger.errors import InputError, param
from tagger.inputs.dim_settings import DimSettings, parse_dim_option
from tagger.inputs.input_rules import InputPlan, plan_inputs
from tagger.model.index import graphs_within

__all__ = [
    "DimSettings",
    "Feeds",
    "Refused",
    "first_that_runs",
    "load_feeds",
    "load_refusal",
    "make_feeds",
    "model_feeds",
    "onnxruntime_message",
    "parse_dim_option",
    "refusal",
]

_INPUTS_NAMED = 4
"""How many inputs a refusal line names before it says how many more."""


class Refused(InputError):
    """onnxruntime refused to run the model on the feeds (it loaded the model)."""


@dataclass
class Feeds(Mapping[str, np.ndarray]):
    """Arrays by graph input name; `dims` the size chosen per symbol; `origin` where they came from;
    `alternatives` the feeds to try, in order, when onnxruntime refuses these (generated only)."""

    arrays: dict[str, np.ndarray]
    dims: dict[str, int] = field(default_factory=dict)
    origin: str = "generated"
    alternatives: Callable[[], Iterator[Feeds]] | None = field(default=None, repr=False, compare=False)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.arrays)

    def __len__(self) -> int:
        return len(self.arrays)


def model_feeds(
    model: onnx.ModelProto,
    inputs: str | os.PathLike | None = None,
    dims: DimSettings | int | str | dict = 1,
    seed: int = 0,
    base_dir: str | os.PathLike | None = None,
) -> Feeds:
    """The arrays of the `.npz` at `inputs`, or feeds generated for `model` with `dims` (and the
    sizes stated by the config files in `base_dir`, the model's directory)."""
    return load_feeds(inputs, model) if inputs is not None else make_feeds(model, dims, seed, base_dir)


def make_feeds(
    model: onnx.ModelProto, dims: DimSettings | int | str | dict = 1, seed: int = 0, base_dir: str | os.PathLike | None = None
) -> Feeds:
    """One generated array per graph input that is not an initializer (rules in the docstring)."""
    settings = dims if isinstance(dims, DimSettings) else parse_dim_option(dims)
    plan = plan_inputs(model, settings, None if base_dir is None else Path(base_dir))
    feeds = _generated(model, plan, seed)

    others = _other_sizes(model, plan, settings)

    def alternatives() -> Iterator[Feeds]:
        for sizes in [*plan.alternatives, *others]:
            yield make_feeds(model, DimSettings(settings.default, {**settings.named, **sizes}), seed, base_dir)

    feeds.alternatives = alternatives if plan.alternatives or others else None
    return feeds


_OTHER_SIZES_AT_MOST = 8
"""How many symbols `_other_sizes` tries at each of its sizes when a run is refused."""


def _other_sizes(model: onnx.ModelProto, plan: InputPlan, settings: DimSettings) -> list[dict[str, int]]:
    """Sizes to try when a run is refused, after the plan's own (`tagger.inputs.input_rules` rule 8), one
    symbol at a time among those that took the default size (no rule, no option, no expression set
    them):

    - raised by one: sizes the file ties without saying so. The mask of a cached decoder named
      `total_sequence` (or a dynamo `s53`) beside a cache `past_sequence` and new tokens
      `sequence` must be as long as both together; at the default 1 each, raising the mask's runs;
    - 0, for a symbol no graph output's dim is alone: an empty cache, a decoder's first step
      (onnxruntime-genai's fp16 LLaMA runs on the CPU provider only so). Its outputs keep their
      sizes, so the run still computes something; a batch or sequence of 0 would not, and is
      never tried."""
    free = [name for name, size in plan.dims.items() if size == settings.default and name not in settings.named]
    free = [name for name in free if name.isidentifier()][:_OTHER_SIZES_AT_MOST]
    outputs = {dim.dim_param for value in model.graph.output for dim in value.type.tensor_type.shape.dim}
    raised = [{name: settings.default + 1} for name in free]
    return raised + [{name: 0} for name in free if name not in outputs and settings.default != 0]


def _generated(model: onnx.ModelProto, plan: InputPlan, seed: int) -> Feeds:
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    arrays = {
        value.name: _random_array(value, plan.shapes[value.name], plan.id_bounds.get(value.name), rng)
        for value in model.graph.input
        if value.name not in initializers
    }
    return Feeds(arrays, plan.dims)


_T = TypeVar("_T")


def first_that_runs(feeds: Feeds, attempt: Callable[[Feeds], _T]) -> tuple[Feeds, _T]:
    """`attempt(feeds)`, or, when onnxruntime refuses generated feeds, `attempt` on their
    alternatives in order (`tagger.inputs.input_rules` rule 8): the first that runs, with its result.
    When every one is refused, the first refusal (it names the node and the sizes), saying how
    many others were tried."""
    try:
        return feeds, attempt(feeds)
    except Refused as refused:
        if feeds.alternatives is None:
            raise
        first = refused
    tried: list[Feeds] = []
    for other in feeds.alternatives():
        tried.append(other)
        try:
            return other, attempt(other)
        except Refused:
            continue
    changed = sorted({key for other in tried for key, size in other.dims.items() if feeds.dims.get(key) != size})
    largest = ", ".join(f"{key}={tried[-1].dims[key]}" for key in changed)
    raise Refused(f"{first.message}; {len(tried)} other sizes of {', '.join(changed)} were refused too (up to {largest})") from None


def _random_array(value: onnx.ValueInfoProto, shape: tuple[int, ...], bound: int | None, rng: np.random.Generator) -> np.ndarray:
    elem_type = value.type.tensor_type.elem_type
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    except (KeyError, TypeError, ValueError):
        unsupported = f"cannot make a feed for input {value.name!r}: unsupported element type"
        raise InputError(f"{unsupported}; pass {param('inputs')} NPZ") from None
    if elem_type == TensorProto.BOOL:
        return rng.integers(0, 2, size=shape).astype(bool)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, bound if bound else 2, size=shape).astype(dtype)
    if np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.complexfloating):
        return rng.standard_normal(size=shape).astype(dtype)
    raise InputError(f"cannot make a feed for input {value.name!r}: unsupported element type {dtype}; pass {param('inputs')} NPZ")


def load_feeds(path: str | os.PathLike, model: onnx.ModelProto) -> Feeds:
    """The arrays of an `.npz` named after the graph inputs (extra arrays are ignored)."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read inputs {path}: {exc}") from None
    initializers = {t.name for t in model.graph.initializer}
    wanted = [v.name for v in model.graph.input if v.name not in initializers]
    missing = [name for name in wanted if name not in arrays]
    if missing:
        raise InputError(f"{path} lacks model inputs {missing} (it has {sorted(arrays)})")
    return Feeds({name: arrays[name] for name in wanted}, origin=f"from {path}")


_NODE = re.compile(r"Name:\s*'([^']*)'")
_INPUT = re.compile(r"\binput(?: name)?:\s*'?([^\s',]+)'?", re.IGNORECASE)
_STATUS = "Status Message:"
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")
_LOAD_FROM = re.compile(r"^Load model from .*? failed:\s*")


def onnxruntime_message(error: BaseException) -> str:
    """onnxruntime's message as one line: its first, without the `[ONNXRuntimeError] : 1 : FAIL :`
    prefix and the `Load model from PATH failed:` the caller says anyway."""
    first = _ORT_PREFIX.sub("", (str(error).strip().splitlines() or [""])[0]).strip()
    return _LOAD_FROM.sub("", first).strip()


def load_refusal(where: object, error: BaseException) -> InputError:
    """onnxruntime cannot load the model at `where` (a path, or words naming it): bad input."""
    return InputError(f"onnxruntime cannot load {where}: {onnxruntime_message(error)[:300]}")


def refusal(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], error: BaseException) -> Refused:
    """onnxruntime refused to run on `feeds`: one line naming the node, the inputs it reads,
    the sizes used and how to pass others."""
    message = onnxruntime_message(error)
    node = _NODE.search(message)
    message = message.partition(_STATUS)[2].strip() or message  # the node is named once, below
    named = _INPUT.search(message)
    inputs = [named.group(1)] if named and named.group(1) in feeds else []
    if not inputs and node:
        inputs = _inputs_upstream(model, node.group(1), set(feeds))
    where = f" at node {node.group(1)!r}" if node else ""
    reads = ""
    if inputs:
        shown = ", ".join(f"{name}{list(feeds[name].shape)}" for name in inputs[:_INPUTS_NAMED])
        more = f" and {len(inputs) - _INPUTS_NAMED} more" if len(inputs) > _INPUTS_NAMED else ""
        reads = f" ({'input' if len(inputs) == 1 else 'inputs'} {shown}{more})"
    origin = getattr(feeds, "origin", "given by the caller")
    dims = getattr(feeds, "dims", {})
    sizes = f"; sizes used: {', '.join(f'{k}={v}' for k, v in dims.items())}" if dims else ""
    advice = (
        f"set sizes with {param('dim')} NAME=VALUE or pass arrays with {param('inputs')} NPZ"
        if origin == "generated"
        else f"check the arrays of {param('inputs')}"
    )
    which = "generated inputs" if origin == "generated" else f"inputs {origin}"
    return Refused(f"onnxruntime refused the {which}{where}{reads}: {message[:240]}{sizes}; {advice}")


def _inputs_upstream(model: onnx.ModelProto, node_name: str, inputs: set[str]) -> list[str]:
    """The graph inputs that the nodes called `node_name` (any graph) read, directly or not."""
    producer: dict[str, onnx.NodeProto] = {}
    targets: list[onnx.NodeProto] = []
    for graph in graphs_within(model.graph):
        for node in graph.node:
            producer.update((name, node) for name in node.output if name)
            if node.name == node_name:
                targets.append(node)
    found: list[str] = []
    seen: set[str] = set()
    todo = [name for node in targets for name in node.input]
    while todo:
        name = todo.pop()
        if not name or name in seen:
            continue
        seen.add(name)
        if name in inputs:
            found.append(name)
        elif name in producer:
            todo.extend(producer[name].input)
    order = {v.name: i for i, v in enumerate(model.graph.input)}
    return sorted(found, key=lambda name: order.get(name, 0))
