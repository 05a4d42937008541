"""Cut a module out of a model as a valid, runnable ONNX model.

`extract("model.onnx", module="m.encoder.layer.0")` writes a model that computes what that
module computes inside the full model, from the same tensors, under the same names. The rules:

1. **Selection.** The main-graph nodes whose `hierarchy.module` is `module` or lies below it
   (`""` is the whole model), or whose `hierarchy.tag` matches the glob `tag`. A model with an
   untagged node is tagged in memory first (`tagger.api.tag_proto`; existing tags are kept).
   Nodes inside If/Loop/Scan bodies go with the node that owns the body. A module no main-graph
   node belongs to is cut from the body it lives in (`branch` picks one when it lives in several:
   optimum's merged decoder has every module in both branches of one `If`); `extract_all` cuts
   the modules of bodies whose owner lies above the depth, one file per branch
   (`tagger.commands.extract.body`).
2. **Pulled producers** (`pull_producers=True`). A tensor the selection reads from outside is
   computed inside the extracted model, instead of entering it as an input, when its producer
   is *input-independent*: every transitive input is an initializer or the output of a node
   without inputs, and no op on the way is random (`RandomNormal`, `Bernoulli`, ...). Constant,
   ConstantOfShape of a constant, a Shape of an initializer, the Identity of a shared weight:
   such chains compute the same values anywhere, so a copy costs nothing and the module runs
   from its real activations only. A producer that depends on a graph input (a mask computed
   once by the parent, a Shape of the hidden states) stays outside and its value enters as an
   input. Pulled nodes are helpers: their tensors never become outputs.
3. **Boundary.** Inputs are the tensors the extracted nodes read (outer-scope names read inside
   their bodies included) that nothing inside produces and that are not initializers; outputs
   are the tensors the selected nodes produce that a node outside reads or that the full model
   returns. Both keep their names from the full model. Types come from the full model's graph
   inputs, outputs and value_info, else from shape inference of its structure; a tensor whose
   element type stays unknown is an error, never a guessed float.
4. **Carried along.** The initializers the nodes read (external data stays external: the entries
   still point into the same data file, shared beside the input or copied beside the output as
   `retag` does, and never loaded); the opset imports, plus one for any domain a node uses
   without an import; the model-local functions the nodes call; model metadata.
5. **Nodes verbatim.** onnx-graphsurgeon builds the graph (node subset, boundary, `cleanup`)
   from a structure-only copy holding just the candidate nodes, so one layer of a huge model
   costs the layer, and decides which nodes the outputs need. The model is then assembled from
   the source's own protos, matched by identity: a graphsurgeon export would drop node
   `metadata_props` (the tags), `doc_string` and the value types inside bodies, so it is not
   made at all (everything it wrote would be replaced).
6. **Validated.** The model is written beside the output under a temporary name, must pass
   `onnx.checker.check_model(full_check=True)`, and only then takes the output's name. When the
   checker refuses it, onnxruntime is the arbiter: a model it loads is written, and the report
   states the checker's objection (`ExtractReport.checker`). The model a user ships is the one
   onnxruntime runs, and producers write models the checker refuses that it runs (the
   onnxruntime-genai builder's constants fail the checker's shape inference, `rank (1) vs (0)`;
   onnxruntime's optimizer puts its own ops in the default domain). A model neither accepts is
   not written. Without onnxruntime installed, the checker decides (runtime ops in the default
   domain set aside).

`verify=True` proves the result (`tagger.commands.extract.verify`): the extracted model, fed the full model's
values of its inputs, must reproduce the full model's values of its outputs.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from tagger.commands.extract.build import build_model, refuse_source_files, write_checked
from tagger.commands.extract.cut import Cut, all_modules, locate, make_cut, modules_at_depth, scoped_groups
from tagger.commands.extract.report import ExtractAllReport, ExtractReport, TensorSpec, extract_report, index_json
from tagger.commands.extract.source import Source, load_source
from tagger.commands.extract.verify import boundary_values, record_verification, unverifiable
from tagger.commands.options import check_integer
from tagger.errors import InputError, OutputError, ParameterError, TaggerError, param
from tagger.inputs.feeds import DimSettings, Feeds, first_that_runs, model_feeds
from tagger.model.modelio import save_text

__all__ = ["ExtractAllReport", "ExtractReport", "TensorSpec", "extract", "extract_all", "modules_at_depth"]


def _extract_cut(src: Source, cut: Cut, destination: Path, data_source: Path) -> ExtractReport:
    refuse_source_files(src, destination)
    model, kept = build_model(src, cut)
    objection = write_checked(model, data_source, destination)
    report = extract_report(src, cut, model, kept, destination)
    report.checker = objection
    return report


# --------------------------------------------------------------------------------------------
# API


def extract(
    model: str | os.PathLike,
    module: str | None = None,
    tag: str | None = None,
    output: str | os.PathLike | None = None,
    pull_producers: bool = True,
    verify: bool = False,
    inputs: str | os.PathLike | None = None,
    dim: DimSettings | int | str | dict = 1,
    branch: str | None = None,
) -> ExtractReport:
    """Write the subgraph of `module` (dotted path, `""` = whole model) or of the nodes whose tag
    matches the glob `tag` as a runnable ONNX model; see the module docstring for the rules.

    `output` defaults to `<stem>.<module>.onnx` beside the input (`<stem>.<module>.<branch>.onnx`
    for a module cut from a body). `branch` (`then`, `else`, an attribute name or a body's label)
    picks the body when the module lives in several. `verify=True` runs both models in
    onnxruntime and records the comparison in `report.verification`; the full model runs on the
    `.npz` at `inputs`, or on feeds generated with `dim` (as for `profile`; `tagger.inputs.feeds`); to
    verify an If branch, its condition input is set to take the branch.
    """
    if (module is None) == (tag is None):
        raise InputError(f"give exactly one of {param('module')} PATH or {param('tag')} PATTERN")
    for name, value in (("module", module), ("tag", tag), ("branch", branch)):
        if value is not None and not isinstance(value, str):
            raise ParameterError(name, f"must be a string, got {value!r}")
    root = load_source(model)
    feeds = model_feeds(root.model, inputs, dim, base_dir=root.path.parent) if verify else None
    src, selected = locate(root, module, tag, branch)
    cut = make_cut(src, module, tag, pull_producers, selected)
    destination = Path(output) if output is not None else _default_output(src, module, tag)
    report = _extract_cut(src, cut, destination, src.path)
    if feeds is not None:
        record_verification(report, cut, _values(src, [cut], feeds))
    return report


def extract_all(
    model: str | os.PathLike,
    depth: int,
    out_dir: str | os.PathLike,
    pull_producers: bool = True,
    verify: bool = False,
    inputs: str | os.PathLike | None = None,
    dim: DimSettings | int | str | dict = 1,
) -> ExtractAllReport:
    """One model per module at `depth` (number of dotted components) in `out_dir`, plus `index.json`.

    Modules of bodies are written once per body they live in, the branch in the file name
    (`decoder.block.0.then_branch.onnx`) and in the index. A module that cannot be extracted is
    listed in `failures` (and in the index); the others are still written. With external data
    the data file is placed in `out_dir` once and shared. `verify`, `inputs` and `dim` as for
    `extract`.
    """
    check_integer("depth", depth)
    if depth is None:
        raise ParameterError("depth", "must be an integer >= 0, got None")
    root = load_source(model)
    feeds = model_feeds(root.model, inputs, dim, base_dir=root.path.parent) if verify else None
    scopes = scoped_groups(root, depth)
    if not scopes:
        raise InputError(f"no module has depth {depth}; the deepest module path has {_max_depth(root)} components")
    directory = Path(out_dir)
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"{param('out_dir')} is not a directory: {directory}")
    directory.mkdir(parents=True, exist_ok=True)
    failures: dict[str, str] = {}
    cuts: list[tuple[Source, Cut]] = []
    for src, groups in scopes:
        for module, selected in groups.items():
            with _recorded(failures, _entry_name(src, module)):
                cuts.append((src, make_cut(src, module, None, pull_producers, selected)))
    values = _values_by_scope(cuts, feeds)
    reports: list[ExtractReport] = []
    data_source = root.path
    labels = (_file_label(src, cut.module or "") for src, cut in cuts)
    for (src, cut), file_name in zip(cuts, _file_names(labels, {root.path.name}), strict=True):
        with _recorded(failures, _entry_name(src, cut.module or "")):
            report = _extract_cut(src, cut, directory / file_name, data_source)
            reports.append(report)
            if set(report.external_data) == root.locations:
                # every data file now lies in out_dir: later models share it instead of re-comparing it
                data_source = directory / root.path.name
            if verify:
                record_verification(report, cut, values[id(src)])
    index = directory / "index.json"
    save_text(index_json(root, depth, reports, failures), index)
    return ExtractAllReport(str(root.path), depth, str(directory), str(index), reports, failures)


def _values_by_scope(cuts: list[tuple[Source, Cut]], feeds: Feeds | None) -> dict[int, dict | str]:
    """Types of every scope's boundary from one inference, and with `feeds` its values from one run."""
    values: dict[int, dict | str] = {}
    for src in {id(src): src for src, _ in cuts}.values():
        scope_cuts = [cut for owner, cut in cuts if owner is src]
        src.types.resolve(name for cut in scope_cuts for name in (*cut.inputs, *cut.outputs))
        if feeds is not None:
            values[id(src)] = _values(src, scope_cuts, feeds)
    return values


def _values(src: Source, cuts: list[Cut], feeds: Feeds) -> dict | str:
    """The full model's values of the cuts' boundary tensors, or why no run can give them."""
    return unverifiable(src) or first_that_runs(feeds, lambda feeds: boundary_values(src, cuts, feeds))[1]


def _entry_name(src: Source, module: str) -> str:
    """A failure's key: the module, and its body when it lives in one."""
    return f"{module} ({src.body.label})" if src.body is not None else module


def _file_label(src: Source, module: str) -> str:
    return f"{module}.{src.body.short}" if src.body is not None else module


@contextlib.contextmanager
def _recorded(failures: dict[str, str], module: str) -> Iterator[None]:
    try:
        yield
    except TaggerError as exc:
        failures[module] = str(exc)


def _max_depth(src: Source) -> int:
    return max((m.count(".") + 1 for m in all_modules(src)), default=0)


def _default_output(src: Source, module: str | None, tag: str | None) -> Path:
    label = _safe_name(module) if module is not None else "tag-" + _safe_name(tag or "")
    label = f"{label}.{src.body.short}" if src.body is not None else label
    return src.path.with_name(f"{src.path.stem}.{label}.onnx")


def _safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "root"


def _file_names(modules: Iterable[str], reserved: set[str]) -> list[str]:
    """`<module>.onnx` for each module, unique, never one of the `reserved` names (the source)."""
    names: list[str] = []
    taken = set(reserved)
    for module in modules:
        stem = _safe_name(module)
        name, k = f"{stem}.onnx", 1
        while name in taken:
            k += 1
            name = f"{stem}_{k}.onnx"
        taken.add(name)
        names.append(name)
    return names
