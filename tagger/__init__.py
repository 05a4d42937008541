"""modelexport's tagger: give every ONNX node the nn.Module it came from.

Works on any ONNX file without torch: evidence (earlier tags, dynamo metadata, scoped names,
tensor names, parameter names, graph structure), context inheritance, and a root fallback that
is reported apart. Tags land in node `metadata_props` as `hierarchy.module`, `hierarchy.tag`
and `hierarchy.source`; nothing else in the model changes. `extract` cuts any module out of a
model as a runnable ONNX model. `audit`, `diff` and `profile` look at many models, two versions
of one, and where its time goes, by module.
"""

from tagger.api import report, retag, tag_proto
from tagger.auditing import AuditReport, AuditRow, audit
from tagger.coverage_report import ConflictRecord, CoverageReport, InferredRecord, NodeRef, Report
from tagger.diffing import DiffReport, ModuleDiff, NodeChange, diff
from tagger.errors import (
    InputError,
    MissingDependency,
    ModelsFailed,
    OutputError,
    TaggerError,
    ThresholdMissed,
    VerificationFailed,
)
from tagger.extract import ExtractAllReport, ExtractReport, TensorSpec, extract, extract_all, modules_at_depth
from tagger.extract.verify import Verification
from tagger.profiling import ModuleTime, NodeTime, ProfileReport, profile

__all__ = [
    "AuditReport",
    "AuditRow",
    "ConflictRecord",
    "CoverageReport",
    "DiffReport",
    "ExtractAllReport",
    "ExtractReport",
    "InferredRecord",
    "InputError",
    "MissingDependency",
    "ModelsFailed",
    "ModuleDiff",
    "ModuleTime",
    "NodeChange",
    "NodeRef",
    "NodeTime",
    "OutputError",
    "ProfileReport",
    "Report",
    "TaggerError",
    "TensorSpec",
    "ThresholdMissed",
    "Verification",
    "VerificationFailed",
    "audit",
    "diff",
    "extract",
    "extract_all",
    "modules_at_depth",
    "profile",
    "report",
    "retag",
    "tag_proto",
]
