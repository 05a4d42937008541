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

A weight quantized per tensor to 8 bits (`q = round(w / s) + z`) keeps no byte of `w`, but is an
increasing affine function of it up to rounding: the sums of its rows and of its columns
correlate with `w`'s (or, transposed, with `w`'s columns and rows) above `MIN_CORRELATION`
whatever `s` and `z` are, while unrelated matrices' sums do not correlate (`match_quantized`).

Not handled here: per-channel quantization and folded arithmetic (a weight scaled by a constant),
matched by name or structure instead (`tagger.transfer.matching`); weights concatenated or sliced
by a converter (onnxruntime's packed QKV, the genai builder's fused q/k/v) and block-quantized
4-bit weights (`MatMulNBits`) are `tagger.transfer.composite`'s.

Values are hashed in chunks straight from the files (`tagger.tensorbytes.stored`), each tensor in
one pass: only tensors whose element count occurs on both sides are read at all, and never more
than one chunk of a tensor is in memory. Tensors whose elements are all equal (an untrained LayerNorm's ones, a zero
bias) and values shared by more than `MAX_NAMES` tensors are ambiguous and match nothing.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tagger.tensorbytes.stored import FLOAT_DTYPES, QUANTIZED_DTYPES, StoredTensor, as_float

__all__ = ["MAX_NAMES", "MIN_CORRELATION", "MIN_SIZE", "match_contents", "match_quantized"]

MIN_SIZE = 8
"""Tensors with fewer elements (shapes, axes, scalars) match by chance too often to be evidence."""
MAX_NAMES = 4
"""One value held by more tensors than this is no identity (a tied weight has two names)."""
MIN_CORRELATION = 0.99
"""Rounding to 8 bits keeps the correlation of row and column sums above 0.9999; unrelated random
matrices of 32 rows stay below 0.6 (the correlation of n independent pairs spreads as 1/sqrt(n))."""
_CHUNK_BYTES = 16 << 20
_NUMPY = {"float64": np.float64, "float32": np.float32, "float16": np.float16}
_BITS = {"float64": np.uint64, "float32": np.uint32, "float16": np.uint16, "bfloat16": np.uint16}

Digest = tuple[str, int, bytes]
"""(dtype name, element count, hash of the bytes)."""


def match_contents(targets: Iterable[StoredTensor], candidates: Iterable[StoredTensor]) -> dict[str, tuple[str, ...]]:
    """Target tensor name -> the names of the candidates whose values it holds (transformations
    in the module docstring). Targets without a match are absent."""
    wanted = [t for t in targets if t.size >= MIN_SIZE and t.dtype_name in FLOAT_DTYPES]
    if not wanted:
        return {}
    table = _Table.of(candidates, wanted)
    found: dict[str, tuple[str, ...]] = {}
    for tensor in wanted:
        names = table.lookup(tensor)
        if names and len(names) <= MAX_NAMES:
            found[tensor.name] = tuple(names)
    return found


@dataclass
class _Table:
    """The candidates' digests, and the sizes, dtypes and shapes they come in."""

    names: dict[Digest, list[str]]
    dtypes: dict[int, set[str]]
    shapes: set[tuple[int, ...]]

    @classmethod
    def of(cls, candidates: Iterable[StoredTensor], wanted: list[StoredTensor]) -> _Table:
        """Digest only the candidates of a size some target has, in the dtypes targets of that
        size can be compared in; matrix sums only where a target has the transposed shape."""
        target_dtypes: dict[int, set[str]] = defaultdict(set)
        for tensor in wanted:
            target_dtypes[tensor.size].add(tensor.dtype_name)
        target_shapes = {tensor.shape for tensor in wanted}
        table = cls(defaultdict(list), defaultdict(set), set())
        for tensor in candidates:
            if tensor.size not in target_dtypes or tensor.dtype_name not in FLOAT_DTYPES:
                continue
            table.dtypes[tensor.size].add(tensor.dtype_name)
            table.shapes.add(tensor.shape)
            for form in _narrower(tensor.dtype_name, target_dtypes[tensor.size]):
                digests = _digests(tensor, form, tensor.shape[::-1] in target_shapes)
                for digest in (digests.flat, digests.rows_columns):
                    if digest is not None and tensor.name not in table.names[digest]:
                        table.names[digest].append(tensor.name)
        return table

    def lookup(self, tensor: StoredTensor) -> list[str]:
        """The candidates holding the target's values, as they are or transposed."""
        names: list[str] = []
        for form in _narrower(tensor.dtype_name, self.dtypes.get(tensor.size, set())):
            digests = _digests(tensor, form, tensor.shape[::-1] in self.shapes)
            for digest in (digests.flat, digests.transposed):
                names += [name for name in self.names.get(digest, ()) if digest is not None and name not in names]
        return names


def match_quantized(targets: Iterable[StoredTensor], candidates: Iterable[StoredTensor]) -> dict[str, tuple[str, ...]]:
    """8-bit target matrix name -> the float candidates it quantizes per tensor (as is or
    transposed), by the correlation of row and column sums (module docstring)."""
    wanted = [t for t in targets if t.dtype_name in QUANTIZED_DTYPES and _is_matrix(t) and t.size >= MIN_SIZE]
    sizes = {t.size for t in wanted}
    if not wanted:
        return {}
    fitting = [c for c in candidates if c.size in sizes and c.dtype_name in FLOAT_DTYPES and _is_matrix(c)]
    sums = {c.name: (c.shape, _value_sums(c)) for c in fitting}
    found: dict[str, tuple[str, ...]] = {}
    for tensor in wanted:
        rows, columns = _value_sums(tensor)
        names = []
        for name, (shape, (their_rows, their_columns)) in sums.items():
            same = shape == tensor.shape and _correlated(rows, their_rows) and _correlated(columns, their_columns)
            if same or (shape == tensor.shape[::-1] and _correlated(rows, their_columns) and _correlated(columns, their_rows)):
                names.append(name)
        if names and len(names) <= MAX_NAMES:
            found[tensor.name] = tuple(names)
    return found


def _is_matrix(tensor: StoredTensor) -> bool:
    return len(tensor.shape) == 2 and min(tensor.shape) > 2


def _value_sums(tensor: StoredTensor) -> tuple[np.ndarray, np.ndarray]:
    """The sums of a matrix's rows and of its columns, read a chunk of whole rows at a time."""
    columns = tensor.shape[1]
    rows: list[np.ndarray] = []
    column_sums = np.zeros(columns)
    for chunk in tensor.chunks(max(1, _CHUNK_BYTES // (columns * 8)) * columns):
        block = as_float(chunk, tensor.dtype_name).reshape(-1, columns)
        rows.append(block.sum(axis=1))
        column_sums += block.sum(axis=0)
    return np.concatenate(rows), column_sums


def _correlated(a: np.ndarray, b: np.ndarray) -> bool:
    if a.std() == 0 or b.std() == 0:
        return False
    return float(np.corrcoef(a, b)[0, 1]) >= MIN_CORRELATION


def _narrower(own: str, others: set[str]) -> list[str]:
    """The dtypes to hash a tensor in: its own, and each other side's dtype that is narrower."""
    rank = FLOAT_DTYPES.index
    return [own] + [d for d in sorted(others, key=rank) if rank(d) > rank(own) and not _same_width(own, d)]


def _same_width(a: str, b: str) -> bool:
    return {a, b} == {"float16", "bfloat16"}  # neither holds the other's values


@dataclass(frozen=True)
class _Digests:
    """A tensor's digests in one dtype: of its bytes (`flat`), and for a matrix of its exact row
    and column sums (`rows_columns`) and of the same sums read as its transpose's (`transposed`).
    None for a tensor whose elements are all equal."""

    flat: Digest | None
    rows_columns: Digest | None = None
    transposed: Digest | None = None


def _digests(tensor: StoredTensor, dtype_name: str, sums: bool) -> _Digests:
    """One pass over the values, a chunk of whole rows at a time (`sums`: also the matrix digests).

    A transpose cannot be hashed as a stream of its rows, so a matrix is also summarised by the
    sums of its rows and of its columns, taken over the bit patterns as unsigned integers (exact,
    so the order of summation does not matter): `A.T` has `A`'s column sums as its row sums. Two
    different real matrices with equal sums of every row and every column do not occur. The row
    sums are hashed as they come; only the column sums are kept."""
    hasher = hashlib.blake2b(digest_size=16)
    matrix = sums and len(tensor.shape) == 2 and min(tensor.shape) > 1
    columns = tensor.shape[1] if matrix else 1
    rows_hasher = hashlib.blake2b(digest_size=16)
    column_sums = np.zeros(columns, dtype=np.uint64)
    bits_type = _BITS[dtype_name]
    first = None
    uniform = True
    for chunk in tensor.chunks(max(1, _CHUNK_BYTES // (columns * 8)) * columns):
        bits = _cast(chunk, tensor.dtype_name, dtype_name).view(bits_type)
        if uniform:
            first = bits[0] if first is None else first
            uniform = bool(np.all(bits == first))
        hasher.update(memoryview(bits).cast("B"))
        if matrix:
            block = bits.reshape(-1, columns).astype(np.uint64)
            rows_hasher.update(block.sum(axis=1, dtype=np.uint64).tobytes())
            column_sums += block.sum(axis=0, dtype=np.uint64)
    if uniform:
        return _Digests(None)
    flat = (dtype_name, tensor.size, hasher.digest())
    if not matrix:
        return _Digests(flat)
    rows, columns = tensor.shape
    by_rows, by_columns = rows_hasher.digest(), hashlib.blake2b(column_sums.tobytes(), digest_size=16).digest()
    as_is = _sums_digest(dtype_name, rows, columns, by_rows, by_columns)
    return _Digests(flat, as_is, _sums_digest(dtype_name, columns, rows, by_columns, by_rows))


def _sums_digest(dtype_name: str, rows: int, columns: int, by_rows: bytes, by_columns: bytes) -> Digest:
    """The digest of a matrix of this shape with these (digested) row and column sums."""
    return (dtype_name + ".T", rows * columns, hashlib.blake2b(f"{rows}x{columns}".encode() + by_rows + by_columns).digest())


def _cast(values: np.ndarray, source: str, target: str) -> np.ndarray:
    if source == target:
        return np.ascontiguousarray(values)
    if target == "bfloat16":
        return _to_bfloat16(values.astype(np.float32))
    return values.astype(_NUMPY[target])


def _to_bfloat16(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, rounded to nearest even (as torch and ml_dtypes round)."""
    bits = values.view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)
