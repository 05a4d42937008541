"""The sizes a caller asks for, for a model's dynamic input dims: one default, or a size per symbol.

`parse_dim_option` reads the `dim` parameter as a command line gives it (`N`, `NAME=VALUE`,
`N,NAME=VALUE,...`, or fire's int, dict or list) into `DimSettings`; `tagger.inputs.input_rules` decides
the sizes with them (rule 6: given sizes win).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from tagger.errors import ParameterError

__all__ = ["DimSettings", "parse_dim_option"]


@dataclass(frozen=True)
class DimSettings:
    """Sizes asked for on the command line: `default` for every dynamic dim, `named` per symbol."""

    default: int = 1
    named: Mapping[str, int] = field(default_factory=dict)


def parse_dim_option(value: object) -> DimSettings:
    """`--dim N`, `--dim NAME=VALUE[,NAME=VALUE...]` (also `N,NAME=VALUE`), or fire's dict/list."""
    default = 1
    named: dict[str, int] = {}
    for key, size in _dim_items(value):
        if key is None:
            if size < 1:
                raise ParameterError("dim", f"N must be a positive integer, got {size}")
            default = size
        else:
            if size < 0:
                raise ParameterError("dim", f"{key}=VALUE must be a non-negative integer, got {size}")
            named[key] = size
    return DimSettings(default, named)


def _dim_items(value: object) -> Iterator[tuple[str | None, int]]:
    if isinstance(value, bool):
        raise ParameterError("dim", f"takes N or NAME=VALUE, got {value!r}")
    if isinstance(value, int):
        yield None, value
    elif isinstance(value, dict):
        for key, size in value.items():
            yield str(key), _size(size, key)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _dim_items(item)
    elif isinstance(value, str):
        for part in filter(None, (p.strip() for p in value.split(","))):
            key, sep, size = part.rpartition("=")
            yield (key.strip() if sep else None), _size(size.strip(), key)
    else:
        raise ParameterError("dim", f"takes N or NAME=VALUE, got {value!r}")


def _size(text: object, key: object) -> int:
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    try:
        return int(str(text))
    except ValueError:
        wanted = f"{key}=VALUE needs an integer VALUE" if key else "takes N or NAME=VALUE"
        raise ParameterError("dim", f"{wanted}, got {text!r}") from None
