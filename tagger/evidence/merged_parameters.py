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

The order of the reads cannot tell case 3 from case 1: in a dynamo export the matrices are
anonymous (`val_55`, a folded transpose), so between two reads of a merged bias there is often
no other parameter name at all. The values can: two distinct parameters are equal only when
both were filled with one constant (zeros, ones); random initialisation and training never make
them equal. So an initializer read by more than one node whose values are all equal, or cannot
be read (external data without its directory), may be merged and names none of its readers;
one whose values differ is case 1 or 2 and keeps its name. A constant read once is one
parameter's (a merge leaves at least two readers), and so is a single value (a quantizer's
scale or zero point, which it reuses for the tensors it quantizes with the weight).

Not told apart: layers cloned from one (`copy.deepcopy`, as `nn.TransformerEncoder` does) are
equal without being constant; merged, they read as one module called several times (case 1).
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnx.numpy_helper

from tagger.index import ModelIndex, graphs_within
from tagger.transfer.tensors import holds_one_value, stored_tensor

__all__ = ["merged_parameters"]

_CHUNK = 1 << 20
"""Values read at a time when checking that a tensor is constant (a random one differs at once)."""


def merged_parameters(index: ModelIndex, readers: dict[str, list[int]], base_dir: Path | None) -> set[str]:
    """The initializers among `readers` (name -> the nodes reading it) that may stand for
    several merged parameters (see the module docstring)."""
    shared = {name for name, nodes in readers.items() if len(nodes) > 1}
    if not shared:
        return set()
    tensors = _tensors(index, shared)
    return {name for name in shared if not _varies(tensors.get(name), base_dir)}


def _tensors(index: ModelIndex, names: set[str]) -> dict[str, onnx.TensorProto]:
    found: dict[str, onnx.TensorProto] = {}
    for graph in graphs_within(index.model.graph):
        for tensor in graph.initializer:
            if tensor.name in names:
                found.setdefault(tensor.name, tensor)
    return found


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
