"""Cut a module out of a model as a valid, runnable ONNX model.

`extract("model.onnx", module="m.encoder.layer.0")` writes a model that computes what that
module computes inside the full model, from the same tensors, under the same names. The rules:

1. **Selection.** The main-graph nodes whose `hierarchy.module` is `module` or lies below it
   (`""` is the whole model), or whose `hierarchy.tag` matches the glob `tag`. A model with an
   untagged node is tagged in memory first (`tagger.api.tag_proto`; existing tags are kept).
   Nodes inside If/Loop/Scan bodies go with the node that owns the body.
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
   `onnx.checker.check_model(full_check=True)`, and only then takes the output's name.

`verify=True` proves the result (`tagger.extract.verify`): the extracted model, fed the full model's
values of its inputs, must reproduce the full model's values of its outputs.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from tagger.errors import InputError, OutputError, TaggerError
from tagger.extract.build import build_model, refuse_source_files, write_checked
from tagger.extract.cut import Cut, all_modules, groups_at, make_cut, modules_at_depth
from tagger.extract.report import ExtractAllReport, ExtractReport, TensorSpec, extract_report, index_json
from tagger.extract.source import Source, load_source
from tagger.extract.verify import boundary_values, record_verification
from tagger.feeds import DimSettings, model_feeds
from tagger.modelio import save_text
from tagger.options import check_integer

__all__ = ["ExtractAllReport", "ExtractReport", "TensorSpec", "extract", "extract_all", "modules_at_depth"]


def _extract_cut(src: Source, cut: Cut, destination: Path, data_source: Path) -> ExtractReport:
    refuse_source_files(src, destination)
    model, kept = build_model(src, cut)
    write_checked(model, data_source, destination)
    return extract_report(src, cut, model, kept, destination)


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
) -> ExtractReport:
    """Write the subgraph of `module` (dotted path, `""` = whole model) or of the nodes whose tag
    matches the glob `tag` as a runnable ONNX model; see the module docstring for the rules.

    `output` defaults to `<stem>.<module>.onnx` beside the input. `verify=True` runs both models
    in onnxruntime and records the comparison in `report.verification`; the full model runs on
    the `.npz` at `inputs`, or on feeds generated with `dim` (as for `profile`; `tagger.feeds`).
    """
    if (module is None) == (tag is None):
        raise InputError("give exactly one of --module PATH or --tag PATTERN")
    for name, value in (("module", module), ("tag", tag)):
        if value is not None and not isinstance(value, str):
            raise InputError(f"--{name} must be a string, got {value!r}")
    src = load_source(model)
    feeds = model_feeds(src.model, inputs, dim) if verify else None
    cut = make_cut(src, module, tag, pull_producers)
    destination = Path(output) if output is not None else _default_output(src.path, module, tag)
    report = _extract_cut(src, cut, destination, src.path)
    if feeds is not None:
        record_verification(report, cut, boundary_values(src, [cut], feeds))
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

    A module that cannot be extracted is listed in `failures` (and in the index); the others are
    still written. With external data the data file is placed in `out_dir` once and shared.
    `verify`, `inputs` and `dim` as for `extract`.
    """
    check_integer("depth", depth)
    if depth is None:
        raise InputError("--all needs --depth N")
    src = load_source(model)
    feeds = model_feeds(src.model, inputs, dim) if verify else None
    groups = groups_at(src, depth)
    if not groups:
        raise InputError(f"no module has depth {depth}; the deepest module path has {_max_depth(src)} components")
    directory = Path(out_dir)
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"--out_dir is not a directory: {directory}")
    directory.mkdir(parents=True, exist_ok=True)
    failures: dict[str, str] = {}
    cuts: list[Cut] = []
    for module, selected in groups.items():
        with _recorded(failures, module):
            cuts.append(make_cut(src, module, None, pull_producers, selected))
    src.types.resolve(name for cut in cuts for name in (*cut.inputs, *cut.outputs))  # one inference for all
    values = boundary_values(src, cuts, feeds) if feeds is not None and cuts else {}
    reports: list[ExtractReport] = []
    data_source = src.path
    for cut, file_name in zip(cuts, _file_names((cut.module or "" for cut in cuts), {src.path.name}), strict=True):
        with _recorded(failures, cut.module or ""):
            report = _extract_cut(src, cut, directory / file_name, data_source)
            reports.append(report)
            if set(report.external_data) == src.locations:
                # every data file now lies in out_dir: later models share it instead of re-comparing it
                data_source = directory / src.path.name
            if verify:
                record_verification(report, cut, values)
    index = directory / "index.json"
    save_text(index_json(src, depth, reports, failures), index)
    return ExtractAllReport(str(src.path), depth, str(directory), str(index), reports, failures)


@contextlib.contextmanager
def _recorded(failures: dict[str, str], module: str) -> Iterator[None]:
    try:
        yield
    except TaggerError as exc:
        failures[module] = str(exc)


def _max_depth(src: Source) -> int:
    return max((m.count(".") + 1 for m in all_modules(src)), default=0)


def _default_output(source: Path, module: str | None, tag: str | None) -> Path:
    label = _safe_name(module) if module is not None else "tag-" + _safe_name(tag or "")
    return source.with_name(f"{source.stem}.{label}.onnx")


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
