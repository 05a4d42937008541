"""Running both models for one depth of modules, and each derived module alone.

Memory stays bounded by one depth: each model runs once per depth exposing only the boundary
tensors of that depth's modules (never every activation); their figures are summed and the
arrays dropped before the next depth. A derived module runs alone (its extraction, in memory)
on the float model's values of its inputs, one module at a time.

Both models run as `extract --verify` runs them (`tagger.commands.extract.verify`): on the CPU, one thread,
graph optimizations off, weights read from their data files in place.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper

from tagger.commands.extract.build import build_model
from tagger.commands.extract.source import Source
from tagger.commands.extract.verify import cpu_session, full_model_values
from tagger.commands.numerics.pairing import ModulePair
from tagger.commands.numerics.stats import Accumulator, ErrorStats
from tagger.inputs.feeds import onnxruntime_message

__all__ = ["LevelValues", "derived_feeds", "level_values", "own_error", "compare"]


class LevelValues:
    """Both models' values of one depth's boundary tensors."""

    def __init__(self, float_values: dict[str, np.ndarray], derived_values: dict[str, np.ndarray]) -> None:
        self.float = float_values
        self.derived = derived_values


def derived_feeds(derived: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The float model's feeds in the derived model's input dtypes (an fp16 model takes fp16)."""
    wanted = {value.name: value.type.tensor_type.elem_type for value in derived.graph.input}
    return {name: _as_type(array, wanted.get(name, 0)) for name, array in feeds.items() if name in wanted}


def _as_type(array: np.ndarray, elem_type: int) -> np.ndarray:
    if not elem_type:
        return array
    dtype = helper.tensor_dtype_to_np_dtype(elem_type)
    return array if array.dtype == dtype else array.astype(dtype)


def level_values(float_src: Source, derived_src: Source, pairs: list[ModulePair], feeds: Mapping[str, np.ndarray]) -> LevelValues:
    """One run of each model exposing what `pairs` compare and feed."""
    float_names = [name for pair in pairs for name in (*pair.outputs, *pair.inputs, *pair.fed)]
    derived_names = [name for pair in pairs for name in (*pair.outputs, *pair.inputs)]
    return LevelValues(
        _run(float_src, float_names, feeds, "the float model"),
        _run(derived_src, derived_names, derived_feeds(derived_src.model, feeds), "the derived model"),
    )


def _run(src: Source, names: list[str], feeds: Mapping[str, np.ndarray], label: str) -> dict[str, np.ndarray]:
    names = list(dict.fromkeys(names))
    src.types.resolve(names)
    types = {name: tp for name in names if (tp := src.types.get(name)) is not None}
    return full_model_values(src.model, src.path.parent.resolve(), names, types, feeds, f"{label} {src.path}")


def compare(want: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], names: list[str]) -> ErrorStats | None:
    """The error of `got` against `want` over the tensors `names` (those of equal shape)."""
    total = Accumulator()
    for name in names:
        if name in want and name in got and want[name].shape == got[name].shape:
            total.add(want[name], got[name])
    return total.stats()


def own_error(pair: ModulePair, derived_src: Source, values: LevelValues) -> ErrorStats | str:
    """The derived module run alone on the float model's inputs, against the float outputs; or why not."""
    cut = pair.derived_cut
    assert cut is not None
    try:
        model, _ = build_model(derived_src, cut)
    except Exception as exc:  # noqa: BLE001 - an untyped boundary or a graph graphsurgeon refuses
        return f"the derived module cannot be cut out: {str(exc).splitlines()[0][:200]}"
    model.graph.ClearField("output")
    model.graph.output.extend(_outputs(derived_src, pair.own_outputs))
    feeds = {value.name: _as_type(values.float[value.name], value.type.tensor_type.elem_type) for value in model.graph.input}
    try:
        session = cpu_session(model.SerializeToString(), derived_src.path.parent.resolve(), pair.piece.label)
        results = session.run(pair.own_outputs, feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        return f"onnxruntime cannot run the derived module alone: {onnxruntime_message(exc)[:200]}"
    return compare(values.float, dict(zip(pair.own_outputs, results, strict=True)), pair.own_outputs) or "nothing compared"


def _outputs(src: Source, names: list[str]) -> list[onnx.ValueInfoProto]:
    """Declarations of `names` as outputs, typed where the derived model's types are known."""
    declared = []
    for name in names:
        value = onnx.ValueInfoProto(name=name)
        tp = src.types.get(name)
        if tp is not None:
            value.type.CopyFrom(tp)
        declared.append(value)
    return declared
