"""Weights built from parts of checkpoint tensors: concatenations, slices, block-quantized copies.

A converter that builds a graph from a checkpoint (onnxruntime-genai's model builder) keeps every
output channel of a `Linear` weight, but not always the tensor: it concatenates the q, k and v
projections' weights into one fused matrix (their rows one after another), splits a fused
checkpoint tensor (Phi-3's `gate_up_proj`) into slices, stores the weight transposed for its
`MatMul`, and quantizes it to 4 bits in blocks (`MatMulNBits`). Whatever of these it did, each
output channel of its weight is one row of one checkpoint matrix, with the same input axis.

So every output channel is summarised by the sums of its values over `GROUPS` fixed runs of the
input axis (a *row signature*), on both sides; a target's signatures, taken in order, are then
tiled by candidates' signatures: whole checkpoint matrices one after another (a concatenation,
its parts' modules' common parent runs it), or one run of rows of a single larger checkpoint
matrix that starts at a multiple of its own length or ends with it (a slice: heads of one kind
are cut at multiples of their size). A part fits when the correlation of the signatures is at
least `MIN_CORRELATION` and no other candidate fits there. Sums are linear, so quantization error
averages out in them: block-wise 4-bit rounding keeps their correlation above 0.995, exact copies
give 1, and unrelated rows stay far below (the correlation of n independent pairs spreads as
1/sqrt(n); a part has at least `MIN_ROWS` rows).

`MatMulNBits` weights are dequantized (`bits`, `block_size`, `K`, `N` from the node; scales; zero
points packed or as floats, else the midpoint) a chunk of rows at a time. Every tensor is read
once, in chunks; only checkpoint matrices whose input axis has a target's length are read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tagger.tensorbytes.stored import FLOAT_DTYPES, StoredTensor, as_float
from tagger.transfer.content import MIN_CORRELATION

__all__ = [
    "GROUPS",
    "MIN_ROWS",
    "NBits",
    "Target",
    "candidate_signatures",
    "match_parts",
    "nbits_signatures",
    "row_signatures",
    "weight_targets",
]

GROUPS = 8
"""Runs of the input axis each output channel is summed over."""
MIN_ROWS = 4
"""A part with fewer output channels is too small a sample to be told from chance."""
_CHUNK_BYTES = 16 << 20
_HEAD_ROWS = 16


@dataclass(frozen=True)
class Target:
    """A weight of the model to explain: its name, and its output channels' signatures, one
    array per way the weight may be read (a float matrix: as stored and transposed)."""

    name: str
    signatures: tuple[tuple[int, np.ndarray], ...]
    """(input-axis length, `[outputs, groups]` sums) per reading."""

    @property
    def lengths(self) -> set[int]:
        return {length for length, _ in self.signatures}


@dataclass(frozen=True)
class NBits:
    """A `MatMulNBits` weight: packed values `[N, blocks, blob]`, scales, optional zero points."""

    weight: StoredTensor
    scales: StoredTensor
    zero_points: StoredTensor | None
    bits: int
    block_size: int
    k: int
    n: int


def _bounds(k: int) -> np.ndarray:
    groups = min(GROUPS, k)
    return (np.arange(groups) * k) // groups


def row_signatures(tensor: StoredTensor, transposed: bool = False) -> np.ndarray | None:
    """`[outputs, groups]` sums of a float matrix's output channels: its rows (`[out, in]`, as a
    checkpoint stores a `Linear`), or its columns when `transposed` (`[in, out]`, a `MatMul`'s)."""
    if len(tensor.shape) != 2 or tensor.dtype_name not in FLOAT_DTYPES:
        return None
    rows, columns = tensor.shape
    k = rows if transposed else columns
    bounds = _bounds(k)
    out = np.zeros((columns, len(bounds)) if transposed else (rows, len(bounds)))
    step = max(1, _CHUNK_BYTES // (columns * 8))
    start = 0
    for chunk in tensor.chunks(step * columns):
        block = as_float(chunk, tensor.dtype_name).reshape(-1, columns)
        if transposed:
            groups = np.searchsorted(bounds, np.arange(start, start + len(block)), side="right") - 1
            for group in np.unique(groups):
                out[:, group] += block[groups == group].sum(axis=0)
        else:
            out[start : start + len(block)] = np.add.reduceat(block, bounds, axis=1)
        start += len(block)
    return out


def nbits_signatures(weight: NBits) -> np.ndarray | None:
    """The row signatures of a `MatMulNBits` weight, dequantized a chunk of rows at a time."""
    n, k, bits, block = weight.n, weight.k, weight.bits, weight.block_size
    if bits not in (2, 4, 8) or block <= 0 or n <= 0 or k <= 0 or weight.weight.size % n:
        return None
    per_row = weight.weight.size // n
    blocks = -(-k // block)
    if per_row * 8 != blocks * block * bits or weight.scales.size != n * blocks:
        return None
    scales = as_float(np.concatenate(list(weight.scales.chunks(weight.scales.size))), weight.scales.dtype_name).reshape(n, blocks)
    zero = _zero_points(weight, blocks)
    if zero is None:
        return None
    bounds = _bounds(k)
    out = np.empty((n, len(bounds)))
    step = max(1, _CHUNK_BYTES // (per_row * 8 * 8 // bits))
    for first, chunk in _row_chunks(weight.weight, per_row, step):
        rows = len(chunk) // per_row
        values = _unpack(chunk.reshape(rows, per_row).astype(np.uint8), bits).reshape(rows, blocks, block)
        centred = (values - zero[first : first + rows, :, None]) * scales[first : first + rows, :, None]
        out[first : first + rows] = np.add.reduceat(centred.reshape(rows, -1)[:, :k], bounds, axis=1)
    return out


def _row_chunks(tensor: StoredTensor, per_row: int, rows: int):
    first = 0
    for chunk in tensor.chunks(rows * per_row):
        yield first, chunk
        first += len(chunk) // per_row


def _unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    """Low bits first, as onnxruntime packs them."""
    if bits == 8:
        return packed.astype(np.float64)
    shifts = np.arange(0, 8, bits, dtype=np.uint8)
    return ((packed[..., None] >> shifts) & ((1 << bits) - 1)).reshape(packed.shape[0], -1).astype(np.float64)


def _zero_points(weight: NBits, blocks: int) -> np.ndarray | None:
    n, bits = weight.n, weight.bits
    if weight.zero_points is None:
        return np.full((n, blocks), float(1 << (bits - 1)))
    values = np.concatenate(list(weight.zero_points.chunks(weight.zero_points.size)))
    if weight.zero_points.dtype_name in FLOAT_DTYPES:
        return as_float(values, weight.zero_points.dtype_name).reshape(n, blocks) if values.size == n * blocks else None
    if values.size % n:
        return None
    unpacked = _unpack(values.astype(np.uint8).reshape(n, -1), bits)
    return unpacked[:, :blocks] if unpacked.shape[1] >= blocks else None


def candidate_signatures(tensors: Iterable[StoredTensor], lengths: set[int]) -> dict[str, tuple[int, np.ndarray]]:
    """The row signatures of the checkpoint matrices whose input axis has one of `lengths`
    (vectors: input axis 1)."""
    found = {}
    for tensor in tensors:
        if tensor.dtype_name not in FLOAT_DTYPES or not tensor.shape or tensor.shape[0] < MIN_ROWS:
            continue
        if len(tensor.shape) == 1 and 1 in lengths:
            signatures = vector_signatures(tensor)
        elif len(tensor.shape) == 2 and tensor.shape[1] in lengths:
            signatures = row_signatures(tensor)
        else:
            continue
        if signatures is not None and np.ptp(signatures) > 0:
            found[tensor.name] = (1 if len(tensor.shape) == 1 else tensor.shape[1], signatures)
    return found


def match_parts(targets: Iterable[Target], candidates: dict[str, tuple[int, np.ndarray]]) -> dict[str, tuple[str, ...]]:
    """Target name -> the candidates it is made of: several (a concatenation, in order) or one
    (the whole matrix, or a slice of it). Targets that fit no way are absent."""
    by_length: dict[int, list[tuple[str, np.ndarray]]] = {}
    for name, (length, signatures) in candidates.items():
        by_length.setdefault(length, []).append((name, signatures))
    found = {}
    for target in targets:
        for length, signatures in target.signatures:
            parts = _tiling(signatures, by_length.get(length, []))
            if parts:
                found[target.name] = parts
                break
    return found


def _tiling(target: np.ndarray, candidates: list[tuple[str, np.ndarray]]) -> tuple[str, ...] | None:
    """Candidates placed one after another over the target's rows, else the one candidate a run
    of whose rows the target is."""
    total = len(target)
    if total < MIN_ROWS or not candidates:
        return None
    parts: list[str] = []
    row = 0
    while row < total:
        rest = total - row
        fits = [(name, len(c)) for name, c in candidates if MIN_ROWS <= len(c) <= rest and _fits(target[row : row + len(c)], c)]
        if len(fits) != 1:
            break
        parts.append(fits[0][0])
        row += fits[0][1]
    if row == total:
        return tuple(parts)
    sliced = {
        name for name, c in candidates if len(c) > total and any(_fits(target, c[s : s + total]) for s in _starts(len(c), total))
    }
    return (sliced.pop(),) if len(sliced) == 1 else None


def _starts(length: int, part: int) -> list[int]:
    return sorted(set(range(0, length - part + 1, part)) | {length - part})


def _fits(a: np.ndarray, b: np.ndarray) -> bool:
    """Correlated above the threshold: first on the leading rows (most candidates fail there,
    cheaply), then on all."""
    if len(a) > _HEAD_ROWS and not _correlated(a[:_HEAD_ROWS], b[:_HEAD_ROWS]):
        return False
    return _correlated(a, b)


def _correlated(a: np.ndarray, b: np.ndarray) -> bool:
    x, y = a.ravel(), b.ravel()
    if x.std() == 0 or y.std() == 0:
        return False
    return float(np.corrcoef(x, y)[0, 1]) >= MIN_CORRELATION


def weight_targets(views, nodes, tensors: dict[str, StoredTensor], names: set[str]) -> list[Target]:
    """The weights among `names` to explain by parts: float matrices (as stored and transposed)
    and vectors, and the packed weights of `MatMulNBits` nodes (dequantized)."""
    targets: dict[str, Target] = {}
    for node_id, view in enumerate(views):
        if view.op_type == "MatMulNBits" and len(view.input) > 2 and view.input[1] in names:
            weight = _nbits(nodes[node_id], view.input, tensors)
            signatures = None if weight is None else nbits_signatures(weight)
            if signatures is not None:
                targets[view.input[1]] = Target(view.input[1], ((weight.k, signatures),))
    for name in sorted(names - targets.keys()):
        tensor = tensors.get(name)
        if tensor is None or tensor.dtype_name not in FLOAT_DTYPES or len(tensor.shape) not in (1, 2):
            continue
        if len(tensor.shape) == 1:
            found = ((1, vector_signatures(tensor)),)
        else:
            rows, columns = tensor.shape
            readings = ((columns, row_signatures(tensor)), (rows, row_signatures(tensor, transposed=True)))
            found = tuple((length, s) for length, s in readings if s is not None)
        if found:
            targets[name] = Target(name, found)
    return list(targets.values())


def vector_signatures(tensor: StoredTensor) -> np.ndarray:
    """A vector (a bias) as `[length, 1]`: each element its own output channel."""
    return as_float(np.concatenate(list(tensor.chunks(tensor.size))), tensor.dtype_name).reshape(-1, 1)


def _nbits(node, inputs: tuple[str, ...], tensors: dict[str, StoredTensor]) -> NBits | None:
    attributes = {a.name: a.i for a in node.attribute if a.type == a.INT}
    weight, scales = tensors.get(inputs[1]), tensors.get(inputs[2])
    zero_points = tensors.get(inputs[3]) if len(inputs) > 3 and inputs[3] else None
    if weight is None or scales is None or (len(inputs) > 3 and inputs[3] and zero_points is None):
        return None
    if len(inputs) > 4 and inputs[4]:  # g_idx: columns reordered (act-order); not read
        return None
    if not {"K", "N", "block_size"} <= attributes.keys():
        return None
    return NBits(weight, scales, zero_points, attributes.get("bits", 4), attributes["block_size"], attributes["K"], attributes["N"])
