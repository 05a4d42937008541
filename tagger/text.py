"""Putting text from a model in front of people: terminal, Markdown and HTML escaping, sort keys.

Everything a model names (node, tensor and module names, tags, file names) is untrusted: it may
hold escape sequences, bidi overrides, Markdown syntax or HTML. The same rules as the coverage
report: control characters become visible `\\xNN` escapes, then the target's syntax is escaped.

Text the tagger writes names the library's parameters, never a command-line flag: `param("weights")`
marks the name, `spelled` spells it for whoever reads the text: as the parameter from the library
(`weights`), as its flag under the command line (`--weights`: the CLI runs its commands in
`spelling`, and prints an error's line through the same speller).
"""

from __future__ import annotations

import contextlib
import html
import json
import re
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import asdict

__all__ = [
    "LIST_LIMIT",
    "JsonReport",
    "as_parameter",
    "html_text",
    "listing",
    "markdown",
    "natural",
    "param",
    "pct",
    "spelled",
    "spelling",
    "terminal",
]

LIST_LIMIT = 20
"""How many items a terminal listing shows before it points at the JSON report."""

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#|!])")


_NAMED = re.compile("\ue000(\\w+)\ue001")
"""A parameter's name as `param` marks it (characters of Unicode's private use area)."""
_INSTEAD = {"json": "to_json()"}
"""Flags of the command line that are no parameter: what the library offers instead."""


def param(parameter: str) -> str:
    """`parameter` as an error message or a report's text mentions it: spelled when the text is
    shown (`spelled`), as the parameter by the library, as its flag by the command line."""
    return f"\ue000{parameter}\ue001"


def as_parameter(parameter: str) -> str:
    """How the library spells a parameter its text names: by its name."""
    return _INSTEAD.get(parameter, parameter)


_SPELLING: ContextVar[Callable[[str], str]] = ContextVar("spelling", default=as_parameter)


def spelled(text: str, spell: Callable[[str], str] | None = None) -> str:
    """`text` with each parameter it names (`param`) spelled by `spell`, by default for its reader:
    as the parameter (`as_parameter`), or as the command line asked (`spelling`)."""
    speller = _SPELLING.get() if spell is None else spell
    return _NAMED.sub(lambda found: speller(found[1]), text)


@contextlib.contextmanager
def spelling(spell: Callable[[str], str]) -> Iterator[None]:
    """Within it, `spelled` names parameters by `spell` (the command line: as its flags)."""
    token = _SPELLING.set(spell)
    try:
        yield
    finally:
        _SPELLING.reset(token)


def terminal(text: str) -> str:
    """Control characters (escape sequences, bidi overrides) become visible escapes."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def markdown(text: str) -> str:
    """Terminal-safe, and characters with Markdown meaning escaped."""
    return _MARKDOWN.sub(r"\\\1", terminal(text))


def html_text(text: str) -> str:
    """Terminal-safe, and `& < > " '` as HTML entities (safe in text and in quoted attributes)."""
    return html.escape(terminal(text), quote=True)


def natural(path: str) -> list:
    """Sort key that puts `layer.2` before `layer.10`."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", path)]


def pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "n/a"


def listing(title: str, items: list[str]) -> list[str]:
    """A titled terminal listing of already-escaped items, cut at LIST_LIMIT."""
    lines = ["", f"{title} ({len(items)}):"]
    lines += [f"  {item}" for item in items[:LIST_LIMIT]]
    if len(items) > LIST_LIMIT:
        lines.append(spelled(f"  … {len(items) - LIST_LIMIT} more (full list in {param('json')})"))
    return lines


class JsonReport:
    """`to_dict` (the dataclass's fields) and `to_json` (indented, non-ASCII kept) shared by the
    report records the CLI prints with `--json`; a record adds derived fields by extending `to_dict`."""

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)
