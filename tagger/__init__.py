"""modelexport's tagger: give every ONNX node the nn.Module it came from.

Works on any ONNX file without torch: evidence (earlier tags, dynamo metadata, scoped names,
tensor names, parameter names, graph structure), context inheritance, and a root fallback that
is reported apart. Tags land in node `metadata_props` as `hierarchy.module`, `hierarchy.tag`
and `hierarchy.source`; nothing else in the model changes (`tag_proto` tags a model in memory,
`write_model` writes it back over its file atomically; `graphs_within`, `subgraphs` and
`dataflow` walk a model's graphs and their dataflow, as the shim does). `extract` cuts any module out of a
model as a runnable ONNX model; `module_nodes` lists a module's node names for onnxruntime's
quantizers. `audit`, `diff` and `profile` look at many models, two versions of one, and where
its time goes, by module; `numerics` at which module loses the accuracy after quantization or fp16.
"""

import importlib

from tagger.errors import (
    InputError,
    MissingDependency,
    ModelsFailed,
    OutputError,
    ParameterError,
    TaggerError,
    ThresholdMissed,
    VerificationFailed,
)

_HOMES = {
    "tagger.api": ("report", "retag", "tag_proto"),
    "tagger.commands.auditing": ("AuditReport", "AuditRow", "audit"),
    "tagger.reporting.certainty": ("Certainty",),
    "tagger.reporting.coverage_report": ("ConflictRecord", "CoverageReport", "InferredRecord", "NodeRef", "Report"),
    "tagger.commands.diffing": ("DiffReport", "ModuleDiff", "NodeChange", "diff"),
    "tagger.commands.extract": ("ExtractAllReport", "ExtractReport", "TensorSpec", "extract", "extract_all", "modules_at_depth"),
    "tagger.commands.extract.verify": ("Verification",),
    "tagger.model.modelio": ("write_model",),
    "tagger.writing.module_map": ("write_module_map",),
    "tagger.model.index": ("dataflow", "graphs_within", "subgraphs"),
    "tagger.commands.nodelist": ("ListedNode", "NodeList", "module_nodes"),
    "tagger.commands.numerics": ("ModuleNumerics", "NumericsReport", "numerics"),
    "tagger.commands.numerics.partition": ("Piece",),
    "tagger.commands.numerics.stats": ("ErrorStats",),
    "tagger.commands.profiling": ("ModuleGain", "ModuleTime", "NodeTime", "OptimizationComparison", "ProfileReport", "profile"),
}
"""Where each public name lives. Imported on first use (PEP 562): `tagger retag` loads neither
extraction, auditing (multiprocessing) nor profiling."""

_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "AuditReport",
    "AuditRow",
    "Certainty",
    "ConflictRecord",
    "CoverageReport",
    "DiffReport",
    "ErrorStats",
    "ExtractAllReport",
    "ExtractReport",
    "InferredRecord",
    "InputError",
    "ListedNode",
    "MissingDependency",
    "ModelsFailed",
    "ModuleDiff",
    "ModuleGain",
    "ModuleNumerics",
    "ModuleTime",
    "NodeChange",
    "NodeList",
    "NodeRef",
    "NodeTime",
    "NumericsReport",
    "OptimizationComparison",
    "OutputError",
    "ParameterError",
    "Piece",
    "ProfileReport",
    "Report",
    "TaggerError",
    "TensorSpec",
    "ThresholdMissed",
    "Verification",
    "VerificationFailed",
    "audit",
    "dataflow",
    "diff",
    "extract",
    "extract_all",
    "graphs_within",
    "module_nodes",
    "modules_at_depth",
    "numerics",
    "profile",
    "report",
    "retag",
    "subgraphs",
    "tag_proto",
    "write_model",
    "write_module_map",
]


def __getattr__(name: str) -> object:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'tagger' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

