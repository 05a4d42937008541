"""`tagger` exports its whole public API, and `__all__` says exactly what that is."""

from __future__ import annotations

import dataclasses
import inspect
import typing

import tagger
from tagger import errors


def _public_names(namespace) -> set[str]:
    return {name for name in dir(namespace) if not name.startswith("_") and not inspect.ismodule(getattr(namespace, name))}


def _tagger_classes(hint) -> set[type]:
    """The tagger-defined classes a type hint names (through unions, lists, dicts, optionals)."""
    if inspect.isclass(hint) and hint.__module__.startswith("tagger"):
        return {hint}
    return {cls for arg in typing.get_args(hint) for cls in _tagger_classes(arg)}


def _reachable(classes: set[type]) -> set[type]:
    """`classes` and every tagger class their dataclass fields hold, transitively."""
    seen: set[type] = set()
    stack = list(classes)
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        if dataclasses.is_dataclass(cls):
            stack.extend(c for hint in typing.get_type_hints(cls).values() for c in _tagger_classes(hint))
    return seen


def test_all_lists_exactly_the_public_names():
    assert set(tagger.__all__) == _public_names(tagger)
    assert len(tagger.__all__) == len(set(tagger.__all__))


def test_every_error_is_exported():
    assert {name for name in errors.__all__ if name.endswith(("Error", "Missed", "Failed", "Dependency"))} <= set(tagger.__all__)


def test_every_record_a_public_function_returns_is_exported():
    functions = [getattr(tagger, name) for name in tagger.__all__ if inspect.isfunction(getattr(tagger, name))]
    returned = {cls for function in functions for cls in _tagger_classes(typing.get_type_hints(function).get("return"))}
    missing = {cls.__name__ for cls in _reachable(returned) if getattr(tagger, cls.__name__, None) is not cls}
    assert not missing
