"""What an extraction reports: boundary tensors, one extracted model, every module at a depth."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from tagger.commands.extract.choices import choices
from tagger.commands.extract.cut import Cut
from tagger.commands.extract.source import Source
from tagger.commands.extract.verify import Verification
from tagger.errors import ModelsFailed, VerificationFailed
from tagger.model.modelio import external_locations

__all__ = ["ExtractAllReport", "ExtractReport", "TensorSpec", "extract_report", "index_json"]


@dataclass(frozen=True)
class TensorSpec:
    """A boundary tensor: its name in the full model, element type, and shape.

    `shape` holds an int per static dimension, the symbol of a named one, None for an unknown
    one; the whole shape is None when the rank is unknown.
    """

    name: str
    dtype: str
    shape: list[int | str | None] | None


@dataclass
class ExtractReport:
    """One extracted model: what was selected, its boundary, where it went, and its proof."""

    source: str
    output: str
    module: str | None
    tag: str | None
    nodes: int
    pulled: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    initializers: int
    external_data: list[str]
    retagged: bool
    verification: Verification | None = None
    model: onnx.ModelProto | None = field(default=None, repr=False, compare=False)
    branch: str | None = None
    """The body the module was cut from (`If 'optimum::if'/then_branch`), None for the main graph."""
    chosen: int = 0
    """Selected nodes whose tag is a choice, not evidence or facts (`tagger.commands.extract.choices`)."""
    boundary_chosen: int = 0
    """Nodes outside whose tag is a choice and that produce an input or read an output."""
    checker: str | None = None
    """The full ONNX checker's objection to the written model, which onnxruntime overruled by
    loading it (`tagger.commands.extract` rule 6); None when the checker accepted it."""

    @property
    def selection(self) -> str:
        """`module m.encoder`, `module (root)`, `tag /BertModel/*`, `module decoder in If 'if'/then_branch`."""
        if self.module is None:
            selection = f"tag {self.tag}"
        else:
            selection = f"module {self.module}" if self.module else "module (root)"
        return f"{selection} in {self.branch}" if self.branch is not None else selection

    def summary(self) -> str:
        pulled = f" (+{self.pulled} pulled)" if self.pulled else ""
        external = f" (external: {', '.join(self.external_data)})" if self.external_data else ""
        counts = ", ".join(
            _plural(n, word)
            for n, word in ((len(self.inputs), "input"), (len(self.outputs), "output"), (self.initializers, "initializer"))
        )
        line = f"{self.selection}: {_plural(self.nodes, 'node')}{pulled}, {counts}{external} -> {self.output}"
        if self.chosen or self.boundary_chosen:
            line += (
                f"\nnote: {self.chosen} of its nodes and {self.boundary_chosen} at its boundary (producing its inputs or "
                "reading its outputs) are tagged by the tagger's choice, not by evidence or facts: the cut may be off there"
            )
        if self.checker is not None:
            line += f"\nnote: the ONNX checker refuses it ({self.checker}); onnxruntime loads it, and decides"
        return line if self.verification is None else f"{line}\n{self.verification.summary()}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("model")
        return data

    def check(self) -> None:
        """Raise `VerificationFailed` when a verification ran and failed."""
        if self.verification is not None and not self.verification.passed:
            raise VerificationFailed(f"verification failed for {self.selection}")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass
class ExtractAllReport:
    """Every module at one depth, one file each, plus `index.json`; failures are listed apart."""

    source: str
    depth: int
    out_dir: str
    index: str
    reports: list[ExtractReport]
    failures: dict[str, str]

    def summary(self) -> str:
        verified = [r for r in self.reports if r.verification is not None]
        passed = sum(r.verification.passed for r in verified)
        proof = f", verify passed {passed} of {len(verified)}" if verified else ""
        resting = sum(bool(r.chosen or r.boundary_chosen) for r in self.reports)
        proof += f", {resting} with chosen nodes inside or at the boundary" if resting else ""
        overruled = sum(r.checker is not None for r in self.reports)
        proof += f", {overruled} refused by the ONNX checker and loaded by onnxruntime (it decides)" if overruled else ""
        listed = "; ".join(f"{module or '(root)'}: {error}" for module, error in list(self.failures.items())[:3])
        failed = f", {len(self.failures)} failed: {listed}" if self.failures else ""
        return f"depth {self.depth}: {len(self.reports)} modules extracted{proof}{failed} -> {self.index}"

    def check(self) -> None:
        """Raise `VerificationFailed` when a module failed its verification, else `ModelsFailed`
        when a module could not be extracted."""
        unverified = sum(not r.verification.passed for r in self.reports if r.verification)
        if unverified:
            raise VerificationFailed(f"{_plural(unverified, 'module')} failed verification; see {self.index}")
        if self.failures:
            raise ModelsFailed(f"{_plural(len(self.failures), 'module')} could not be extracted; see {self.index}")


def _spec(info: onnx.ValueInfoProto) -> TensorSpec:
    kind = info.type.WhichOneof("value")
    if kind not in ("tensor_type", "sparse_tensor_type"):
        return TensorSpec(info.name, str(kind), None)
    tensor = getattr(info.type, kind)
    dtype = onnx.TensorProto.DataType.Name(tensor.elem_type).lower()
    if not tensor.HasField("shape"):
        return TensorSpec(info.name, dtype, None)
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
    return TensorSpec(info.name, dtype, dims)


def extract_report(src: Source, cut: Cut, model: onnx.ModelProto, kept: list[int], output: Path) -> ExtractReport:
    selected = set(cut.selected)
    chosen = choices(src, cut)
    return ExtractReport(
        source=str(src.path),
        output=str(output),
        module=cut.module,
        tag=cut.tag,
        nodes=sum(i in selected for i in kept),
        pulled=sum(i not in selected for i in kept),
        inputs=[_spec(v) for v in model.graph.input],
        outputs=[_spec(v) for v in model.graph.output],
        initializers=len(model.graph.initializer) + len(model.graph.sparse_initializer),
        external_data=sorted(external_locations(model)),
        retagged=src.retagged,
        branch=src.body.label if src.body is not None else None,
        model=model,
        chosen=chosen.inside,
        boundary_chosen=chosen.boundary,
    )


def index_json(src: Source, depth: int, reports: list[ExtractReport], failures: dict[str, str]) -> str:
    entries = [
        {
            "module": report.module,
            "branch": report.branch,
            "file": Path(report.output).name,
            "nodes": report.nodes,
            "pulled": report.pulled,
            "chosen": report.chosen,
            "boundary_chosen": report.boundary_chosen,
            "inputs": [asdict(spec) for spec in report.inputs],
            "outputs": [asdict(spec) for spec in report.outputs],
            "external_data": report.external_data,
            "checker": report.checker,
            "verification": asdict(report.verification) if report.verification else None,
        }
        for report in reports
    ]
    data = {"model": src.path.name, "depth": depth, "modules": entries, "failures": failures}
    return json.dumps(data, indent=2) + "\n"
