"""onnxruntime's symbolic shape inference, run on a model's structure only.

Two callers need it: extraction types boundary tensors that onnx's own inference leaves untyped,
and the feeds generator asks whether the graph accepts a choice of input sizes. Its public
`infer_shapes` writes `sym_shape_infer_temp.onnx` into the working directory when inference is
incomplete, so its steps are run directly; weights in external data become typed graph inputs,
so their bytes are never read.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import onnx

__all__ = ["infer_symbolic", "weights_as_inputs"]


def weights_as_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose external initializers are typed graph inputs (their data is never read)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    kept = []
    for tensor in copy.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            copy.graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
        else:
            kept.append(tensor)
    del copy.graph.initializer[:]
    copy.graph.initializer.extend(kept)
    return copy


def infer_symbolic(model: onnx.ModelProto, *, auto_merge: bool, partial: bool) -> onnx.ModelProto:
    """The model with every shape onnxruntime infers. Raises ImportError without onnxruntime;
    with `partial`, a failure midway keeps what was reached, else it raises."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    with _quiet():
        engine = SymbolicShapeInference(2**31 - 1, auto_merge, False, 0)
        engine._preprocess(model)
        with contextlib.suppress(Exception) if partial else contextlib.nullcontext():
            while engine.run_:
                engine._infer_impl()
        return engine.out_mp_


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Its logger reports every refusal at ERROR level; a refusal is an answer here."""
    logger = logging.getLogger("onnxruntime.tools.symbolic_shape_infer")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)
