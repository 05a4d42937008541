"""Errors with meaning: each maps to one clear message line and a documented exit code."""

from __future__ import annotations

import re

__all__ = ["TaggerError", "InputError", "OutputError", "ThresholdMissed", "ModelsFailed", "EXIT_CODES", "one_line"]


class TaggerError(Exception):
    """Base of every error the tagger reports to a user (never a traceback)."""

    exit_code = 1


class InputError(TaggerError):
    """The input path or file is unusable: missing, not ONNX, truncated, unsafe."""

    exit_code = 2


class OutputError(TaggerError):
    """The output cannot be written where it was asked to go."""

    exit_code = 3


class ThresholdMissed(TaggerError):
    """`tagger audit`: every model was audited, and some missed a coverage threshold."""

    exit_code = 4


class ModelsFailed(TaggerError):
    """`tagger audit`: some files could not be audited (their coverage is unknown)."""

    exit_code = 5


EXIT_CODES = {
    0: "success",
    1: "internal tagger error",
    2: "bad input (missing path, not an ONNX model, truncated or corrupt, unsafe or missing external data, a cycle)",
    3: "output cannot be written (missing directory, a directory, a symbolic link without --force, the input)",
    4: "audit: a model missed a coverage threshold",
    5: "audit: a file could not be audited",
}

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def one_line(message: object) -> str:
    """A message as one terminal-safe line: control characters (newlines, escape sequences,
    bidi overrides; a model's names may hold any of them) become visible `\\xNN` escapes."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", str(message))
