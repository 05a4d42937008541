"""The Python API; the CLI calls exactly these functions.

>>> from tagger import retag, report
>>> r = retag("model.onnx")            # writes model.tagged.onnx, returns a CoverageReport
>>> print(report("model.onnx").to_markdown())
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from tagger.errors import InputError, OutputError, ParameterError, TaggerError, param
from tagger.evidence import ExternalSource
from tagger.model.keys import MODULE_MAP_KEY
from tagger.model.modelio import check_output_path, default_output, load_model, load_model_and_locations, save_model, save_text
from tagger.pipeline.tagging import TaggingResult, tag_model
from tagger.reporting.certainty import result_kinds
from tagger.reporting.coverage_report import CoverageReport, build_report
from tagger.transfer.module_tree import read_module_tree, tree_notes
from tagger.writing.module_map import record_module_tree
from tagger.writing.namespace import write_namespaces
from tagger.writing.validate import check_index, diagnose
from tagger.writing.write import write_tags

if TYPE_CHECKING:
    from tagger.transfer.reference import ReferenceSource

__all__ = ["reference_source", "report", "retag", "tag_proto", "transfer_sources"]


def tag_proto(
    model: onnx.ModelProto,
    name: str = "<memory>",
    namespace: bool = False,
    *,
    reference: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    modules: str | os.PathLike | None = None,
) -> CoverageReport:
    """Tag an in-memory model in place (every node, subgraphs and functions included).

    `namespace=True` also writes Model Explorer's `namespace` entry where a node has none
    (`tagger.writing.namespace`). `reference` (the ONNX file the model was made from) and `weights` (its
    checkpoint) add evidence (`tagger.transfer`); external data of `model` is looked for beside
    `name` when that is the path of its file. `modules` (a file of the model's `named_modules()`
    paths, `tagger.transfer.module_tree`) checks every module name against the real tree.
    """
    base = _base_dir(name)
    tree = _tree(modules)
    sources = transfer_sources(reference, weights, base)
    with _gc_paused():
        return _tag_proto(model, name, namespace, sources=sources, base_dir=base, tree=tree)


def tag_proto_kinds(model: onnx.ModelProto, name: str = "") -> list[str]:
    """Tag an in-memory model in place, as `tag_proto` does, and return every node's kind (direct,
    certain, chosen, fallback; `tagger.model.index` order): a caller that also reports kinds
    (`extract`) then does not tag the model a second time to learn them (twice the time and the
    peak memory at 100k nodes)."""
    base = _base_dir(name)
    with _gc_paused():
        result, _ = _tag_checked(model, (), base)
        write_tags(result.index.nodes, result.index.views, result.assignments)
        return result_kinds(result)


def _base_dir(name: str) -> Path | None:
    """Where a model's external data lies: beside `name` when that is the path of its file."""
    return Path(name).parent if name and Path(name).is_file() else None


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


def _tree(modules: str | os.PathLike | None) -> dict[str, str | None] | None:
    return None if modules is None else read_module_tree(modules)


def transfer_sources(
    reference: str | os.PathLike | None, weights: str | os.PathLike | None, base_dir: Path | None
) -> list[ExternalSource]:
    """The sources for `reference` and `weights` (none when neither is given); `base_dir` is
    the tagged model's directory (its external data), None for a model only in memory. A bad
    reference or checkpoint raises `InputError` here, before any work."""
    sources: list[ExternalSource] = []
    if reference is not None:
        sources.append(reference_source(_path(reference, "reference"), base_dir))
    if weights is not None:  # imported only by the runs that use it: a plain retag does not pay its imports
        from tagger.transfer.weights import WeightsSource

        sources.append(WeightsSource(_path(weights, "weights"), base_dir))
    return sources


def reference_source(
    reference: Path, base_dir: Path | None, model: onnx.ModelProto | None = None, tagged: TaggingResult | None = None
) -> ReferenceSource:
    """The file `reference` as a source: loaded now (a bad reference fails before any work), tagged
    here as `retag` tags it (with its directory, where its weights' values are read) when the source
    proposes. `model`: its structure when it is not the file's as stored (`profile` runs a copy with
    unique node names), its weights still read beside `reference`; `tagged`: `model` already tagged
    that way by the caller, not tagged again."""
    from tagger.transfer.reference import ReferenceSource

    model = load_model(reference) if model is None else model
    if tagged is not None:
        return ReferenceSource(reference, base_dir, lambda: tagged)
    return ReferenceSource(reference, base_dir, lambda: tag_model(model, base_dir=reference.parent))


def _path(value: object, parameter: str) -> Path:
    if isinstance(value, bool | list | tuple | dict) or value == "":
        raise ParameterError(parameter, f"needs one path, got {value!r}")
    return Path(str(value))


def _tag_checked(
    model: onnx.ModelProto,
    sources: Sequence[ExternalSource] = (),
    base_dir: Path | None = None,
    tree: dict[str, str | None] | None = None,
) -> tuple[TaggingResult, list[str]]:
    """Decide the tags, then refuse what is no valid graph (`tagger.writing.validate`) before anything
    is written; returns the report notes for what is only unusual (and what `sources` say)."""
    try:
        result = tag_model(model, extra=sources, base_dir=base_dir, tree=tree)
    except TaggerError:
        raise  # a refused reference or checkpoint says so itself
    except Exception:
        diagnose(model)  # undecodable UTF-8 is bad input; anything else stays an internal error
        raise
    notes = check_index(result.index) + [note for source in sources for note in source.notes]
    return result, notes + tree_notes(result.context)


def _given(sources: Sequence[ExternalSource]) -> list[str]:
    """The parameters of the transfer sources in use (`reference`, `weights`)."""
    return [source.PARAMETER for source in sources]


def _tag_proto(
    model: onnx.ModelProto,
    name: str,
    namespace: bool = False,
    output: str | None = None,
    inferred: bool = False,
    sources: Sequence[ExternalSource] = (),
    base_dir: Path | None = None,
    tree: dict[str, str | None] | None = None,
) -> CoverageReport:
    result, notes = _tag_checked(model, sources, base_dir, tree)
    namespaced = write_namespaces(result.index.nodes, result.assignments) if namespace else 0
    changed = write_tags(result.index.nodes, result.index.views, result.assignments)
    if namespaced:
        notes.append(f"wrote Model Explorer's namespace on {namespaced} nodes")
    if record_module_tree(model, result.context.tree):
        notes.append(f"recorded the module tree the names were checked against in the model's {MODULE_MAP_KEY} entry")
    return build_report(result, name, notes, changed, output, inferred, _given(sources))


def retag(
    model: str | os.PathLike,
    output: str | os.PathLike | None = None,
    report: str | os.PathLike | None = None,
    inplace: bool = False,
    namespace: bool = False,
    force: bool = False,
    reference: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    modules: str | os.PathLike | None = None,
) -> CoverageReport:
    """Tag every node of the ONNX file `model` and write the tagged model.

    Output goes to `output`, or `<stem>.tagged.onnx` beside the input, or over the input with
    `inplace=True`. `report` (a `.json` or `.md` path) also writes the coverage report.
    `namespace=True` also writes Model Explorer's `namespace` entry on nodes that have none.
    An output or report path that is a symbolic link is refused unless `force=True`, which
    replaces the link itself (a file a link points to is never written).
    `reference` (the ONNX file a tool started from) and `weights` (the checkpoint: a
    .safetensors file, a directory of shards, or a torch state dict) add evidence (`tagger.transfer`).
    `modules`: a file of the model's true module paths (`tagger.transfer.module_tree`).
    """
    source = Path(model)
    destination = _destination(source, output, inplace)
    report_path = _report_path(report)
    proto, locations = load_model_and_locations(source)
    tree = _tree(modules)
    sources = transfer_sources(reference, weights, source.parent)
    check_output_path(destination, force)  # after the input's own errors, before the work
    if report_path is not None:
        check_output_path(report_path, force, "report")
    with _gc_paused():
        summary = _tag_proto(
            proto,
            source.name,
            namespace,
            output=str(destination),
            inferred=report_path is not None,
            sources=sources,
            base_dir=source.parent,
            tree=tree,
        )
    # the tags only add to the input's bytes: its size tells whether the output is small
    save_model(proto, source, destination, durable=inplace, locations=locations, size_hint=source.stat().st_size)
    if report_path is not None:
        text = summary.to_json() if report_path.suffix == ".json" else summary.to_markdown()
        save_text(text, report_path)
    return summary


def report(
    model: str | os.PathLike,
    reference: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    modules: str | os.PathLike | None = None,
) -> CoverageReport:
    """Analyse `model` and return its coverage report (with every inherited node's bound);
    nothing is written (`reference`, `weights`, `modules`: as for `retag`)."""
    source = Path(model)
    proto = load_model(source)
    tree = _tree(modules)
    sources = transfer_sources(reference, weights, source.parent)
    with _gc_paused():
        result, notes = _tag_checked(proto, sources, source.parent, tree)
        return build_report(result, source.name, notes, inferred=True, given=_given(sources))


def _destination(source: Path, output: str | os.PathLike | None, inplace: bool) -> Path:
    if inplace and output is not None:
        raise InputError(f"{param('inplace')} and {param('output')} exclude each other")
    if inplace:
        return source
    destination = Path(output) if output is not None else default_output(source)
    if destination.exists() and source.exists() and os.path.samefile(destination, source):
        raise OutputError(f"output {destination} is the input; use {param('inplace')} to overwrite it")
    return destination


def _report_path(report: str | os.PathLike | None) -> Path | None:
    if report is None:
        return None
    path = Path(report)
    if path.suffix not in (".json", ".md"):
        raise ParameterError("report", f"must end in .json or .md: {path}")
    return path
