"""Reading an export's structure without its weights and writing it back atomically.

External data (`model.onnx.data`, the dynamo exporter's default) is never loaded, so the saved
proto keeps its `external_data` references and the data file is neither read nor rewritten.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import onnx

__all__ = ["load_structure", "save_atomic"]


def load_structure(path: Path) -> onnx.ModelProto:
    """The model at `path`, weights left in their external data file."""
    return onnx.load(path, load_external_data=False)


def save_atomic(model: onnx.ModelProto, path: Path) -> None:
    """Write `model` to a temporary file beside `path` and rename it over `path`.

    The file keeps the permission bits of the file it replaces.
    """
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else None
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(model.SerializeToString())
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
