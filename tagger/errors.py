"""Errors with meaning: each maps to one clear message line and a documented exit code."""

from __future__ import annotations

__all__ = ["TaggerError", "InputError", "OutputError", "EXIT_CODES"]


class TaggerError(Exception):
    """Base of every error the tagger reports to a user (never a traceback)."""

    exit_code = 1


class InputError(TaggerError):
    """The input path or file is unusable: missing, not ONNX, truncated, unsafe."""

    exit_code = 2


class OutputError(TaggerError):
    """The output cannot be written where it was asked to go."""

    exit_code = 3


EXIT_CODES = {
    0: "success",
    1: "internal tagger error",
    2: "bad input (missing path, not an ONNX model, truncated, unsafe external data)",
    3: "output cannot be written",
}
