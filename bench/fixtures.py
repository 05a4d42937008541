"""`python -m bench.fixtures OUT_DIR [--archs bert,vit]`: shim exports of the tiny bench models.

Writes `OUT_DIR/<arch>-<exporter>/model.onnx` (dynamo: plus `model.onnx.data`) for every arch of
`bench.cases` and both exporters, and prints one line per export.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import fire

import shim
from bench import cases

__all__ = ["main"]


def main(out_dir: str, archs: str | list | tuple = cases.ARCHS) -> None:
    """Export the tiny models (comma-separated --archs, default all) with both exporters into OUT_DIR."""
    chosen = [a.strip() for a in archs.split(",")] if isinstance(archs, str) else [str(a) for a in archs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter of the exporters
        for arch in chosen:
            for exporter in cases.EXPORTERS:
                _export_one(arch, exporter, Path(str(out_dir)) / f"{arch}-{exporter}")


def _export_one(arch: str, exporter: str, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    model, inputs = cases.build_model(arch)
    try:
        result = shim.export(
            model,
            inputs,
            target / "model.onnx",
            input_names=list(cases.INPUT_NAMES[arch]),
            output_names=list(cases.OUTPUT_NAMES),
            dynamo=exporter == "dynamo",
        )
    except shim.ExportFailed as exc:
        print(f"{arch}/{exporter}: {exc}")
    else:
        print(result)


if __name__ == "__main__":
    fire.Fire(main)
