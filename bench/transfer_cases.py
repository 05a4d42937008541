"""Plain dynamo exports of four tiny families, each degraded by five real tools, with truth.

Shared by `bench.transfer` and `tests/test_transfer.py`. Families: an encoder (BERT), a
LLaMA-style causal LM fed and returning its KV cache, an encoder-decoder (T5) and a vision
transformer (ViT), all from tiny `transformers` configs with random weights (no downloads).
Each is exported with `torch.onnx.export(..., dynamo=True)` and its defaults (weights in
`model.onnx.data`), saved with `save_pretrained` (the `--weights` checkpoint), then degraded by
onnxslim, onnxruntime's transformer optimizer, `quantize_dynamic`, static QDQ quantization and a
graphsurgeon round trip. Truth is the export's own `name_scopes` metadata, carried to each
tool's output by node name or output tensor name (`bench.cases.carry_truth`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from bench import cases

FAMILIES = ("bert", "llama", "t5", "vit")
TOOLS = ("onnxslim", "ort_optimizer", "quantize_dynamic", "quantize_qdq", "gs_roundtrip")
_ORT_MODEL_TYPE = {"bert": "bert", "llama": "gpt2", "t5": "t5", "vit": "vit"}
_HIDDEN, _HEADS, _SEQ, _PAST = 32, 2, 4, 8
_VERSION = "1"


class _CausalLM(torch.nn.Module):
    """input_ids, attention_mask and the flat past keys/values in; logits and the flat present out.

    transformers 5 keeps the cache in a `DynamicCache`, which the exporter cannot take as an input:
    the wrapper builds it from plain tensors (the layout a generation loop feeds an ONNX LM)."""

    def __init__(self, m: torch.nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *past: torch.Tensor):
        from transformers import DynamicCache

        cache = DynamicCache(config=self.m.config)
        for layer in range(len(past) // 2):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        out = self.m(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True)
        present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)


class _Seq2Seq(torch.nn.Module):
    def __init__(self, m: torch.nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, decoder_input_ids: torch.Tensor) -> torch.Tensor:
        return self.m(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).last_hidden_state


def build(family: str) -> tuple[torch.nn.Module, torch.nn.Module, dict[str, np.ndarray]]:
    """(inner transformers model, the wrapper that is exported, named example inputs)."""
    import transformers as tf

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, cases.VOCAB, (1, _SEQ), generator=gen)
    text = {"vocab_size": cases.VOCAB}
    with cases._quiet():
        if family == "llama":
            cfg = tf.LlamaConfig(
                hidden_size=_HIDDEN, num_hidden_layers=2, num_attention_heads=_HEADS, num_key_value_heads=_HEADS,
                intermediate_size=2 * _HIDDEN, max_position_embeddings=64, **text,
            )  # fmt: skip
            inner = tf.LlamaForCausalLM(cfg)
            wrapper: torch.nn.Module = _CausalLM(inner)
            past = {f"past_{i}": torch.randn(1, _HEADS, _PAST, _HIDDEN // _HEADS, generator=gen) for i in range(4)}
            inputs = {"input_ids": ids, "attention_mask": torch.ones(1, _SEQ + _PAST, dtype=torch.long), **past}
        elif family == "t5":
            cfg = tf.T5Config(d_model=_HIDDEN, d_kv=_HIDDEN // _HEADS, d_ff=2 * _HIDDEN, num_layers=2, num_heads=_HEADS, **text)
            cfg._attn_implementation = "eager"  # with sdpa (the default) torch 2.13's dynamo export fails on a view
            inner = tf.T5Model(cfg)
            wrapper = _Seq2Seq(inner)
            inputs = {"input_ids": ids, "attention_mask": torch.ones(1, _SEQ, dtype=torch.long), "decoder_input_ids": ids[:, :3]}
        elif family in ("bert", "vit"):
            model, example = cases.build_model(family)
            return model.m, model, dict(zip(cases.INPUT_NAMES[family], example, strict=True))
        else:
            raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    with torch.no_grad():  # no two parameters equal (untouched LayerNorm weights all are)
        for p in inner.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.02)
    wrapper.eval()
    return inner, wrapper, inputs


def module_paths(wrapper: torch.nn.Module) -> set[str]:
    return {name for name, _ in wrapper.named_modules()}


@dataclass
class Family:
    """One family's export, checkpoint directory, module paths and example feeds."""

    name: str
    export: Path
    checkpoint: Path
    modules: set[str]
    feeds: dict[str, np.ndarray]
    parametrised: set[str]
    """Module paths that own a parameter (the nodes `--weights` can name directly)."""


def export_family(family: str, work_dir: Path) -> Family:
    """Export (dynamo, defaults: external data) and `save_pretrained` once into `work_dir/<family>`."""
    inner, wrapper, inputs = build(family)
    final = Path(work_dir) / f"{family}-{_VERSION}"
    feeds = {name: t.numpy() for name, t in inputs.items()}
    if not (final / "model.onnx").exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
        try:
            with cases._quiet():
                torch.onnx.export(wrapper, tuple(inputs.values()), str(tmp / "model.onnx"), input_names=list(inputs), dynamo=True)
                inner.save_pretrained(tmp / "checkpoint")
            try:
                tmp.rename(final)
            except OSError:
                if not (final / "model.onnx").exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    owners = {name.rpartition(".")[0] for name, _ in wrapper.named_parameters()}
    return Family(family, final / "model.onnx", final / "checkpoint", module_paths(wrapper), feeds, owners)


def _ort_optimizer(model: onnx.ModelProto, family: str, tmp: Path) -> onnx.ModelProto:
    import onnxruntime as ort
    from onnxruntime.transformers.optimizer import optimize_model

    src = tmp / "in.onnx"
    onnx.save(model, src)
    for opt_level in (None, 0):
        result = optimize_model(
            str(src), model_type=_ORT_MODEL_TYPE[family], num_heads=_HEADS, hidden_size=_HIDDEN, opt_level=opt_level, use_gpu=False
        ).model
        options = ort.SessionOptions()
        options.log_severity_level = 4
        try:
            ort.InferenceSession(result.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - a model that does not load: the next level
            continue
        return result
    raise cases.UnsupportedCase(f"onnxruntime optimizer output for {family} does not load")


def _quantize_dynamic(model: onnx.ModelProto, family: str, tmp: Path) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(model, tmp / "q.onnx", weight_type=QuantType.QInt8)
    return onnx.load(tmp / "q.onnx")


class _RandomReader:
    """A few random batches shaped like the example feeds (integer inputs stay in range)."""

    def __init__(self, feeds: dict[str, np.ndarray]) -> None:
        rng = np.random.default_rng(0)
        self._batches = iter([{k: self._like(v, rng) for k, v in feeds.items()} for _ in range(3)])

    @staticmethod
    def _like(value: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return value if value.dtype.kind == "i" else rng.standard_normal(value.shape).astype(value.dtype)

    def get_next(self):
        return next(self._batches, None)


def _quantize_qdq(model: onnx.ModelProto, family: str, tmp: Path, feeds: dict[str, np.ndarray]) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantFormat, quantize_static

    onnx.save(model, tmp / "in.onnx")
    quantize_static(tmp / "in.onnx", tmp / "qdq.onnx", _RandomReader(feeds), quant_format=QuantFormat.QDQ)
    return onnx.load(tmp / "qdq.onnx")


def _gs_roundtrip(model: onnx.ModelProto, family: str, tmp: Path) -> onnx.ModelProto:
    import onnx_graphsurgeon as gs

    return gs.export_onnx(gs.import_onnx(model))


def _onnxslim(model: onnx.ModelProto, family: str, tmp: Path) -> onnx.ModelProto:
    import onnxslim

    return onnxslim.slim(model)


@dataclass
class Case:
    """A tool's output on disk with the truth carried to it."""

    family: Family
    tool: str
    path: Path
    truth: dict[int, str]


def make_case(family: Family, tool: str) -> Case:
    """Degrade the export with `tool` (cached as `<tool>.onnx` beside it) and carry the truth."""
    original = onnx.load(family.export, load_external_data=False)
    truth = cases.truth_of_export(original, "dynamo", family.modules)
    path = family.export.parent / f"{tool}.onnx"
    if not path.exists():
        full = onnx.load(family.export)
        with tempfile.TemporaryDirectory() as tmp, cases._quiet():
            if tool == "quantize_qdq":
                result = _quantize_qdq(full, family.name, Path(tmp), family.feeds)
            else:
                result = _TOOLS[tool](full, family.name, Path(tmp))
        fd, partial = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
        os.close(fd)
        onnx.save(result, partial)
        os.replace(partial, path)
    result = onnx.load(path, load_external_data=False)
    return Case(family, tool, path, cases.carry_truth(original, truth, result))


_TOOLS = {
    "onnxslim": _onnxslim,
    "ort_optimizer": _ort_optimizer,
    "quantize_dynamic": _quantize_dynamic,
    "gs_roundtrip": _gs_roundtrip,
}
