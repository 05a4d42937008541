"""The Python API; the CLI calls exactly these functions.

>>> from tagger import retag, report
>>> r = retag("model.onnx")            # writes model.tagged.onnx, returns a Report
>>> print(report("model.onnx").to_markdown())
"""

from __future__ import annotations

import contextlib
import gc
import os
from pathlib import Path

import onnx

from tagger.coverage import Report, build_report
from tagger.errors import InputError, OutputError
from tagger.modelio import default_output, load_model, save_model, save_text
from tagger.tagging import tag_model
from tagger.write import write_tags

__all__ = ["retag", "report", "tag_proto"]


def tag_proto(model: onnx.ModelProto, name: str = "<memory>", strategy: str = "context") -> Report:
    """Tag an in-memory model in place (every node, subgraphs and functions included)."""
    with _gc_paused():
        return _tag_proto(model, name, strategy)


@contextlib.contextmanager
def _gc_paused():
    """Tagging allocates many small acyclic objects; the cyclic collector only slows it down."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _tag_proto(model: onnx.ModelProto, name: str, strategy: str) -> Report:
    result = tag_model(model, strategy)
    changed = write_tags(result.index.nodes, result.assignments)
    summary = build_report(result, name)
    summary.changed_nodes = changed
    return summary


def retag(
    model: str | os.PathLike,
    output: str | os.PathLike | None = None,
    report: str | os.PathLike | None = None,
    inplace: bool = False,
    strategy: str = "context",
) -> Report:
    """Tag every node of the ONNX file `model` and write the tagged model.

    Output goes to `output`, or `<stem>.tagged.onnx` beside the input, or over the input with
    `inplace=True`. `report` (a `.json` or `.md` path) also writes the coverage report.
    """
    source = Path(model)
    destination = _destination(source, output, inplace)
    report_path = _report_path(report)
    proto = load_model(source)
    summary = tag_proto(proto, source.name, strategy)
    save_model(proto, source, destination)
    summary.output = str(destination)
    if report_path is not None:
        text = summary.to_json() if report_path.suffix == ".json" else summary.to_markdown()
        save_text(text, report_path)
    return summary


def report(model: str | os.PathLike, strategy: str = "context") -> Report:
    """Analyse `model` and return its coverage report; nothing is written."""
    source = Path(model)
    with _gc_paused():
        result = tag_model(load_model(source), strategy)
        return build_report(result, source.name)


def _destination(source: Path, output: str | os.PathLike | None, inplace: bool) -> Path:
    if inplace and output is not None:
        raise InputError("--inplace and --output exclude each other")
    if inplace:
        return source
    destination = Path(output) if output is not None else default_output(source)
    if destination.exists() and source.exists() and os.path.samefile(destination, source):
        raise OutputError(f"output {destination} is the input; use --inplace to overwrite it")
    return destination


def _report_path(report: str | os.PathLike | None) -> Path | None:
    if report is None:
        return None
    path = Path(report)
    if path.suffix not in (".json", ".md"):
        raise InputError(f"--report must end in .json or .md: {path}")
    return path
