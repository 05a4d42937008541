"""modelexport's tagger: give every ONNX node the nn.Module it came from.

Works on any ONNX file without torch: evidence (earlier tags, dynamo metadata, scoped names,
tensor names, parameter names, graph structure), context inheritance, and a root fallback that
is reported apart. Tags land in node `metadata_props` as `hierarchy.module`, `hierarchy.tag`
and `hierarchy.source`; nothing else in the model changes. `extract` cuts any module out of a
model as a runnable ONNX model. `audit`, `diff` and `profile` look at many models, two versions
of one, and where its time goes, by module.
"""

from tagger.api import report, retag, tag_proto
from tagger.auditing import AuditReport, audit
from tagger.comparison import DiffReport, diff
from tagger.coverage import Report
from tagger.errors import InputError, OutputError, TaggerError
from tagger.extract import ExtractReport, extract, extract_all
from tagger.profiling import ProfileReport, profile

__all__ = [
    "AuditReport",
    "DiffReport",
    "ExtractReport",
    "InputError",
    "OutputError",
    "ProfileReport",
    "Report",
    "TaggerError",
    "audit",
    "diff",
    "extract",
    "extract_all",
    "profile",
    "report",
    "retag",
    "tag_proto",
]
