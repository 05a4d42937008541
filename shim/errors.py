"""One clear error for a failed export instead of torch's multi-page dumps."""

from __future__ import annotations

import re

__all__ = ["ExportFailed"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PART = 240


class ExportFailed(RuntimeError):
    """torch.onnx.export raised: the message names the model class, the exporter and torch's
    first message line (plus its root cause's first line), with a hint to try the other exporter.

    The full torch exception is kept in `original` (not chained, so tracebacks stay short) and
    what torch wrote to stderr during the export in `output`.
    """

    def __init__(self, model_class: str, exporter: str, original: BaseException, output: str = "") -> None:
        self.model_class = model_class
        self.exporter = exporter
        self.original = original
        self.output = output
        self.detail = _describe(original)
        other = "dynamo=False" if exporter == "dynamo" else "dynamo=True"
        super().__init__(
            f"torch.onnx.export could not export {model_class} with the {exporter} exporter: {self.detail} "
            f"(try {other}; torch's full error is in this exception's .original)"
        )


def _describe(exc: BaseException) -> str:
    """`Type: first line` of the innermost cause, after the first sentence of torch's own message
    when that is a different exception (the dynamo exporter wraps the real error)."""
    root = exc
    seen = {id(root)}
    while root.__cause__ is not None and id(root.__cause__) not in seen:
        root = root.__cause__
        seen.add(id(root))
    inner = f"{type(root).__name__}: {_first_line(root)}"
    if root is exc:
        return inner
    outer = _first_line(exc)
    sentence = outer.split(". ", 1)[0].rstrip(".")
    return f"{sentence}. {inner}" if sentence else inner


def _first_line(exc: BaseException) -> str:
    text = _ANSI.sub("", str(exc))
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= _PART else line[: _PART - 1] + "…"
