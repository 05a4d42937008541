"""Which tensors of the derived model stand for a module's boundary in the float model.

Both files are tagged (the derived one with the float one as its reference, so nodes a tool
made still name their module). A module's boundary in the float model is its extraction cut
(`tagger.commands.extract.cut`): the tensors it reads from outside and the tensors it computes for the
rest of the model. The derived model is compared through tensor **names**, the one thing the
tools people run between the two keep on the tensors they do not rewrite: the quantizers, the
fp16 converters and onnxruntime's optimizer give a rewritten node's result the name of the
tensor it replaces, and keep every other name.

1. **Compared outputs**: the float cut's outputs that the derived model also has (any node of it
   may compute them: a tool can move a tensor's producer to another module's tag).
2. **Received inputs**: the float cut's inputs the derived model also has: their error is what
   the module receives from upstream.
3. **The derived module, fed float values**: the derived model's own cut of the module, grown
   upstream through every input the float model does not have (a quantizer's
   `x_quantized`/`x_scale`, a converter's `x_cast`), node by node, until each input is a float
   tensor; that is at most `GROW_LIMIT` nodes, else the module gets no own figure and says why.
   Run on the float model's values of those inputs (cast to the derived dtype), its outputs
   differ from the float model's by the error the module **adds** — its own contribution.
"""

from __future__ import annotations

from dataclasses import dataclass

from tagger.commands.extract.cut import Cut, make_cut
from tagger.commands.extract.source import Source
from tagger.commands.numerics.partition import Piece
from tagger.errors import InputError

__all__ = ["GROW_LIMIT", "ModulePair", "pair_module", "tensor_names"]

GROW_LIMIT = 64
"""Most nodes the derived cut grows upstream to reach tensors the float model has."""

_REPRESENTATION_OPS = frozenset({"Cast", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Identity"})
"""Ops that change how a value is stored, not what it is: growing through them takes no other
module's computation into the own figure (quantizing a module's input is part of its error)."""


@dataclass
class ModulePair:
    """One module's boundary in both files, by tensor name."""

    piece: Piece
    nodes: int
    """Float-model nodes in the piece."""
    outputs: list[str]
    """Float cut outputs the derived model also has: compared."""
    inputs: list[str]
    """Float cut inputs the derived model also has: the error the module receives."""
    derived_cut: Cut | None
    """The derived module grown upstream to float tensors; None when it cannot be run alone."""
    own_outputs: list[str]
    """The compared outputs the derived cut computes."""
    why: str | None = None
    """Why a figure is missing (no compared output, no own run)."""

    @property
    def fed(self) -> list[str]:
        return [] if self.derived_cut is None else self.derived_cut.inputs


def tensor_names(src: Source) -> set[str]:
    """Every main-graph tensor of `src` a run can expose: graph inputs and node outputs."""
    return set(src.flow.graph_inputs) | set(src.flow.producer)


def pair_module(piece: Piece, float_src: Source, float_nodes: list[int], derived_src: Source,
                derived_nodes: list[int] | None, float_tensors: set[str], derived_tensors: set[str]) -> ModulePair:
    """The pairing of `piece` (its float nodes, and its derived nodes when it has any)."""
    float_cut = make_cut(float_src, piece.module, None, True, float_nodes)
    outputs = [name for name in float_cut.outputs if name in derived_tensors]
    inputs = [name for name in float_cut.inputs if name in derived_tensors]
    pair = ModulePair(piece, len(float_nodes), outputs, inputs, None, [])
    if not derived_nodes:
        pair.why = "no node of the derived model is tagged with the module (a tool fused it into another module's nodes)"
        return pair
    if not outputs:
        pair.outputs = _renamed_boundary(pair, derived_src, derived_nodes, float_tensors)
    if pair.outputs:
        _own_cut(pair, derived_src, derived_nodes, float_tensors)
    return pair


def _renamed_boundary(pair: ModulePair, derived_src: Source, derived_nodes: list[int], float_tensors: set[str]) -> list[str]:
    """When a tool renamed every output of the module: the derived module's outputs the float
    model has under the same name (tensors inside the float module), else none, saying why."""
    try:
        cut = make_cut(derived_src, pair.piece.module, None, True, derived_nodes)
    except InputError as exc:
        pair.why = str(exc)
        return []
    found = [name for name in cut.outputs if name in float_tensors]
    pair.why = (
        f"compared at {', '.join(found[:3])}: the tool renamed the module's outputs" if found
        else "no output tensor of the module keeps its name in the derived model"
    )
    return found


def _own_cut(pair: ModulePair, derived_src: Source, derived_nodes: list[int], float_tensors: set[str]) -> None:
    """Set the derived cut grown to float inputs (`pair.derived_cut`), or why there is none."""
    selected = _grown(derived_src, derived_nodes, float_tensors)
    if isinstance(selected, str):
        pair.why = selected
        return
    try:
        cut = make_cut(derived_src, pair.piece.module, None, True, selected)
    except InputError as exc:
        pair.why = str(exc)
        return
    computed = {name for i in selected for name in derived_src.nodes[i].output}
    pair.own_outputs = [name for name in pair.outputs if name in computed]
    if not pair.own_outputs:
        pair.why = "the derived model computes the module's outputs in other modules' nodes"
        return
    pair.derived_cut = cut
    borrowed = sorted({derived_src.nodes[i].op_type for i in set(selected) - set(derived_nodes)} - _REPRESENTATION_OPS)
    if borrowed:
        note = f"own figure includes other modules' {', '.join(borrowed[:3])} (the tool renamed the tensors between them)"
        pair.why = f"{pair.why}; {note}" if pair.why else note


def _grown(src: Source, nodes: list[int], float_tensors: set[str]) -> list[int] | str:
    """`nodes` plus their producers, transitively, through every tensor the float model lacks."""
    flow, pulled = src.flow, set(nodes)
    stack = list(pulled)
    added = 0
    while stack:
        i = stack.pop()
        for name in flow.reads[i]:
            if name in float_tensors or name in flow.initializers:
                continue
            producer = flow.producer.get(name)
            if producer is None:
                return f"the derived model's input {name!r} is no input of the float model"
            if producer in pulled or producer in flow.independent:
                continue
            added += 1
            if added > GROW_LIMIT:
                return f"the module's inputs in the derived model are more than {GROW_LIMIT} nodes from any float tensor"
            pulled.add(producer)
            stack.append(producer)
    return sorted(pulled)
