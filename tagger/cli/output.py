"""How the commands print a report object, and the one check several commands share."""

from __future__ import annotations

from tagger.errors import InputError

__all__ = ["check_inputs_or_dims", "show"]


def show(result, json: bool, markdown: bool) -> None:
    """Print a report object as JSON, Markdown or terminal text."""
    if json:
        print(result.to_json())
    elif markdown:
        print(result.to_markdown(), end="")
    else:
        print(result.to_text())


def check_inputs_or_dims(inputs: object, dim: object) -> None:
    """Refuse both an inputs file and generated sizes: one of them gives the feeds."""
    if inputs is not None and dim != 1:
        raise InputError("--inputs gives the arrays, --dim sizes generated ones: pass one of them")
