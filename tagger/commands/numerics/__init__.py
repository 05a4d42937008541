"""Which module loses the accuracy: numerical error per module between a float model and a model
a tool derived from it (int8 quantization, fp16 conversion, onnxruntime's optimizer, an int4 build).

`numerics("model.onnx", "model.int8.onnx", depth=3)` runs both models on the same inputs and, for
every module at `depth` of the float model, reports three figures (`tagger.commands.numerics.stats`: SNR,
cosine, max |diff|):

1. **own**: the derived model's module run alone on the float model's values of its inputs,
   against the float model's outputs — the error the module *adds*. A module that a tool left in
   float shows none (exact, or rounding noise); the one whose weights lost precision shows it,
   while the modules after it do not, however much error they receive;
2. **out**: its outputs in the derived model against the float model's (what it adds plus what it
   receives and passes on);
3. **in**: the error of its inputs in the derived model (what it receives).

Modules are found by their tags: the float model's (tagged in memory when untagged), and the
derived model's, tagged in memory with the float model as its reference when any node lacks a
tag, so nodes a tool made still name their module. The tensors compared are found by name
(`tagger.commands.numerics.pairing` states the rules). The runs (`tagger.commands.numerics.runs`): each model once
per depth, exposing that depth's boundary tensors only, then each derived module alone.

The default depth is the shallowest at which no module holds more than half of the float model's
nodes: where a model splits into its repeated blocks (`encoder.layer.N`, `model.layers.N`), the
level at which "which module?" has an answer. Modules are those of the main graph: a module that
lives only inside an If/Loop/Scan body (optimum's merged decoder) is not compared.

The result sorts worst own error first; `NumericsReport.nodes_to_exclude(k)` lists the float
model's nodes of the k worst modules, the list onnxruntime's quantizers take.
"""

from __future__ import annotations

import os
from pathlib import Path

from tagger.api import tag_proto
from tagger.commands.extract.cut import groups_at
from tagger.commands.extract.source import Source, make_source
from tagger.commands.numerics.pairing import ModulePair, pair_module, tensor_names
from tagger.commands.numerics.partition import Piece, partition
from tagger.commands.numerics.report import ModuleNumerics, NumericsReport
from tagger.commands.numerics.runs import LevelValues, compare, level_values, own_error
from tagger.commands.numerics.views import write_numerics_node_data
from tagger.commands.options import check_integer
from tagger.errors import InputError
from tagger.inputs.feeds import DimSettings, Feeds, first_that_runs, model_feeds
from tagger.model.keys import read_tags
from tagger.model.modelio import load_model_and_locations

__all__ = ["ModuleNumerics", "NumericsReport", "default_depth", "numerics"]


def numerics(
    float_model: str | os.PathLike,
    derived_model: str | os.PathLike,
    inputs: str | os.PathLike | None = None,
    dim: DimSettings | int | str | dict = 1,
    depth: int | None = None,
    node_data: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    modules: str | os.PathLike | None = None,
) -> NumericsReport:
    """Per module at `depth`, the error the derived model adds and receives (module docstring).

    Both run on the `.npz` at `inputs`, or on feeds generated for the float model with `dim` (as
    for `profile`, `tagger.inputs.feeds`), cast to the derived model's input types. `node_data` writes
    Model Explorer node data there: the float model's nodes coloured by their module's own error
    (`tagger.commands.numerics.views`). `weights` (the checkpoint) and `modules` (the `named_modules()`
    paths) are evidence for both models' tags, as for `retag`: with them both are tagged in memory.
    """
    check_integer("depth", depth, least=1)
    evidence = {"weights": weights, "modules": modules}
    float_src = _source(Path(float_model), evidence)
    derived_src = _source(Path(derived_model), {**evidence, "reference": Path(float_model)})
    depth = default_depth(float_src) if depth is None else depth
    float_pieces = partition(float_src.modules, depth)
    pairs, notes = _pairs(float_src, derived_src, float_pieces, depth)
    feeds = model_feeds(float_src.model, inputs, dim, base_dir=float_src.path.parent)
    feeds, values = first_that_runs(feeds, lambda f: level_values(float_src, derived_src, pairs, f))
    modules = [_figures(pair, float_src, derived_src, values, float_pieces[pair.piece]) for pair in pairs]
    modules.sort(key=ModuleNumerics.sort_key)
    report = NumericsReport(str(float_model), str(derived_model), depth, _describe(feeds), modules, notes)
    if node_data is not None:
        written = write_numerics_node_data(report, float_src, float_pieces, node_data)
        report.notes.append(f"node data: {written} nodes of the float model coloured by own error in {node_data}")
    return report


def default_depth(src: Source) -> int:
    """The shallowest depth at which no module holds more than half of the main graph's nodes."""
    total = len(src.nodes)
    deepest = max((len(path.split(".")) for path in src.modules if path), default=1)
    for depth in range(1, deepest + 1):
        groups = groups_at(src, depth)
        if groups and max(len(nodes) for nodes in groups.values()) * 2 <= total:
            return depth
    return deepest


def _source(path: Path, evidence: dict) -> Source:
    """A model tagged in memory when a node has no tag or evidence is given (the derived model
    with the float model as its `reference`), as an extraction source."""
    model, locations = load_model_and_locations(path)
    given = {key: value for key, value in evidence.items() if value is not None}
    retag = any(read_tags(node.metadata_props) is None for node in model.graph.node) or set(given) - {"reference"}
    if retag:
        tag_proto(model, str(path), **given)
    return make_source(model, path, locations, bool(retag))


def _pairs(
    float_src: Source, derived_src: Source, float_pieces: dict[Piece, list[int]], depth: int
) -> tuple[list[ModulePair], list[str]]:
    derived_pieces = partition(derived_src.modules, depth, float_src.modules)
    float_tensors, derived_tensors = tensor_names(float_src), tensor_names(derived_src)
    pairs, notes = [], []
    for piece, nodes in float_pieces.items():
        try:
            found = derived_pieces.get(piece)
            pairs.append(pair_module(piece, float_src, nodes, derived_src, found, float_tensors, derived_tensors))
        except InputError as exc:
            notes.append(f"{piece.label}: {exc}")
    extra = sorted(piece.label for piece in set(derived_pieces) - set(float_pieces))
    if extra:
        notes.append(f"pieces of the derived model the float model has not: {', '.join(extra[:5])}")
    return pairs, notes


def _figures(pair: ModulePair, float_src: Source, derived_src: Source, values: LevelValues, nodes: list[int]) -> ModuleNumerics:
    own = own_error(pair, derived_src, values) if pair.derived_cut is not None else pair.why
    return ModuleNumerics(
        piece=pair.piece,
        nodes=pair.nodes,
        own=None if isinstance(own, str) else own,
        output=compare(values.float, values.derived, pair.outputs),
        received=compare(values.float, values.derived, pair.inputs),
        note=own if isinstance(own, str) else pair.why,
        node_names=[name for i in nodes if (name := float_src.nodes[i].name)],
    )


def _describe(feeds: Feeds) -> str:
    sizes = ", ".join(f"{key}={value}" for key, value in feeds.dims.items())
    return f"{feeds.origin}" + (f" ({sizes})" if sizes else "")
