"""The model families of the real-pipeline benchmark: tiny `transformers` models users really export.

- `bert`: encoder (`BertModel`; feature extraction: `last_hidden_state`);
- `llama`: decoder-only LLM with a KV cache (`LlamaForCausalLM`: bias-free Linear, RMSNorm, rotary,
  grouped-query attention: 2 query heads share 1 key/value head; measured to export with
  TorchScript, dynamo and optimum on torch 2.13 / transformers 5.24 and 4.57);
- `t5`: encoder-decoder (`T5ForConditionalGeneration`, whose optimum export has a merged decoder);
- `vit`: vision transformer (`ViTModel`; feature extraction: `last_hidden_state`).

Configs are tiny (hidden 32, 2 layers, vocabulary 100) and weights random plus small noise (no two
initializers equal: the dynamo exporter deduplicates equal ones), so everything builds in seconds
and without downloads. This module only needs `torch` and `transformers` (4.x or 5.x): the optimum
export runs it in a separate environment whose transformers is older.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["FAMILIES", "Family", "build", "save_pretrained"]

HIDDEN = 32
LAYERS = 2
HEADS = 2
KV_HEADS = 1
VOCAB = 100
IMAGE = 32
SEQ = 8
PAST = 4


@dataclass(frozen=True)
class Family:
    """What the benchmark needs to know about one family."""

    name: str
    head_output: str
    """The model output the head produces (the head node is the MatMul/Gemm nearest to it)."""
    optimum_task: str
    """optimum task without past; `-with-past` is appended for the with-past export where it exists."""
    ort_model_type: str
    """`onnxruntime.transformers.optimizer` model type that fits."""
    has_past: bool


FAMILIES: dict[str, Family] = {
    "bert": Family("bert", "last_hidden_state", "feature-extraction", "bert", False),
    "llama": Family("llama", "logits", "text-generation", "gpt2", True),
    "t5": Family("t5", "logits", "text2text-generation", "t5", True),
    "vit": Family("vit", "last_hidden_state", "image-feature-extraction", "vit", False),
}


def _model(name: str) -> torch.nn.Module:
    import transformers as tf

    if name == "bert":
        return tf.BertModel(
            tf.BertConfig(
                hidden_size=HIDDEN,
                num_hidden_layers=LAYERS,
                num_attention_heads=HEADS,
                intermediate_size=2 * HIDDEN,
                vocab_size=VOCAB,
                max_position_embeddings=64,
            )
        )
    if name == "llama":
        return tf.LlamaForCausalLM(
            tf.LlamaConfig(
                hidden_size=HIDDEN,
                num_hidden_layers=LAYERS,
                num_attention_heads=HEADS,
                num_key_value_heads=KV_HEADS,
                intermediate_size=2 * HIDDEN,
                vocab_size=VOCAB,
                max_position_embeddings=64,
                tie_word_embeddings=False,
            )
        )
    if name == "t5":
        return tf.T5ForConditionalGeneration(
            tf.T5Config(
                d_model=HIDDEN,
                d_kv=HIDDEN // HEADS,
                d_ff=2 * HIDDEN,
                num_layers=LAYERS,
                num_decoder_layers=LAYERS,
                num_heads=HEADS,
                vocab_size=VOCAB,
                decoder_start_token_id=0,
                pad_token_id=0,
                eos_token_id=1,
            )
        )
    if name == "vit":
        return tf.ViTModel(
            tf.ViTConfig(
                hidden_size=HIDDEN,
                num_hidden_layers=LAYERS,
                num_attention_heads=HEADS,
                intermediate_size=2 * HIDDEN,
                image_size=IMAGE,
                patch_size=8,
            )
        )
    raise ValueError(f"unknown family {name!r}; expected one of {tuple(FAMILIES)}")


def build(name: str) -> torch.nn.Module:
    """A fresh, deterministic, eval-mode tiny model of the family with noisy random weights."""
    torch.manual_seed(0)
    model = _model(name)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.02)
    return model.eval()


def save_pretrained(name: str, directory: str) -> None:
    """`save_pretrained` of `build(name)` (safetensors), the directory optimum and `--weights` read."""
    build(name).save_pretrained(directory)
