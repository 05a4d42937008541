"""Regenerate data/optimum/: small files exactly as optimum's ONNX exporter writes them.

optimum-onnx pins an older transformers than the tests use, so this runs in its own environment:

    /work/venv-optimum/bin/python -m data.make_optimum_fixtures

from the repository root. Models are the benchmark's tiny families (`bench/families.py`: hidden 32,
2 layers, vocabulary 100, random weights), saved with `save_pretrained` and exported offline with
`optimum.exporters.onnx.main_export`:

- `t5-decoder_model_merged.onnx`: T5 `text2text-generation-with-past`, the merged decoder: its one
  top-level node is an `If` on `use_cache_branch` whose two branches hold every other node;
- `llama-with-past.onnx`: LLaMA `text-generation-with-past` (`past_key_values.*` inputs,
  `present.*` outputs, `/lm_head/MatMul` on an anonymous weight);
- `vit.onnx`: ViT `image-feature-extraction` (dynamic `num_channels`).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bench import families

DATA = Path(__file__).resolve().parent / "optimum"

FIXTURES = {
    "t5-decoder_model_merged.onnx": ("t5", "text2text-generation-with-past", "decoder_model_merged.onnx"),
    "llama-with-past.onnx": ("llama", "text-generation-with-past", "model.onnx"),
    "vit.onnx": ("vit", "image-feature-extraction", "model.onnx"),
}


def main() -> None:
    from optimum.exporters.onnx import main_export

    DATA.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for target, (family, task, written) in FIXTURES.items():
            model_dir, out = Path(tmp) / family, Path(tmp) / f"{family}-onnx"
            if not model_dir.exists():
                families.save_pretrained(family, str(model_dir))
            main_export(str(model_dir), output=str(out), task=task, no_post_process=False)
            shutil.copyfile(out / written, DATA / target)
    print("wrote", *(f"{p.name} ({p.stat().st_size // 1024} KB)" for p in sorted(DATA.glob("*.onnx"))))


if __name__ == "__main__":
    main()
