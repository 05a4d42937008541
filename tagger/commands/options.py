"""Parameter values checked where they enter the library: every bad one a `ParameterError` (exit 2).

A caller may hand over what a command line parses (fire: `--workers 0` as an int, `--min_direct x`
as a str, `--op_types MatMul,Gemm` as a tuple). Each helper accepts what the parameter means,
converts it, and refuses anything else with one line naming the parameter; the command line
spells that name as its flag (`tagger.errors.param`).
"""

from __future__ import annotations

from collections.abc import Collection

from tagger.errors import ParameterError

__all__ = ["check_choice", "check_integer", "check_names", "check_percentage"]


def check_integer(name: str, value: object, least: int = 0) -> int | None:
    """An integer `>= least` (None passes: the parameter was not given)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ParameterError(name, f"must be an integer >= {least}, got {value!r}")
    return value


def check_percentage(name: str, value: object) -> float | None:
    """A number between 0 and 100 (None passes)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise ParameterError(name, f"must be a percentage between 0 and 100, got {value!r}")
    return float(value)


def check_choice(name: str, value: object, choices: Collection[str]) -> str:
    """One of `choices`."""
    if not isinstance(value, str) or value not in choices:
        raise ParameterError(name, f"must be one of {', '.join(sorted(choices))}, got {value!r}")
    return value


def check_names(name: str, value: object) -> list[str] | None:
    """Names separated by commas: fire reads `MatMul,Gemm` as a tuple, `MatMul` as a str, `[a, b]`
    as a list (None passes; a number, a flag without value or an empty list is refused)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list | tuple) else None
    if items is None or not all(isinstance(item, str) for item in items) or not any(item.strip() for item in items):
        raise ParameterError(name, f"needs names separated by commas (MatMul,Gemm), got {value!r}")
    return [item.strip() for item in items if item.strip()]
