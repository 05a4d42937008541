"""Random feeds for a model's graph inputs, made from the model alone.

Verification runs a model on whatever inputs it declares, without knowing the architecture, so
the values are chosen to be valid for almost any model rather than realistic:

1. floating-point inputs are standard-normal (a fixed seed, so a run is reproducible);
2. integer inputs are 0 or 1: valid token ids, token types, attention masks and indices of any
   table with at least two rows, where a wider range could index past a small vocabulary;
3. booleans are random; symbolic or unknown dimensions become `symbolic` (default 1), one value
   for all of them, so inputs that must agree on a dynamic axis (ids and mask) do.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from tagger.errors import InputError

__all__ = ["make_feeds"]


def make_feeds(model: onnx.ModelProto, symbolic: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """One array per graph input that is not an initializer, keyed by input name."""
    initializers = {t.name for t in model.graph.initializer}
    rng = np.random.default_rng(seed)
    return {value.name: _random_array(value, symbolic, rng) for value in model.graph.input if value.name not in initializers}


def _random_array(value: onnx.ValueInfoProto, symbolic: int, rng: np.random.Generator) -> np.ndarray:
    if value.type.WhichOneof("value") != "tensor_type":
        raise InputError(f"cannot make a feed for input {value.name!r}: not a tensor")
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        raise InputError(f"cannot make a feed for input {value.name!r}: its rank is unknown")
    shape = tuple(dim.dim_value if dim.HasField("dim_value") else symbolic for dim in tensor_type.shape.dim)
    try:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
    except (KeyError, TypeError, ValueError):
        raise InputError(f"cannot make a feed for input {value.name!r}: unsupported element type") from None
    if tensor_type.elem_type == TensorProto.BOOL:
        return rng.integers(0, 2, size=shape).astype(bool)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 2, size=shape).astype(dtype)
    if np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.complexfloating):
        return rng.standard_normal(size=shape).astype(dtype)
    raise InputError(f"cannot make a feed for input {value.name!r}: unsupported element type {dtype}")
