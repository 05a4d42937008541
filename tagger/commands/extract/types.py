"""Element types and shapes of a model's tensors, for the inputs and outputs of extracted models.

A boundary tensor of an extracted model must be declared with its true type; a guessed float
with an empty shape would make a valid-looking model that computes nonsense. The type of a
tensor is looked up, in order:

1. declared in the model (graph inputs, outputs, value_info) with a shape;
2. inferred by `onnx.shape_inference` on the structure (weights are not needed: their dims are),
   run on the *upstream cone* of the wanted tensors only: the nodes that compute them, back to
   tensors whose types are declared. Cutting layer 3 out of a 1000-layer model infers 4
   layers, not 1000; `resolve` takes many names at once, so `extract_all` runs it once;
3. inferred by onnxruntime's symbolic shape inference, which knows the `com.microsoft` ops that
   onnxruntime's transformer optimizer emits (`SkipLayerNormalization`, `FastGelu`, ...) and
   after which onnx's inference knows nothing. Used only when onnxruntime is installed and only
   for tensors the first two leave untyped; external initializers are handed to it as typed
   graph inputs, so no weight is read;
4. declared without a shape;

and a tensor whose element type is still unknown is an error for the caller to report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import onnx

from tagger.inputs.symbolic_shapes import infer_symbolic, weights_as_inputs

__all__ = ["TensorTypes"]


class TensorTypes:
    """Types of the tensors of one model's main graph, inferred on demand and cached.

    `producer` maps a tensor to the position of the node computing it, `reads[i]` lists the
    tensors node i reads (outer-scope reads of its bodies included), `initializer_at` maps an
    initializer's name to its position.
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        producer: Mapping[str, int],
        reads: Sequence[Sequence[str]],
        initializer_at: Mapping[str, int],
    ) -> None:
        self._model = model
        self._producer = producer
        self._reads = reads
        self._initializer_at = initializer_at
        graph = model.graph
        self._declared = {info.name: info.type for info in (*graph.value_info, *graph.output, *graph.input)}
        self._inferred: dict[str, onnx.TypeProto] = {}
        self._tried: set[str] = set()

    def get(self, name: str) -> onnx.TypeProto | None:
        """The best known type of `name`, or None when its element type is unknown."""
        declared = self._declared.get(name)
        if _has_shape(declared):
            return declared
        self.resolve([name])
        inferred = self._inferred.get(name)
        chosen = inferred if _typed(inferred) else declared
        return chosen if _typed(chosen) else None

    def resolve(self, names: Iterable[str]) -> None:
        """Infer, in one run, every tensor of `names` not declared with a shape."""
        missing = [n for n in dict.fromkeys(names) if n not in self._tried and not _has_shape(self._declared.get(n))]
        if not missing:
            return
        wanted = set(missing)
        # encoded at once: the part's arena keeps the cleared metadata (`_part`), its bytes do not
        part = self._part(self._cone(missing), missing).SerializeToString()
        found = _onnx_inference(part, wanted)
        if any(not _typed(found.get(n)) and not _typed(self._declared.get(n)) for n in missing):
            for name, tp in _onnxruntime_inference(onnx.ModelProto.FromString(part), wanted).items():
                if not _typed(found.get(name)):
                    found[name] = tp
        self._inferred.update(found)
        self._tried.update(missing)

    def _cone(self, names: list[str]) -> list[int]:
        """Positions of the nodes computing `names`, back to tensors with declared types."""
        nodes: set[int] = set()
        stack = list(names)
        while stack:
            producer = self._producer.get(stack.pop())
            if producer is None or producer in nodes:
                continue
            nodes.add(producer)
            stack.extend(name for name in self._reads[producer] if not _has_shape(self._declared.get(name)))
        return sorted(nodes)

    def _part(self, nodes: list[int], wanted: list[str]) -> onnx.ModelProto:
        """The model restricted to `nodes`, holding only what inference reads: outside tensors
        typed inputs, `wanted` outputs (onnxruntime's symbolic inference visits only nodes that
        lead to a graph output).

        Never the model itself, even when the cone is most of it: a node's `metadata_props` (a
        dynamo export's stack traces, the tags) and `doc_string` are most of a large model's
        bytes, and inference, which copies the model twice, reads neither: the part's nodes come
        without them (`_bare_nodes`).
        Floating-point initializers become typed inputs (their dims are all inference needs);
        integer ones (shapes, axes, indices), whose values data propagation reads, are copied.
        """
        source = self._model
        part = onnx.ModelProto(ir_version=source.ir_version)
        part.opset_import.extend(source.opset_import)
        part.functions.extend(source.functions)
        graph = part.graph
        graph.MergeFromString(_bare_nodes(source.graph.node, nodes))
        produced = {name for node in graph.node for name in node.output}
        read = [name for name in dict.fromkeys(n for i in nodes for n in self._reads[i]) if name not in produced]
        initializers = source.graph.initializer
        for name in read:
            at = self._initializer_at.get(name)
            if at is not None and _values_readable(initializers[at]):
                graph.initializer.append(initializers[at])
            elif at is not None:
                tensor = initializers[at]
                graph.input.append(onnx.helper.make_tensor_value_info(name, tensor.data_type, list(tensor.dims)))
            elif name in self._declared:
                graph.input.add(name=name).type.CopyFrom(self._declared[name])
        graph.output.extend(onnx.ValueInfoProto(name=name) for name in wanted if name in produced)
        return part


_BARE_CHUNK = 4096
"""Nodes copied and cleared at a time by `_bare_nodes`."""


def _bare_nodes(source_nodes, positions: list[int]) -> bytes:
    """The nodes at `positions` without `metadata_props` and `doc_string`, encoded as a graph's
    `node` fields. Copied whole a chunk at a time (one call, four times faster than field by
    field) into a graph of their own, cleared there and encoded: cleared bytes stay in their
    arena until it is dropped, so one copy of the whole cone would hold all of them at once
    (190 MB for half of a 300k-node TorchScript export, carrying tags)."""
    encoded = []
    for start in range(0, len(positions), _BARE_CHUNK):
        chunk = onnx.GraphProto()
        chunk.node.extend(source_nodes[i] for i in positions[start : start + _BARE_CHUNK])
        for node in chunk.node:
            node.ClearField("metadata_props")
            node.ClearField("doc_string")
        encoded.append(chunk.SerializeToString())
    return b"".join(encoded)


_FLOATING = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16})


def _values_readable(tensor: onnx.TensorProto) -> bool:
    """Whether inference should get the initializer's values: integers held in the file (shape
    data); weights and external data only need their type and dims."""
    return tensor.data_type not in _FLOATING and tensor.data_location != onnx.TensorProto.EXTERNAL


def _onnx_inference(model: bytes, wanted: set[str]) -> dict[str, onnx.TypeProto]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, RuntimeError):
        return {}
    return _typed_values(inferred.graph, wanted)


def _typed(tp: onnx.TypeProto | None) -> bool:
    if tp is None:
        return False
    kind = tp.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        return getattr(tp, kind).elem_type != onnx.TensorProto.UNDEFINED
    return kind is not None


def _has_shape(tp: onnx.TypeProto | None) -> bool:
    """Typed, and with a shape when it is a tensor (else inference may know more)."""
    if not _typed(tp):
        return False
    kind = tp.WhichOneof("value")
    return kind not in ("tensor_type", "sparse_tensor_type") or getattr(tp, kind).HasField("shape")


def _typed_values(graph: onnx.GraphProto, wanted: set[str]) -> dict[str, onnx.TypeProto]:
    """Name -> type of the `wanted` values the graph gives an element type, copied: a message
    read from the inferred model would keep all of it (a type for every tensor of the cone) alive."""
    return {
        info.name: _copy(info.type)
        for infos in (graph.value_info, graph.output)
        for info in infos
        if info.name in wanted and _typed(info.type)
    }


def _copy(tp: onnx.TypeProto) -> onnx.TypeProto:
    copy = onnx.TypeProto()
    copy.CopyFrom(tp)
    return copy


def _onnxruntime_inference(model: onnx.ModelProto, wanted: set[str]) -> dict[str, onnx.TypeProto]:
    """onnxruntime's symbolic shape inference (a partial result still types what it reached),
    or nothing when it is missing or fails."""
    try:
        inferred = infer_symbolic(weights_as_inputs(model), auto_merge=True, partial=True)
    except Exception:  # noqa: BLE001 - a fallback: missing or failing means "no further types"
        return {}
    return _typed_values(inferred.graph, wanted)
