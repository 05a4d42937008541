"""Tiny onnxruntime-genai model builder outputs for `bench/genai.py` and `tests/data/genai/`.

Runs in the builder's own virtualenv (it pins its own torch and transformers; the tagger never
imports torch), not in the tagger's:

    python3 -m venv /work/genai-venv
    /work/genai-venv/bin/pip install torch==2.13.0   # the CPU wheel; never an unpinned torch
    /work/genai-venv/bin/pip install onnxruntime-genai==0.18.0 transformers onnx onnx_ir safetensors
    /work/genai-venv/bin/python bench/genai_fixtures.py [--cache /work/genai-cache] [--fixture]

For each family (LLaMA, Qwen2, Phi-3) it saves a tiny random HF CausalLM (hidden 64, 2 layers,
4 heads, 2 KV heads, vocab 128) with N(0, 0.02) noise on every weight (no two tensors equal, as
in a trained checkpoint), its `named_modules()` as `modules.json`, then runs
`python -m onnxruntime_genai.models.builder -i HF -o OUT -p fp32|int4|fp16 -e cpu` with the q/k/v
projections fused (the builder's default) and unfused (`--extra_options fuse_qkv=false`).
Layout: `CACHE/FAMILY/hf/{model.safetensors,config.json,modules.json}` and
`CACHE/FAMILY/PRECISION-fused|unfused/model.onnx[.data]`. Existing outputs are kept.

`--fixture` also copies the fp32 fused LLaMA output (weights inline) and its checkpoint and
module tree into `tests/data/genai/`, and the fp16 fused LLaMA output as the builder wrote it
(`model.onnx`, `model.onnx.data`, `genai_config.json`) into `tests/data/genai/llama-fp16-fused/`
(under 1 MB together).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

FAMILIES = ("llama", "qwen2", "phi3")
PRECISIONS = ("fp32", "int4", "fp16")
FUSIONS = ("fused", "unfused")
_TINY = dict(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=128,
    max_position_embeddings=256,
    tie_word_embeddings=False,
)
FIXTURE_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "genai"


def _config(family: str):
    import transformers

    if family == "llama":
        return transformers.LlamaConfig(**_TINY)
    if family == "qwen2":
        return transformers.Qwen2Config(**_TINY)
    # Phi-3: without original == max the builder takes LongRoPE and fails (FIELD-NOTES §8)
    return transformers.Phi3Config(**_TINY, original_max_position_embeddings=_TINY["max_position_embeddings"], pad_token_id=0)


def save_checkpoint(family: str, directory: Path, seed: int = 0) -> None:
    """A tiny random CausalLM with noise on every weight, its config and its module tree."""
    import torch
    import transformers

    if (directory / "tokenizer.json").is_file():
        return
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(_config(family)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    model.save_pretrained(directory, safe_serialization=True)
    modules = {path: type(module).__name__ for path, module in model.named_modules()}
    (directory / "modules.json").write_text(json.dumps(modules, indent=1) + "\n", encoding="utf-8")
    _tokenizer(_TINY["vocab_size"]).save_pretrained(directory)


def _tokenizer(size: int):
    """A word-level tokenizer of `size` tokens: the builder loads one to write its config files."""
    import tokenizers
    import transformers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"w{i}": i for i in range(3, size)}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def build(hf: Path, out: Path, precision: str, fusion: str) -> None:
    if (out / "model.onnx").is_file():
        return
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out)]
    command += ["-p", precision, "-e", "cpu", "-c", str(out.parent / "hf-cache")]
    if fusion == "unfused":
        command += ["--extra_options", "fuse_qkv=false"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/work/genai-cache"))
    parser.add_argument("--fixture", action="store_true", help="copy the fp32 fused LLaMA output into tests/data/genai/")
    args = parser.parse_args()
    for family in FAMILIES:
        hf = args.cache / family / "hf"
        save_checkpoint(family, hf)
        for precision in PRECISIONS:
            for fusion in FUSIONS:
                build(hf, args.cache / family / f"{precision}-{fusion}", precision, fusion)
                print(f"{family} {precision} {fusion}: {args.cache / family / f'{precision}-{fusion}'}")
    if args.fixture:
        copy_fixture(args.cache / "llama")


def copy_fixture(family_dir: Path) -> None:
    """The fp32 fused LLaMA output with its weights inline (one file), and the checkpoint."""
    import onnx

    FIXTURE_DIR.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(family_dir / "fp32-fused" / "model.onnx"))
    onnx.save(model, str(FIXTURE_DIR / "llama-fp32-fused.onnx"))
    for name in ("model.safetensors", "config.json", "modules.json"):
        shutil.copy(family_dir / "hf" / name, FIXTURE_DIR / name)
    (FIXTURE_DIR / "llama-fp16-fused").mkdir(exist_ok=True)
    for name in ("model.onnx", "model.onnx.data", "genai_config.json"):
        shutil.copy(family_dir / "fp16-fused" / name, FIXTURE_DIR / "llama-fp16-fused" / name)


if __name__ == "__main__":
    main()
