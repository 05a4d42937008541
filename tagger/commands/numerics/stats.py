"""How far one tensor is from another: the three figures people compare numerics with.

- **SNR** in dB, `10 log10(sum want² / sum (got - want)²)`: the share of the signal the error is,
  independent of the tensor's scale (int8 quantization of a well-behaved layer: 30-40 dB; fp16:
  60-80 dB; a broken layer: under 20). Identical tensors have an infinite SNR.
- **cosine** similarity of the flattened tensors: the direction, blind to a scale error.
- **max |diff|**: the worst element, in the tensor's own units.

The sums run in float64 over each tensor; a boundary of several tensors gets its worst tensor's
figures (lowest SNR and cosine, largest difference). Pooling them instead would let one tensor
of huge magnitude decide: an additive attention mask of -3.4e38 beside the hidden states has
an SNR of 800 dB whatever the hidden states' error. Only floating-point tensors count: an
integer or boolean boundary tensor (a shape, a mask) either matches or is counted in
`mismatched`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ErrorStats", "Accumulator", "is_float"]


def is_float(array: np.ndarray) -> bool:
    return np.issubdtype(array.dtype, np.floating)


@dataclass(frozen=True)
class ErrorStats:
    """One module boundary's error against the float model: `tensors` float tensors compared."""

    snr_db: float
    cosine: float
    max_abs_diff: float
    tensors: int
    mismatched: int = 0
    """Integer or boolean tensors that differ (a shape or a mask the derived model computes otherwise)."""

    def to_dict(self) -> dict:
        return {
            "snr_db": _finite_or_none(self.snr_db),
            "cosine": _finite_or_none(self.cosine),
            "max_abs_diff": _finite_or_none(self.max_abs_diff),
            "tensors": self.tensors,
            "mismatched": self.mismatched,
        }


def _finite_or_none(value: float) -> float | str | None:
    """JSON has no infinity: an exact match is the string "inf"; NaN (no data) is null."""
    if math.isnan(value):
        return None
    return "inf" if math.isinf(value) else round(value, 6)


class Accumulator:
    """The worst figures over the tensors of one boundary; `stats()` turns them into `ErrorStats`."""

    def __init__(self) -> None:
        self.snr_db = math.inf
        self.cosine = 1.0
        self.max_abs_diff = 0.0
        self.tensors = 0
        self.mismatched = 0
        self.equal = 0

    def add(self, want: np.ndarray, got: np.ndarray) -> None:
        """Compare `got` (the derived model's value) with `want` (the float model's)."""
        if not is_float(want):
            differs = want.shape != got.shape or not np.array_equal(want, got)
            self.mismatched += int(differs)
            self.equal += int(not differs)
            return
        w = want.astype(np.float64, copy=False).ravel()
        g = got.astype(np.float64, copy=False).ravel()
        finite = np.isfinite(w) & np.isfinite(g)
        if not finite.all():
            if (np.isfinite(w) != np.isfinite(g)).any():
                self.max_abs_diff = math.inf
            w, g = w[finite], g[finite]
        diff = g - w
        signal, noise = float(w @ w), float(diff @ diff)
        self.snr_db = min(self.snr_db, _snr(signal, noise))
        self.cosine = min(self.cosine, _cosine(float(w @ g), signal, float(g @ g)))
        if diff.size:
            self.max_abs_diff = max(self.max_abs_diff, float(np.abs(diff).max()))
        self.tensors += 1

    def stats(self) -> ErrorStats | None:
        """None when nothing was compared; integer tensors alone: exact when all are equal."""
        if not self.tensors and not self.mismatched and not self.equal:
            return None
        if not self.tensors:
            if self.mismatched:
                return ErrorStats(math.nan, math.nan, math.nan, 0, self.mismatched)
            return ErrorStats(math.inf, 1.0, 0.0, 0)
        return ErrorStats(self.snr_db, self.cosine, self.max_abs_diff, self.tensors, self.mismatched)


def _snr(signal: float, noise: float) -> float:
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def _cosine(dot: float, want_norm: float, got_norm: float) -> float:
    if want_norm == 0.0 and got_norm == 0.0:
        return 1.0
    if want_norm == 0.0 or got_norm == 0.0:
        return 0.0
    return dot / math.sqrt(want_norm * got_norm)
