"""Errors with meaning: each maps to one clear message line and a documented exit code.

A message names the library's parameters, never a command-line flag: `param("max_fallback")` marks
the name, `str(error)` spells it as the parameter (`max_fallback must be ...`) and the command line
as its flag (`--max_fallback must be ...`, through `TaggerError.spelled`). A report's notes name
parameters the same way (`tagger.text.spelled`).
"""

from __future__ import annotations

from collections.abc import Callable

from tagger.text import as_parameter, param, spelled, terminal

__all__ = [
    "EXIT_CODES",
    "InputError",
    "MissingDependency",
    "ModelsFailed",
    "OutputError",
    "ParameterError",
    "TaggerError",
    "ThresholdMissed",
    "VerificationFailed",
    "one_line",
    "param",
]


class TaggerError(Exception):
    """Base of every error the tagger reports to a user (never a traceback)."""

    exit_code = 1

    def __str__(self) -> str:
        return self.spelled(as_parameter)

    @property
    def message(self) -> str:
        """The message with the parameters it names still marked: for an error that extends another's."""
        return super().__str__()

    def spelled(self, spell: Callable[[str], str]) -> str:
        """The message with each parameter it names (`param`) spelled by `spell`."""
        return spelled(self.message, spell)


class InputError(TaggerError):
    """The input path or file is unusable: missing, not ONNX, truncated, unsafe."""

    exit_code = 2


class ParameterError(InputError):
    """A parameter's value is refused: `parameter` names it, `problem` says what it must be."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{param(parameter)} {problem}")
        self.parameter = parameter
        self.problem = problem

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return type(self), (self.parameter, self.problem)  # from a worker process, as raised


class OutputError(TaggerError):
    """The output cannot be written where it was asked to go."""

    exit_code = 3


class ThresholdMissed(TaggerError):
    """`tagger audit`: every model was audited, and some missed a coverage threshold."""

    exit_code = 4


class MissingDependency(TaggerError):
    """A command needs an optional package that is not installed; the message says how to get it."""

    exit_code = 2

    def __init__(self, feature: str, package: str) -> None:
        super().__init__(f"{feature} needs {package} (pip install {package})")
        self.package = package


class ModelsFailed(TaggerError):
    """`tagger audit`: some files could not be audited (their coverage is unknown);
    `tagger extract --all`: some modules could not be extracted."""

    exit_code = 5


class VerificationFailed(TaggerError):
    """`tagger extract --verify`: an extracted model does not reproduce the full model's tensors."""

    exit_code = 6


EXIT_CODES = {
    0: "success",
    1: "internal tagger error",
    2: "bad input (missing path, not an ONNX model, truncated or corrupt, unsafe or missing external data, a cycle, "
    "a model onnxruntime cannot load or inputs it refuses), "
    "a bad option value, an unknown command or flag, or a missing optional package (onnxruntime)",
    3: "output cannot be written (missing directory, a directory, a symbolic link without --force, the input)",
    4: "audit: a model missed a coverage threshold",
    5: "audit: a file could not be audited; extract --all: a module could not be extracted",
    6: "extract --verify: an extracted model does not reproduce the full model's tensors",
}


def one_line(message: object) -> str:
    """A message as one terminal-safe line: control characters (newlines, escape sequences,
    bidi overrides; a model's names may hold any of them) become visible `\\xNN` escapes."""
    return terminal(str(message))
