"""Which tensors hold the same values: content digests that see through what tools do to weights.

A tool that rewrites a model keeps a weight's values even when it renames the tensor; the values
are the one fact about a weight that every export and every tool obeys. Two float tensors match
when, after one of these transformations of the *target* tensor, their bytes are identical:

1. identity, and any reshape (the bytes are compared flat; shapes only need the same size);
2. the transpose of a 2-D tensor (dynamo folds `Transpose(weight)` of a bias-free `Linear` into
   a new initializer; onnxslim turns `MatMul` into `Gemm` with a transposed weight);
3. a cast down to the other side's narrower float type (float32 to float16 or bfloat16, float64
   to float32 ...), alone or after the transpose: a checkpoint saved in half precision, a model
   converted to float16.

Not handled (no byte equality survives them): quantized weights (int8/int4 with scales), weights
concatenated by a fusion (onnxruntime's packed QKV), folded arithmetic (a weight scaled by a
constant). Those are matched by name or structure instead (`tagger.transfer.matching`).

Values are hashed in chunks straight from the files (`tagger.transfer.tensors`): only tensors
whose element count occurs on both sides are read at all, and never more than one chunk of a
tensor is in memory. Tensors whose elements are all equal (an untrained LayerNorm's ones, a zero
bias) and values shared by more than `MAX_NAMES` tensors are ambiguous and match nothing.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Iterator

import numpy as np

from tagger.transfer.tensors import FLOAT_DTYPES, StoredTensor

__all__ = ["MAX_NAMES", "MIN_SIZE", "match_contents"]

MIN_SIZE = 8
"""Tensors with fewer elements (shapes, axes, scalars) match by chance too often to be evidence."""
MAX_NAMES = 4
"""One value held by more tensors than this is no identity (a tied weight has two names)."""
_CHUNK_BYTES = 16 << 20
_NUMPY = {"float64": np.float64, "float32": np.float32, "float16": np.float16}

Digest = tuple[str, int, bytes]
"""(dtype name, element count, hash of the bytes)."""


def match_contents(targets: Iterable[StoredTensor], candidates: Iterable[StoredTensor]) -> dict[str, tuple[str, ...]]:
    """Target tensor name -> the names of the candidates whose values it holds (transformations
    in the module docstring). Targets without a match are absent."""
    wanted = [t for t in targets if t.size >= MIN_SIZE and t.dtype_name in FLOAT_DTYPES]
    if not wanted:
        return {}
    target_dtypes: dict[int, set[str]] = defaultdict(set)
    for tensor in wanted:
        target_dtypes[tensor.size].add(tensor.dtype_name)
    table: dict[Digest, list[str]] = defaultdict(list)
    candidate_dtypes: dict[int, set[str]] = defaultdict(set)
    for tensor in candidates:
        if tensor.size not in target_dtypes or tensor.dtype_name not in FLOAT_DTYPES:
            continue
        candidate_dtypes[tensor.size].add(tensor.dtype_name)
        for form in _narrower(tensor.dtype_name, target_dtypes[tensor.size]):
            digest = _digest(tensor, form, transpose=False)
            if digest is not None and tensor.name not in table[digest]:
                table[digest].append(tensor.name)
    found: dict[str, tuple[str, ...]] = {}
    for tensor in wanted:
        names: list[str] = []
        for form in _narrower(tensor.dtype_name, candidate_dtypes.get(tensor.size, set())):
            for transpose in _transposes(tensor):
                digest = _digest(tensor, form, transpose)
                for name in table.get(digest, ()) if digest is not None else ():
                    if name not in names:
                        names.append(name)
        if names and len(names) <= MAX_NAMES:
            found[tensor.name] = tuple(names)
    return found


def _narrower(own: str, others: set[str]) -> list[str]:
    """The dtypes to hash a tensor in: its own, and each other side's dtype that is narrower."""
    rank = FLOAT_DTYPES.index
    return [own] + [d for d in sorted(others, key=rank) if rank(d) > rank(own) and not _same_width(own, d)]


def _same_width(a: str, b: str) -> bool:
    return {a, b} == {"float16", "bfloat16"}  # neither holds the other's values


def _transposes(tensor: StoredTensor) -> tuple[bool, ...]:
    return (False, True) if len(tensor.shape) == 2 and min(tensor.shape) > 1 else (False,)


def _digest(tensor: StoredTensor, dtype_name: str, transpose: bool) -> Digest | None:
    """The hash of the tensor's bytes in `dtype_name` (transposed first if asked); None when all
    its elements are equal."""
    hasher = hashlib.blake2b(digest_size=16)
    first = None
    uniform = True
    for chunk in _chunks(tensor, transpose):
        cast = _cast(chunk, tensor.dtype_name, dtype_name)
        if uniform:
            first = cast.flat[0] if first is None else first
            uniform = bool(np.all(cast == first))
        hasher.update(memoryview(np.ascontiguousarray(cast)).cast("B"))
    return None if uniform else (dtype_name, tensor.size, hasher.digest())


def _chunks(tensor: StoredTensor, transpose: bool) -> Iterator[np.ndarray]:
    """The flat values in row-major order (of the transpose, if asked), a chunk at a time."""
    flat = tensor.values()
    itemsize = flat.dtype.itemsize
    if not transpose:
        step = max(1, _CHUNK_BYTES // itemsize)
        for start in range(0, flat.size, step):
            yield flat[start : start + step]
        return
    rows, columns = tensor.shape
    matrix = flat.reshape(rows, columns)
    step = max(1, _CHUNK_BYTES // max(1, rows * itemsize))
    for start in range(0, columns, step):
        yield np.ascontiguousarray(matrix[:, start : start + step].T)


def _cast(values: np.ndarray, source: str, target: str) -> np.ndarray:
    if source == target:
        return values
    if target == "bfloat16":
        return _to_bfloat16(values.astype(np.float32))
    return values.astype(_NUMPY[target])


def _to_bfloat16(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, rounded to nearest even (as torch and ml_dtypes round)."""
    bits = values.view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)
