"""Parameter names that may stand for several parameters: those name no reader for sure.

A parameter belongs to one module, but one initializer can be read at several places for three
reasons:

1. one module called several times (ALBERT's shared layer, T5's `shared` embedding used by the
   encoder and the decoder): its name is right at every read;
2. one parameter tied into another module (an output head on the embedding's matrix);
3. several parameters merged into one: torch's exporters (TorchScript and dynamo) keep one
   initializer for equal tensors, named after whichever parameter came first. In a freshly
   built model every zero bias and every all-ones norm weight is equal, so one name such as
   `embeddings.LayerNorm.bias` is read by every projection of every layer.

Case 2 gives a name to a module it does not belong to; case 1 does not. They differ in what
runs between two reads: a module's call is one stretch of the execution order, so when a
module is called again (case 1) the work between two of its reads is its own or its callers',
and a repeated unit reads each of its weights as often as this one (ALBERT's shared layer reads
every weight once per call). Between two reads of a tied weight (BART's or T5's embedding at the
start of the encoder and of the decoder) run other modules whose parameters are read fewer times
(the encoder's position table, every layer's own weights); and a repeated unit's second call
works on the first's result, where the two embeddings of an encoder-decoder read independent
inputs (a fresh dynamo export names nothing between them: the matrices are anonymous and the
rest merged). Such a parameter names none of its readers either:
the one module its name is right for cannot be told from the others.

The order of the reads cannot tell case 3 from case 1: in a dynamo export the matrices are
anonymous (`val_55`, a folded transpose), so between two reads of a merged bias there is often
no other parameter name at all. The values can: two distinct parameters are equal only when
both were filled with one constant (zeros, ones); random initialisation and training never make
them equal. So an initializer read by more than one node whose values are all equal, or cannot
be read (external data without its directory), may be merged and names none of its readers;
one whose values differ is case 1 or 2 and keeps its name. A constant read once is one
parameter's (a merge leaves at least two readers), and so is a single value (a quantizer's
scale or zero point, which it reuses for the tensors it quantizes with the weight).

A tied head can also read the embedding's matrix under another name: both exporters fold
`weight.T` into an unnamed constant for a Linear, and name the one tied parameter after one of
its two modules (torch 2.13 with transformers 5: TorchScript the embedding's, dynamo the head's,
`lm_head.weight`, which the input `Gather` reads). A parameter looked up by a `Gather` whose
transposed values an unnamed matrix read by a matrix product holds is read by an embedding and
by a Linear (a Linear never gathers its weight): its name may be the head's, so the lookup is
placed no deeper than the lowest common ancestor of that name and the next module the file
names (`tied_lookup_tables`; the tagger widens it after inference, which reads the name as it is).

What a merged name leaves is a body that names nothing between a fresh model's first named
module (the embedding lookup) and the next (a pooler): placing that body is inference's job, and
`infer` stops its choices at the body's unnamed weighted ops (rules 4 and 5; issue 22).

Not told apart from the file alone: layers cloned from one (`copy.deepcopy`, as
`nn.TransformerEncoder` does) are equal without being constant; merged, they read as one module
called several times (case 1). The true module tree tells them apart (`clones.py`).
"""

from __future__ import annotations

import bisect
import itertools
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper

from tagger.model.index import ModelIndex, dataflow, graphs_within
from tagger.model.paths import is_within
from tagger.tensorbytes.stored import StoredTensor, holds_one_value, stored_tensor

__all__ = ["merged_parameters", "tied_lookup_tables", "varying"]

_CHUNK = 1 << 20
"""Values read at a time when checking that a tensor is constant (a random one differs at once)."""
_SAMPLE = 64
"""Values of a row compared with a column to tell a transposed copy (random values never repeat)."""


def merged_parameters(
    index: ModelIndex, readers: dict[str, list[int]], owners: dict[str, str], base_dir: Path | None
) -> tuple[set[str], set[str]]:
    """The initializers among `readers` (name -> the nodes reading it; `owners`: name -> module)
    that may stand for several parameters: merged equal ones (case 3), and, apart, one tied into
    or shared by other modules (case 2, or case 1 read on independent inputs; see the module
    docstring). A tied name still names a module that owns it (T5's `shared`), just not each reader."""
    shared = {name for name, nodes in readers.items() if len(nodes) > 1}
    if not shared:
        return set(), set()
    learnt = varying(index, shared, base_dir)
    tied = _tied(index, learnt, readers, owners) if learnt else set()
    return shared - learnt, tied


def tied_lookup_tables(index: ModelIndex, readers: dict[str, list[int]], base_dir: Path | None) -> set[str]:
    """The parameters read once, as the table of a `Gather` (an embedding lookup), whose
    transposed values an unnamed matrix read by a `MatMul`/`Gemm` holds: a head tied to the
    embedding, the name either module's (see the module docstring)."""
    views = index.views
    lookups = {
        name
        for name, nodes in readers.items()
        if len(nodes) == 1 and views[nodes[0]].op_type == "Gather" and views[nodes[0]].input[:1] == (name,)
    }
    tables = {name: t for name, t in _tensors(index, lookups).items() if len(t.dims) == 2} if lookups else {}
    by_shape = {(int(t.dims[1]), int(t.dims[0]), t.data_type): name for name, t in tables.items()}
    if not by_shape:
        return set()
    copies = [
        t
        for t in index.model.graph.initializer
        if len(t.dims) == 2 and t.name not in readers and (int(t.dims[0]), int(t.dims[1]), t.data_type) in by_shape
    ]
    if not copies:
        return set()
    consumers = dataflow(views)[1]
    tied = set()
    for copy in copies:
        if not any(
            views[k].op_type in ("MatMul", "Gemm") and views[k].input[1:2] == (copy.name,) for k in consumers.get(copy.name, ())
        ):
            continue
        name = by_shape[(int(copy.dims[0]), int(copy.dims[1]), copy.data_type)]
        if _transposed(stored_tensor(tables[name], base_dir), stored_tensor(copy, base_dir)):
            tied.add(name)
    return tied


def _transposed(table: StoredTensor | None, copy: StoredTensor | None) -> bool:
    """Whether `copy` holds `table`'s values transposed, judged on the table's first row against
    the copy's first column (up to `_SAMPLE` values, not all equal: a random row is matched by its
    own transpose only)."""
    if table is None or copy is None:
        return False
    count = min(table.shape[1], _SAMPLE)
    row = table.read(0, count)
    column = np.concatenate([copy.read(k * copy.shape[1], 1) for k in range(count)])
    return not holds_one_value([row]) and np.array_equal(row, column)


def _tied(index: ModelIndex, candidates: set[str], readers: dict[str, list[int]], owners: dict[str, str]) -> set[str]:
    """The candidates with, between two consecutive reads in one graph, a read of another
    module's parameter that is read fewer times than the candidate. Unnamed matrices do not count:
    the dynamo exporter folds a transposed copy of a weight for each call (ALBERT's shared layer
    reads `val_123` in one call and another copy in the next)."""
    reads = sorted((node, name) for name, nodes in readers.items() for node in nodes)
    positions = [node for node, _ in reads]
    tied = set()
    consumers: dict[str, list[int]] | None = None
    for name in candidates:
        nodes = readers[name]
        owner, count = owners[name], len(nodes)
        for first, second in itertools.pairwise(sorted(nodes)):
            if index.graph_of[first] != index.graph_of[second]:
                continue
            between = reads[bisect.bisect_right(positions, first) : bisect.bisect_left(positions, second)]
            if any(len(readers[other]) < count and _foreign(owners[other], owner) for _, other in between):
                tied.add(name)
                break
            consumers = dataflow(index.views)[1] if consumers is None else consumers
            if not _reaches(index, consumers, first, second):
                tied.add(name)  # two reads on independent inputs: the encoder's and the decoder's ids
                break
    return tied


_SHAPE_OPS = frozenset({"Shape", "Size"})
"""Ops whose result is a tensor's dimensions, not its values."""


def _reaches(index: ModelIndex, consumers: dict[str, list[int]], start: int, goal: int) -> bool:
    """Whether `goal` depends on the values of `start`'s results (walked forward, never past
    `goal`). Not through a `Shape`: a second call works on the first's values, while a dynamic
    export reads any later tensor's dimensions (a layer's sequence length) where a static one
    has constants, so a dependence through dimensions only is what two independent reads show
    (DeBERTa's layers each slicing the encoder's relative table by their own query's length)."""
    seen = {start}
    frontier = [start]
    views = index.views
    while frontier:
        node = frontier.pop()
        if node != start and views[node].op_type in _SHAPE_OPS:
            continue
        for name in views[node].output:
            for reader in consumers.get(name, ()):
                if reader == goal:
                    return True
                if reader < goal and reader not in seen:
                    seen.add(reader)
                    frontier.append(reader)
    return False


def _foreign(module: str, owner: str) -> bool:
    """Not the owner, one of its ancestors or descendants."""
    return not (is_within(module, owner) or is_within(owner, module))


def _tensors(index: ModelIndex, names: set[str]) -> dict[str, onnx.TensorProto]:
    found: dict[str, onnx.TensorProto] = {}
    bodies = any(scope.kind == "subgraph" for scope in index.graphs)  # else no walk over every node for them
    for graph in graphs_within(index.model.graph) if bodies else (index.model.graph,):
        for tensor in graph.initializer:
            if tensor.name in names:
                found.setdefault(tensor.name, tensor)
    return found


def varying(index: ModelIndex, names: set[str], base_dir: Path | None) -> set[str]:
    """The initializers among `names` whose values are known and not one value repeated: no
    merge of equal parameters can stand behind them (see the module docstring)."""
    return {name for name, tensor in _tensors(index, names).items() if _varies(tensor, base_dir)}


def _varies(tensor: onnx.TensorProto | None, base_dir: Path | None) -> bool:
    """Whether the tensor's values are known and not one value repeated."""
    if tensor is None:
        return False
    stored = stored_tensor(tensor, base_dir)
    if stored is not None:
        return not holds_one_value(stored.chunks(_CHUNK))
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return False
    try:
        return not holds_one_value([onnx.numpy_helper.to_array(tensor).reshape(-1)])  # an inline integer or bool tensor
    except (ValueError, TypeError):
        return False
