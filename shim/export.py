"""`shim.export`: `torch.onnx.export`, then module scopes in names, the module map and tags.

`export(model, args, f, ...)` takes exactly `torch.onnx.export`'s arguments, plus `retag`. It ensures
that:

1. torch writes the file itself, with every option passed through unchanged (dynamic shapes or
   axes, opset, external data, ...); only `verbose` defaults to False, which silences the dynamo
   exporter's progress prints (`verbose=None`/`True` brings them back);
2. a failure of torch's exporter is raised as one `ExportFailed` with a short message. What
   torch writes to `sys.stderr` meanwhile (warnings; on a failed `torch.export`, a print of the
   partial graph that can run to pages) is held back: replayed after a success, kept in
   `ExportFailed.output` after a failure;
3. the written file is then loaded without its weights and rewritten in memory: scoped node and
   tensor names (`shim.rename`), the `hierarchy.modules` map (`shim.modules`) and, with
   `retag=True`, the tagger's `hierarchy.*` tags on every node (`tagger.tag_proto`);
4. it is saved back over `f` atomically, keeping the file's mode (`tagger.write_model`); an
   external data file (`model.onnx.data`) is neither read nor rewritten: left exactly as torch wrote it.

Without `f` torch writes nothing and returns an `ONNXProgram`; there is nothing to rewrite then,
so the program is returned as torch made it (with a warning). The `ONNXProgram` returned with `f`
also still holds torch's in-memory model: the scoped, tagged model is the file.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch

from shim import modules, rename
from shim.errors import ExportFailed
from tagger import CoverageReport, tag_proto, write_model

__all__ = ["ExportResult", "export"]


@dataclass(frozen=True)
class ExportResult:
    """What `export` did; `str()` is a one-line summary."""

    program: Any
    """What `torch.onnx.export` returned: the `ONNXProgram` (dynamo) or None (TorchScript)."""
    path: Path | None
    """The written model, or None when no `f` was given."""
    exporter: str
    """`dynamo` or `torchscript`."""
    model_class: str
    nodes: int
    renamed_nodes: int
    renamed_tensors: int
    modules: int
    """Entries of the `hierarchy.modules` map (0 when the model has no `named_modules`)."""
    seconds: float
    """Wall time of the whole call."""
    torch_seconds: float
    """Of which in `torch.onnx.export`."""
    report: CoverageReport | None = None
    """The tagger's report with `retag=True`."""

    def __str__(self) -> str:
        if self.path is None:
            return f"{self.exporter} export of {self.model_class}: not written (no f), names unchanged, {self.seconds:.2f} s"
        tagged = f", {self.report.nodes} nodes tagged" if self.report is not None else ""
        return (
            f"{self.exporter} export of {self.model_class} -> {self.path}: {self.nodes} nodes ({self.renamed_nodes} renamed), "
            f"{self.renamed_tensors} tensors renamed, {self.modules} modules{tagged}, "
            f"{self.seconds:.2f} s (torch {self.torch_seconds:.2f} s)"
        )


def export(
    model: Any,
    args: Any = (),
    f: str | os.PathLike | None = None,
    *,
    kwargs: dict[str, Any] | None = None,
    dynamo: bool = True,
    retag: bool = True,
    **torch_kwargs: Any,
) -> ExportResult:
    """`torch.onnx.export(model, args, f, kwargs=kwargs, dynamo=dynamo, **torch_kwargs)`, then scope
    every node and intermediate tensor name, record the module map and (`retag`) tag every node.

    Raises `ExportFailed` when torch's exporter fails, `TypeError` for an argument that
    `torch.onnx.export` does not take or an `f` that is not a path.
    """
    _check_arguments(torch_kwargs, f)
    start = time.perf_counter()
    exporter = "dynamo" if dynamo or isinstance(model, torch.export.ExportedProgram) else "torchscript"
    model_class = type(model).__name__
    torch_kwargs.setdefault("verbose", False)
    held_back = io.StringIO()
    try:
        with contextlib.redirect_stderr(held_back):
            program = torch.onnx.export(model, args, f, kwargs=kwargs, dynamo=dynamo, **torch_kwargs)
    except Exception as exc:
        raise ExportFailed(model_class, exporter, exc, held_back.getvalue()) from None
    sys.stderr.write(held_back.getvalue())
    torch_seconds = time.perf_counter() - start
    if f is None:
        warnings.warn("shim.export without f writes nothing, so names stay unscoped: pass f", stacklevel=2)
        return ExportResult(program, None, exporter, model_class, 0, 0, 0, 0, time.perf_counter() - start, torch_seconds)

    path = Path(f)
    proto = onnx.load(path, load_external_data=False)  # the weights stay in their data file, never read
    renamed = rename.scope_names(proto, exporter)
    classes = modules.module_classes(model)
    if classes is not None:
        modules.write_module_map(proto, classes)
    report = tag_proto(proto, path.name) if retag else None
    write_model(proto, path)  # its external data references as torch wrote them
    return ExportResult(
        program=program,
        path=path,
        exporter=exporter,
        model_class=model_class,
        nodes=renamed.nodes,
        renamed_nodes=renamed.renamed_nodes,
        renamed_tensors=renamed.renamed_tensors,
        modules=len(classes or ()),
        seconds=time.perf_counter() - start,
        torch_seconds=torch_seconds,
        report=report,
    )


@functools.cache
def _torch_parameters() -> frozenset[str]:
    return frozenset(inspect.signature(torch.onnx.export).parameters) - {"model", "args", "f", "kwargs", "dynamo"}


def _check_arguments(torch_kwargs: dict[str, Any], f: object) -> None:
    """Usage errors stay TypeErrors: they must not look like an exporter failure."""
    unknown = sorted(set(torch_kwargs) - _torch_parameters())
    if unknown:
        raise TypeError(f"torch.onnx.export got unexpected keyword argument(s): {', '.join(unknown)}")
    if f is not None and not isinstance(f, (str, os.PathLike)):
        raise TypeError(f"f must be a path (str or os.PathLike), got {type(f).__name__}")
