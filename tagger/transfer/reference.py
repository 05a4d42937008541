"""`reference` (`--reference ORIGINAL.onnx`): tags carried over from the model a tool started from.

The reference is tagged first with its own evidence (as `retag` would tag it: dynamo metadata,
names, parameter names, inference; the caller tags it, `tagger.api.reference_source`, and hands
the result in: `TaggedReference`), then its nodes are matched to the model's
(`tagger.transfer.matching`) and each matched node proposes its reference node's module as
source `reference`. It is direct evidence that ranks below the file's own: where they disagree,
the file wins and the report lists the conflict, with one exception (`decided_by`): a node that
writes the value its reference node wrote (matched by name or output) takes the reference's
module when the reference decided it by a stronger source than the one the file still has. A
tool deletes evidence and adds none, so the weaker evidence left is what the reference overruled:
a tied weight named after `lm_head` read by the embedding's `Gather`, the bias of a `Linear`
read by the `BiasGelu` that writes the activation's output, a module name a quantizer derived
from a graph output's name (`present.0.value_DequantizeLinear`).

A reference that is not this model's origin is refused (`InputError`, exit 2) rather than
silently mis-tagging it: fewer than `MIN_KEPT_EDGES` of the connections between its name-matched
nodes exist in the reference, and fewer than `MIN_WEIGHTS` of its weights are found there.
Names alone prove nothing (every dynamo export has a `val_12`); how matched nodes connect, and
the values of weights, do.

Neither model's weights are loaded: both are read without external data, and weights are
hashed from their files (`tagger.transfer.content`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from tagger.errors import InputError, param
from tagger.evidence import Context
from tagger.model.index import ModelIndex
from tagger.model.keys import MODULE_KEY
from tagger.tensorbytes.stored import FLOAT_DTYPES, StoredTensor, onnx_initializers
from tagger.transfer.content import match_contents
from tagger.transfer.matching import Matching, match_graphs

SOURCE = "reference"
__all__ = ["MIN_KEPT_EDGES", "MIN_WEIGHTS", "SOURCE", "ReferenceSource", "TaggedReference"]

MIN_KEPT_EDGES = 0.5
"""Share of the dataflow edges between name-matched nodes that the reference must have too
(measured: 0.67-1.0 for the model's true origin after every tool in `bench.transfer`, 0.03-0.39
for another model, whose names coincide with the origin's by chance)."""
MIN_WEIGHTS = 0.5
"""... or share of its float weights the reference must hold, by name or by value (measured:
0.57-0.98 for the origin unless the tool quantized the weights, 0 for another model). Scalars do
not count (`_weight`): a quantizer adds one float scale per weight it quantizes, and after
onnxruntime's optimizer and `quantize_dynamic` those alone kept a RemBERT's share at 48%."""
_UNTRANSFERABLE = frozenset({"fallback"})
_SAMPLE = 32
"""Same-named weights whose values are compared to tell the model's origin from a look-alike."""


class Decided(Protocol):
    """A node's decided tag, as far as the reference source reads it."""

    @property
    def module(self) -> str: ...

    @property
    def source(self) -> str: ...


class TaggedReference(Protocol):
    """What the reference source reads of the reference tagged by the caller (the pipeline's
    `TaggingResult`): its index, what its sources learnt, and each node's decided tag."""

    @property
    def index(self) -> ModelIndex: ...

    @property
    def context(self) -> Context: ...

    @property
    def assignments(self) -> Sequence[Decided]: ...


class ReferenceSource:
    """Proposes, for each node matched to the reference, the reference node's module."""

    SOURCE = SOURCE
    PARAMETER = "reference"

    def __init__(self, reference: str | Path, base_dir: Path | None, tagged: Callable[[], TaggedReference]) -> None:
        """`reference`: the file (its weights are read beside it); `tagged`: the reference tagged
        by the caller, asked for when the source proposes (a caller that reads a file's tags and
        tags nothing never asks)."""
        self.path = Path(reference)
        self.base_dir = base_dir
        self.tagged = tagged
        self.notes: list[str] = []
        self.matching: Matching | None = None
        self.decided_by: dict[int, str] = {}
        """Node matched by name or output -> the source that decided its reference node's module."""

    def propose(self, index: ModelIndex, context: Context) -> dict[int, str]:
        tagged = self.tagged()
        modules = [None if a.source in _UNTRANSFERABLE else a.module for a in tagged.assignments]
        for path, name in tagged.context.classes.items():
            context.classes.setdefault(path, name)
        if context.tree_origin is None and tagged.context.tree_origin is not None:
            # the model a tool made from the reference has the reference's modules
            theirs = tagged.context
            context.adopt_tree({path: theirs.classes.get(path) for path in theirs.modules.paths()}, "the reference's module map")
        renamed, shared, weights = self._weights(index, tagged.index)
        matching = match_graphs(index, tagged.index, modules, renamed, shared)
        self._check(matching, len(index.views), weights)
        self.matching = matching
        self.decided_by = _decided_by(tagged, matching)
        for module in set(matching.modules.values()):
            context.modules.add(module)
        self.notes.append(
            f"reference {self.path.name}: {len(matching.modules)} of {len(index.views)} nodes matched ("
            + ", ".join(f"{rule} {count}" for rule, count in matching.rules.most_common())
            + ")"
        )
        return matching.modules

    def _weights(self, index: ModelIndex, reference: ModelIndex) -> tuple[dict[str, tuple[str, ...]], int, int]:
        """(target initializer -> reference initializers with its values, for the renamed ones;
        how many keep their reference name and shape; how many float weights the model has)."""
        theirs = {t.name: t for t in onnx_initializers(reference.model, self.path.parent.resolve())}
        ours = [t for t in onnx_initializers(index.model, self.base_dir) if t.dtype_name in FLOAT_DTYPES and _weight(t)]
        same = [t for t in ours if t.name in theirs and theirs[t.name].shape == t.shape]
        sample = same[:_SAMPLE]  # names alone coincide across dynamo exports (`val_55`): values decide
        verified = match_contents(sample, [theirs[t.name] for t in sample])
        agreeing = sum(t.name in verified.get(t.name, ()) for t in sample)
        shared = len(same) * agreeing // len(sample) if sample else 0
        renamed = match_contents((t for t in ours if t.name not in theirs), theirs.values())
        return renamed, shared, len(ours)

    def _check(self, matching: Matching, nodes: int, weights: int) -> None:
        kept = matching.kept_edges / matching.edges if matching.edges else 0.0
        found = matching.weights / weights if weights else 0.0
        if nodes and kept < MIN_KEPT_EDGES and found < MIN_WEIGHTS:
            raise InputError(
                f"{param('reference')} {self.path.name} is not the model this one was made from: {kept:.0%} of the connections "
                f"between nodes with shared names and {found:.0%} of the weights match it"
            )


def _weight(tensor: StoredTensor) -> bool:
    """Whether a float initializer counts among the weights a reference must hold: not a scalar
    (a quantizer's scale, an epsilon), which a tool adds and no model's weights include."""
    return tensor.size > 1


def _decided_by(tagged: TaggedReference, matching: Matching) -> dict[int, str]:
    """Node matched by name or output -> the source that decided its reference node's module from
    the reference's own evidence (not for reference nodes that carried a tag already)."""
    views = tagged.index.views
    return {
        node: tagged.assignments[image].source
        for node, image in matching.images.items()
        if views[image].metadata is None or MODULE_KEY not in views[image].metadata
    }
