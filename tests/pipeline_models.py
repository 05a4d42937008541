"""Real exports whose inputs the tool must generate right: shapes tied to weights and to each other.

Each builder exports a tiny `transformers` model (random weights, no downloads) with the
TorchScript exporter and dynamic axes, named the way optimum names them:

- `llama_with_past`: LlamaForCausalLM fed `past_key_values.*` (dim `past_sequence_length`) whose
  `attention_mask` is `past_sequence_length + sequence_length` long (optimum's dim name);
- `vit_dynamic`: ViTModel whose `pixel_values` has dynamic `num_channels`, `height` and `width`
  (optimum's axes), though only 3 channels and one image size (a fixed position table) run;
- `merged_decoder`: the decoder without past and the decoder with past as the two branches of
  one `If` on a bool `use_cache_branch` input, as optimum's `decoder_model_merged.onnx` (branch
  nodes share their names; weights stay inside each branch).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import onnx
import torch

LAYERS = 2
HEADS = 4
HEAD_DIM = 16
VOCAB = 100


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HEADS * HEAD_DIM,
        intermediate_size=128,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval(), config


class _Decoder(torch.nn.Module):
    """Positional tensors in (transformers 5 does not trace keyword calls), logits and the new
    cache out; `with_past` rebuilds the DynamicCache from the flat past tensors."""

    def __init__(self, m: torch.nn.Module, config, with_past: bool) -> None:
        super().__init__()
        self.m = m
        self.config = config
        self.with_past = with_past

    def forward(self, input_ids, attention_mask, *past):
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache(config=self.config)
        if self.with_past:
            for layer in range(LAYERS):
                cache.update(past[2 * layer], past[2 * layer + 1], layer)
        out = self.m(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True)
        flat = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits, *flat)


def _past_names(prefix: str) -> list[str]:
    return [f"{prefix}.{layer}.{kind}" for layer in range(LAYERS) for kind in ("key", "value")]


def _export(module: torch.nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], axes: dict) -> Path:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(path), dynamo=False, input_names=inputs, output_names=outputs, dynamic_axes=axes, opset_version=17
        )
    return path


def export_decoder(path: Path, with_past: bool) -> Path:
    """LLaMA decoder (optimum's dim names); with past: `past_key_values.*` inputs."""
    model, config = _llama()
    batch, seq, past_len = 2, 3, 4
    ids = torch.randint(0, VOCAB, (batch, seq))
    total = "past_sequence_length + sequence_length" if with_past else "sequence_length"
    mask = torch.ones(batch, past_len + seq if with_past else seq, dtype=torch.int64)
    past = [torch.randn(batch, HEADS, past_len, HEAD_DIM) for _ in range(2 * LAYERS)] if with_past else []
    inputs = ["input_ids", "attention_mask", *(_past_names("past_key_values") if with_past else [])]
    outputs = ["logits", *_past_names("present")]
    axes = {"input_ids": {0: "batch_size", 1: "sequence_length"}, "attention_mask": {0: "batch_size", 1: total}}
    axes.update({name: {0: "batch_size", 2: "past_sequence_length"} for name in inputs[2:]})
    axes.update({name: {0: "batch_size", 2: total} for name in outputs[1:]})
    axes["logits"] = {0: "batch_size", 1: "sequence_length"}
    return _export(_Decoder(model, config, with_past), (ids, mask, *past), path, inputs, outputs, axes)


def llama_with_past(directory: Path) -> Path:
    return export_decoder(directory / "llama_with_past.onnx", with_past=True)


def vit_dynamic(directory: Path) -> Path:
    """ViT with every axis of `pixel_values` dynamic, as optimum exports it."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    )
    return export_pixels(ViTModel(config).eval(), directory / "vit_dynamic.onnx")


class _Pixels(torch.nn.Module):
    """A vision model called on `pixel_values` alone, returning its last hidden state."""

    def __init__(self, m: torch.nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.m(pixel_values=pixel_values).last_hidden_state


def export_pixels(model: torch.nn.Module, path: Path) -> Path:
    """TorchScript export with every axis of `pixel_values` dynamic, as optimum exports vision models."""
    axes = {"pixel_values": {0: "batch_size", 1: "num_channels", 2: "height", 3: "width"}, "last_hidden_state": {0: "batch_size"}}
    return _export(_Pixels(model), (torch.randn(1, 3, 32, 32),), path, ["pixel_values"], ["last_hidden_state"], axes)


def merged_decoder(directory: Path) -> Path:
    """The decoder without and with past under one `If` on `use_cache_branch` (optimum's merge).

    Graph inputs are the with-past decoder's plus `use_cache_branch`; each branch keeps its own
    nodes (the same names in both), initializers and, renamed `<output>.<branch>`, its outputs.
    """
    first = onnx.load(export_decoder(directory / "decoder.onnx", with_past=False))
    cached = onnx.load(export_decoder(directory / "decoder_with_past.onnx", with_past=True))
    then_branch = _branch(cached.graph, "with_past")
    else_branch = _branch(first.graph, "without_past")
    condition = onnx.helper.make_tensor_value_info("use_cache_branch", onnx.TensorProto.BOOL, [1])
    outputs = [output.name for output in cached.graph.output]
    node = onnx.helper.make_node(
        "If", ["use_cache_branch"], outputs, name="optimum::if", then_branch=then_branch, else_branch=else_branch
    )
    graph = onnx.helper.make_graph([node], "merged", [*cached.graph.input, condition], list(cached.graph.output))
    model = onnx.helper.make_model(graph, opset_imports=list(cached.opset_import))
    model.ir_version = cached.ir_version
    onnx.checker.check_model(model, full_check=True)
    path = directory / "decoder_model_merged.onnx"
    onnx.save(model, path)
    return path


def _branch(graph: onnx.GraphProto, label: str) -> onnx.GraphProto:
    """`graph` as an If body: no inputs (it reads the outer ones), outputs renamed per branch."""
    renamed = {output.name: f"{output.name}.{label}" for output in graph.output}
    body = onnx.GraphProto()
    body.CopyFrom(graph)
    body.name = label
    del body.input[:]
    for node in body.node:
        node.output[:] = [renamed.get(name, name) for name in node.output]
        node.input[:] = [renamed.get(name, name) for name in node.input]
    for output in body.output:
        output.name = renamed[output.name]
    return body
