"""Regenerate the small models shipped in data/ (plain torch.onnx.export of tiny random BERTs).

    python -m data.make_fixtures

- `bert-tiny.onnx`: dynamo export run through onnxslim — no metadata, no scoped names left, the
  hard case the README quick start shows;
- `bert-tiny-torchscript.onnx`: TorchScript export, scoped names.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bench import cases

DATA = Path(__file__).resolve().parent


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        slim = cases.make_case("bert", "dynamo", "onnxslim", Path(work))
        shutil.copyfile(slim.path, DATA / "bert-tiny.onnx")
        plain = cases.make_case("bert", "torchscript", "none", Path(work))
        shutil.copyfile(plain.path, DATA / "bert-tiny-torchscript.onnx")
    print("wrote", DATA / "bert-tiny.onnx", DATA / "bert-tiny-torchscript.onnx")


if __name__ == "__main__":
    main()
