"""Reading an export's structure without its weights and writing it back atomically.

External data (`model.onnx.data`, the dynamo exporter's default) is never loaded, so the saved
proto keeps its `external_data` references and the data file is neither read nor rewritten.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from tagger.modelio import atomic_write

__all__ = ["load_structure", "save_atomic"]


def load_structure(path: Path) -> onnx.ModelProto:
    """The model at `path`, weights left in their external data file."""
    return onnx.load(path, load_external_data=False)


def save_atomic(model: onnx.ModelProto, path: Path) -> None:
    """Write `model` over `path` atomically, keeping the file's mode (`tagger.modelio.atomic_write`)."""
    data = model.SerializeToString()
    atomic_write(path, lambda stream: stream.write(data))
