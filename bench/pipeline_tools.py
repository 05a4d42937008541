"""The tools of the real-pipeline benchmark, applied to an export and cached beside it.

onnxslim, `quantize_dynamic` and the graphsurgeon round trip as `bench.cases` applies them;
onnxruntime's transformer optimizer with the family's `model_type`; static QDQ quantization
(`quantize_static`) calibrated on a few random feeds that a tiny family model runs on; and the two
conversions the files people download are made with (transformers.js's `q4` and `fp16` variants):
onnxruntime's weight-only int4 quantizer (`MatMulNBitsQuantizer`: each MatMul on a constant
weight becomes a `MatMulNBits` on its block-quantized copy) and its float16 converter
(`onnxruntime.transformers.float16`, inputs and outputs kept float32).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from bench import cases, families
from bench.family_exports import ExportedFile

__all__ = ["TOOLS", "DoesNotLoad", "ToolError", "degraded", "feeds"]

TOOLS = (
    "none",
    "onnxslim",
    "ort_optimizer",
    "quantize_dynamic",
    "quantize_static",
    "gs_roundtrip",
    "ort_opt_quantize",
    "matmul_nbits",
    "float16",
)


class ToolError(RuntimeError):
    """A tool that crashed; one short line."""


class DoesNotLoad(Exception):  # noqa: N818 - a result, not an error
    """A tool's output that onnxruntime's CPU provider does not load, carried to be tagged anyway."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__("does not load on the CPU")
        self.model = model


def _dim(dim: onnx.TensorShapeProto.Dimension, sizes: dict[str, int]) -> int:
    if dim.HasField("dim_value"):
        return dim.dim_value
    name = dim.dim_param
    if name in sizes:
        return sizes[name]
    expression = re.sub(r"[A-Za-z_]\w*", lambda m: str(sizes.get(m.group(0), 1)), name)
    return int(eval(expression, {"__builtins__": {}})) if re.fullmatch(r"[\d\s+*-]+", expression) else 1


_SIZES = {
    "batch_size": 1,
    "sequence_length": 1,
    "decoder_sequence_length": 1,
    "encoder_sequence_length": families.SEQ,
    "past_sequence_length": families.PAST,
    "past_decoder_sequence_length": families.PAST,
    "num_channels": 3,
    "height": families.IMAGE,
    "width": families.IMAGE,
}


def feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs a tiny family model runs on: optimum's named dims (`past_sequence_length +
    sequence_length` evaluated), ids below the vocabulary, masks of ones, token types 0, positions
    after the past."""
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    out: dict[str, np.ndarray] = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        shape = tuple(_dim(d, _SIZES) for d in tensor.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        if tensor.elem_type == onnx.TensorProto.BOOL:
            out[value.name] = np.array(True) if not shape else np.ones(shape, bool)
        elif np.issubdtype(dtype, np.integer):
            if "mask" in value.name:
                out[value.name] = np.ones(shape, dtype)
            elif "type" in value.name:  # token types: a table of two rows
                out[value.name] = np.zeros(shape, dtype)
            elif "position" in value.name:
                out[value.name] = np.broadcast_to(np.arange(families.PAST, families.PAST + shape[-1]), shape).astype(dtype)
            else:
                out[value.name] = rng.integers(0, families.VOCAB, size=shape).astype(dtype)
        else:
            out[value.name] = rng.standard_normal(size=shape).astype(dtype)
    return out


def _check_loads(model: onnx.ModelProto) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _ort_optimizer(model: onnx.ModelProto, family: str) -> onnx.ModelProto:
    """`optimize_model` with the family's model type, given a file (as `bench.cases` explains);
    its default level first, the Python fusions alone (`opt_level=0`) when that does not load.
    When neither loads on the CPU (T5's `RelativePositionBias` has no CPU kernel) the level-0 file
    is still what the user gets and is tagged: the row says `(no CPU load)`."""
    from onnxruntime.transformers.optimizer import optimize_model

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.onnx"
        onnx.save(model, src)
        result = None
        for opt_level in (None, 0):
            result = optimize_model(
                str(src),
                model_type=families.FAMILIES[family].ort_model_type,
                num_heads=families.HEADS,
                hidden_size=families.HIDDEN,
                opt_level=opt_level,
                use_gpu=False,
            ).model
            try:
                _check_loads(result)
            except Exception:
                continue
            return result
    raise DoesNotLoad(result)


class _RandomReader:
    """A calibration reader of a few random feeds (`onnxruntime.quantization.CalibrationDataReader`)."""

    def __init__(self, model: onnx.ModelProto, count: int = 4) -> None:
        self.batches = iter([feeds(model, seed) for seed in range(count)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)

    def rewind(self) -> None:  # pragma: no cover - onnxruntime calls it on some paths
        pass


def _quantize_static(model: onnx.ModelProto, family: str) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    reader = type("Reader", (_RandomReader, CalibrationDataReader), {})(model)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "q.onnx"
        onnx.save(model, src)
        qint8 = QuantType.QInt8
        quantize_static(src, dst, reader, quant_format=QuantFormat.QDQ, activation_type=qint8, weight_type=qint8)
        return onnx.load(dst)


def _optimize_then_quantize(model: onnx.ModelProto, family: str) -> onnx.ModelProto:
    """onnxruntime's optimizer, then `quantize_dynamic` on what it wrote: the deployment recipe
    onnxruntime documents for transformers (fuse first, then quantize the fused graph), with the
    pre-processing its quantizer asks for (`quant_pre_process`: symbolic shape inference, which
    knows the fused ops, without optimizing again)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    optimized = _ort_optimizer(model, family)
    if not any(entry.domain == "com.microsoft" for entry in optimized.opset_import):
        optimized.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    with tempfile.TemporaryDirectory() as tmp:
        src, prepared, dst = Path(tmp) / "opt.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "q.onnx"
        onnx.save(optimized, src)
        quant_pre_process(str(src), str(prepared), skip_optimization=True)
        quantize_dynamic(prepared, dst, weight_type=QuantType.QInt8)
        return onnx.load(dst)


def _matmul_nbits(model: onnx.ModelProto, family: str) -> onnx.ModelProto:
    """int4 weights for every MatMul on a constant (blocks of 16: the tiny models' rows are 32 wide)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(model, block_size=16, is_symmetric=True)
    quantizer.process()
    return quantizer.model.model


def _float16(model: onnx.ModelProto, family: str) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=True)


def _cases_tool(name: str) -> Callable[[onnx.ModelProto, str], onnx.ModelProto]:
    return lambda model, family: cases._TOOLS[name](model, family)


_TOOL_FUNCTIONS: dict[str, Callable[[onnx.ModelProto, str], onnx.ModelProto]] = {
    "onnxslim": _cases_tool("onnxslim"),
    "ort_optimizer": _ort_optimizer,
    "quantize_dynamic": _cases_tool("quantize_dynamic"),
    "quantize_static": _quantize_static,
    "gs_roundtrip": _cases_tool("gs_roundtrip"),
    "ort_opt_quantize": _optimize_then_quantize,
    "matmul_nbits": _matmul_nbits,
    "float16": _float16,
}


def degraded(exported: ExportedFile, tool: str) -> Path:
    """The export after `tool`, cached beside it as `tools/<stem>.<tool>.onnx` (a failure as `.error`)."""
    if tool == "none":
        return exported.path
    path = exported.path.parent / "tools" / f"{exported.component}.{tool}.onnx"
    path.parent.mkdir(exist_ok=True)
    failure = path.with_suffix(".error")
    if path.exists():
        return path
    if failure.exists():
        raise ToolError(failure.read_text(encoding="utf-8").strip())
    try:
        with cases._quiet():
            result = _TOOL_FUNCTIONS[tool](onnx.load(exported.path), exported.family)
    except DoesNotLoad as unloadable:
        result = unloadable.model
        path.with_suffix(".noload").touch()
    except Exception as exc:
        reason = str(exc) if isinstance(exc, ToolError) else f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
        failure.write_text(reason[:160] + "\n", encoding="utf-8")
        raise ToolError(reason[:160]) from exc
    if not result.graph.node:
        reason = "wrote a model with no nodes"
        failure.write_text(reason + "\n", encoding="utf-8")
        raise ToolError(reason)
    cases._save_atomic(result, path)
    return path
