"""Option values checked where they enter: every bad value is an `InputError` (exit 2).

fire hands options over as it parses them: `--depth -1` as an int, `--depth x` as a str,
`--module 0` as an int, `--tag [a,b]` as a list, a flag followed by a path as that path. Each
helper accepts what the option means, converts it, and refuses anything else with one line
naming the option.
"""

from __future__ import annotations

from collections.abc import Collection

from tagger.errors import InputError

__all__ = ["check_choice", "check_flag", "check_integer", "check_names", "check_percentage", "check_text"]


def check_integer(name: str, value: object, least: int = 0) -> int | None:
    """An integer `>= least` (None passes: the option was not given)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InputError(f"--{name} must be an integer >= {least}, got {value!r}")
    return value


def check_percentage(name: str, value: object) -> float | None:
    """A number between 0 and 100 (None passes)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise InputError(f"--{name} must be a percentage between 0 and 100, got {value!r}")
    return float(value)


def check_text(name: str, value: object) -> str | None:
    """One value, as text: fire reads `--module 0` as an int and `--module 0.10` as a float
    (None passes; a flag without value, a list or a dict is refused)."""
    if value is None:
        return None
    if isinstance(value, bool | list | tuple | dict):
        raise InputError(f"--{name} needs one value, got {value!r}")
    return str(value)


def check_flag(name: str, value: object) -> bool:
    """A flag: fire gives a flag followed by a value that value instead of True."""
    if not isinstance(value, bool):
        raise InputError(f"--{name} takes no value, got {value!r}: put the flags after the paths")
    return value


def check_choice(name: str, value: object, choices: Collection[str]) -> str:
    """One of `choices`."""
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"--{name} must be one of {', '.join(sorted(choices))}, got {value!r}")
    return value


def check_names(name: str, value: object) -> list[str] | None:
    """Names separated by commas: fire reads `MatMul,Gemm` as a tuple, `MatMul` as a str, `[a, b]`
    as a list (None passes; a number, a flag without value or an empty list is refused)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list | tuple) else None
    if items is None or not all(isinstance(item, str) for item in items) or not any(item.strip() for item in items):
        raise InputError(f"--{name} needs names separated by commas (MatMul,Gemm), got {value!r}")
    return [item.strip() for item in items if item.strip()]
