"""modelexport's tagger: give every ONNX node the nn.Module it came from.

Works on any ONNX file without torch: evidence (earlier tags, dynamo metadata, scoped names,
tensor names, parameter names, graph structure), context inheritance, and a root fallback that
is reported apart. Tags land in node `metadata_props` as `hierarchy.module`, `hierarchy.tag`
and `hierarchy.source`; nothing else in the model changes. `extract` cuts any module out of a
model as a runnable ONNX model.
"""

from tagger.api import report, retag, tag_proto
from tagger.coverage import Report
from tagger.errors import InputError, OutputError, TaggerError
from tagger.extraction import ExtractReport, extract, extract_all

__all__ = [
    "ExtractReport",
    "InputError",
    "OutputError",
    "Report",
    "TaggerError",
    "extract",
    "extract_all",
    "report",
    "retag",
    "tag_proto",
]
