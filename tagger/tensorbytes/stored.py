"""Tensors read lazily from where they lie: ONNX initializers (inline or external data) and
checkpoint files, without loading a model's or a checkpoint's weights into memory.

A `StoredTensor` knows its name, dtype and shape from the file's header or the tensor proto;
its values are read only when asked for, a chunk at a time (`chunks`): read from the file at
their offset where the bytes lie on disk (external data, safetensors), so the process never
holds more than one chunk of them (a memory map would keep every page it touched resident),
and sliced from the protobuf when they are inline (then they are in memory already).
bfloat16, which numpy lacks, is carried as its raw `uint16` bits with `dtype_name == "bfloat16"`.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from tagger.errors import InputError

__all__ = [
    "FLOAT_DTYPES",
    "QUANTIZED_DTYPES",
    "StoredTensor",
    "as_float",
    "onnx_initializers",
    "safetensors_tensors",
    "holds_one_value",
    "stored_tensor",
]

FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")
"""Widest first: a wider tensor may be compared with a narrower one after a cast down."""
QUANTIZED_DTYPES = ("int8", "uint8")
"""What quantizers store weights in (besides packed 4-bit types, which are not read)."""

_ONNX_DTYPES: dict[int, tuple[str, np.dtype]] = {
    onnx.TensorProto.FLOAT: ("float32", np.dtype("<f4")),
    onnx.TensorProto.DOUBLE: ("float64", np.dtype("<f8")),
    onnx.TensorProto.FLOAT16: ("float16", np.dtype("<f2")),
    onnx.TensorProto.BFLOAT16: ("bfloat16", np.dtype("<u2")),
    onnx.TensorProto.INT8: ("int8", np.dtype("i1")),
    onnx.TensorProto.UINT8: ("uint8", np.dtype("u1")),
}
_SAFETENSORS_DTYPES: dict[str, tuple[str, np.dtype]] = {
    "F32": ("float32", np.dtype("<f4")),
    "F64": ("float64", np.dtype("<f8")),
    "F16": ("float16", np.dtype("<f2")),
    "BF16": ("bfloat16", np.dtype("<u2")),
}
_HEADER_LIMIT = 100 << 20
"""A safetensors header larger than this is no checkpoint (the format itself caps it so)."""


@dataclass(frozen=True)
class StoredTensor:
    """A named float tensor whose values are read on demand."""

    name: str
    dtype_name: str
    shape: tuple[int, ...]
    read: Callable[[int, int], np.ndarray]
    """`read(start, count)`: `count` flat values from element `start` on."""

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def chunks(self, elements: int) -> Iterator[np.ndarray]:
        """The flat values in order, at most `elements` at a time."""
        for start in range(0, self.size, max(1, elements)):
            yield self.read(start, min(elements, self.size - start))


def onnx_initializers(model: onnx.ModelProto, base_dir: Path | None) -> Iterator[StoredTensor]:
    """The float and 8-bit integer initializers of every graph of `model` (external data found
    under `base_dir`, the model's directory; without one, external tensors are skipped)."""
    from tagger.model.index import graphs_within

    for graph in graphs_within(model.graph):
        for tensor in graph.initializer:
            stored = stored_tensor(tensor, base_dir)
            if stored is not None:
                yield stored


def stored_tensor(tensor: onnx.TensorProto, base_dir: Path | None) -> StoredTensor | None:
    """The tensor's values to read on demand; None for a type not read here (see `_ONNX_DTYPES`)
    or external data that cannot be found under `base_dir`."""
    known = _ONNX_DTYPES.get(tensor.data_type)
    if known is None:
        return None
    dtype_name, dtype = known
    shape = tuple(int(d) for d in tensor.dims)
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        if base_dir is None:
            return None
        reader = _external_reader(tensor, base_dir, dtype, math.prod(shape))
        return None if reader is None else StoredTensor(tensor.name, dtype_name, shape, reader)
    return StoredTensor(tensor.name, dtype_name, shape, _inline_reader(tensor, dtype))


def _inline_reader(tensor: onnx.TensorProto, dtype: np.dtype) -> Callable[[int, int], np.ndarray]:
    values: list[np.ndarray] = []  # decoded once, on first use

    def read(start: int, count: int) -> np.ndarray:
        if not values:
            values.append(_inline_values(tensor, dtype))
        return values[0][start : start + count]

    return read


def _inline_values(tensor: onnx.TensorProto, dtype: np.dtype) -> np.ndarray:
    if tensor.raw_data:
        return np.frombuffer(tensor.raw_data, dtype=dtype)
    if tensor.data_type == onnx.TensorProto.FLOAT:
        return np.asarray(tensor.float_data, dtype=dtype)
    if tensor.data_type == onnx.TensorProto.DOUBLE:
        return np.asarray(tensor.double_data, dtype=dtype)
    if tensor.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
        return np.asarray(tensor.int32_data, dtype=np.int32).astype(dtype)
    return np.asarray(tensor.int32_data, dtype=np.int32).astype(np.uint16).view(dtype)  # 16-bit floats


def _external_reader(
    tensor: onnx.TensorProto, base_dir: Path, dtype: np.dtype, count: int
) -> Callable[[int, int], np.ndarray] | None:
    """A reader of the tensor's bytes in its data file; None when the entry is unusable (a
    location outside the model's directory is never opened: `tagger.model.modelio` refuses those)."""
    entries = {entry.key: entry.value for entry in tensor.external_data}
    location = entries.get("location")
    if not location or Path(location).is_absolute():
        return None
    path = (base_dir / location).resolve()
    if not path.is_relative_to(base_dir.resolve()) or not path.is_file():
        return None
    try:
        offset = int(entries.get("offset", 0))
        length = int(entries.get("length", count * dtype.itemsize))
    except ValueError:
        return None
    if length < count * dtype.itemsize or offset + count * dtype.itemsize > path.stat().st_size:
        return None
    return _file_reader(path, dtype, offset)


def _file_reader(path: Path, dtype: np.dtype, offset: int) -> Callable[[int, int], np.ndarray]:
    def read(start: int, count: int) -> np.ndarray:
        return np.fromfile(path, dtype=dtype, count=count, offset=offset + start * dtype.itemsize)

    return read


def safetensors_tensors(path: Path) -> Iterator[StoredTensor]:
    """The float tensors of one `.safetensors` file, from its JSON header (8-byte length, then
    the header; offsets count from the end of the header)."""
    try:
        with open(path, "rb") as file:
            prefix = file.read(8)
            if len(prefix) != 8:
                raise InputError(f"not a safetensors file (too short): {path}")
            (length,) = struct.unpack("<Q", prefix)
            if length > _HEADER_LIMIT:
                raise InputError(f"not a safetensors file (header of {length} bytes): {path}")
            header = json.loads(file.read(length))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read safetensors file {path}: {exc}") from None
    if not isinstance(header, dict):
        raise InputError(f"not a safetensors file (header is no object): {path}")
    start = 8 + length
    size = os.path.getsize(path)
    for name, entry in header.items():
        if name == "__metadata__" or not isinstance(entry, dict):
            continue
        known = _SAFETENSORS_DTYPES.get(entry.get("dtype"))
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if known is None or not _valid_entry(shape, offsets):
            continue
        dtype_name, dtype = known
        count = math.prod(shape)
        begin = start + offsets[0]
        if offsets[1] - offsets[0] != count * dtype.itemsize or start + offsets[1] > size:
            raise InputError(f"safetensors entry {name!r} lies outside its file: {path}")
        yield StoredTensor(name, dtype_name, tuple(shape), _file_reader(path, dtype, begin))


def _valid_entry(shape: object, offsets: object) -> bool:
    return (
        isinstance(shape, list)
        and all(isinstance(d, int) and d >= 0 for d in shape)
        and isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(o, int) and o >= 0 for o in offsets)
        and offsets[0] <= offsets[1]
    )


def as_float(values: np.ndarray, dtype_name: str) -> np.ndarray:
    """Values as float64 (bfloat16 bits widened to float32 first)."""
    if dtype_name == "bfloat16":
        values = (values.astype(np.uint32) << 16).view(np.float32)
    return values.astype(np.float64)


def holds_one_value(chunks: Iterable[np.ndarray]) -> bool:
    """Whether more than one value was read and all are equal (a fill: zeros, ones). Reads chunk
    by chunk and stops at the first difference (a random tensor differs at once)."""
    first = None
    seen = 0
    for chunk in chunks:
        seen += chunk.size
        if chunk.size == 0:
            continue
        if first is None:
            first = chunk.flat[0]
        if (chunk != first).any():
            return False
    return seen > 1
