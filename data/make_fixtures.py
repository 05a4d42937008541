"""Regenerate the small models shipped in data/ (tiny random BERTs, weights inline).

    python -m data.make_fixtures

- `bert-tiny-shim.onnx`: exported with `shim.export` (dynamo), then run through onnxslim, as a
  user ships it: onnxslim dropped every node's metadata, the shim's scoped names carry the
  modules through — the README quick start tags this one;
- `bert-tiny.onnx`: the same model exported with plain `torch.onnx.export` (dynamo), then
  onnxslim — no metadata and no scoped names left, only parameter names and topology (the
  README's example report: direct evidence and inference shown apart);
- `bert-tiny-torchscript.onnx`: plain TorchScript export, scoped names.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import onnx
import onnxslim

import shim
from bench import cases

DATA = Path(__file__).resolve().parent


def _shim_slim(target: Path, work: Path) -> None:
    model, inputs = cases.build_model("bert")
    exported = work / "shim" / "model.onnx"
    exported.parent.mkdir()
    with cases._quiet():
        shim.export(model, inputs, exported, input_names=list(cases.INPUT_NAMES["bert"]), output_names=list(cases.OUTPUT_NAMES))
        slim = onnxslim.slim(onnx.load(exported))
    onnx.save(slim, target)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _shim_slim(DATA / "bert-tiny-shim.onnx", work)
        shutil.copyfile(cases.make_case("bert", "dynamo", "onnxslim", work).path, DATA / "bert-tiny.onnx")
        shutil.copyfile(cases.make_case("bert", "torchscript", "none", work).path, DATA / "bert-tiny-torchscript.onnx")
    print("wrote", *(p.name for p in sorted(DATA.glob("*.onnx"))))


if __name__ == "__main__":
    main()
