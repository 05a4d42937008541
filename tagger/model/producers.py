"""What the tool that saved a file says about its node order.

onnxruntime's quantization tools (`quantize_static`, `quantize_dynamic`) stamp the file they save
(`producer_name` `onnx.quantize`) and save it through `ONNXModel.save_model_to_file`, which first
sorts the graph with Kahn's algorithm breadth-first (`ONNXModel.topological_sort`): every node
that depends only on constants, initializers and graph inputs comes first, then wave by wave. An
exporter writes nodes in execution order, each module's ops in one stretch (fact A,
`tagger.infer.flows`); a breadth-first sort puts a side chain (a mask built from the model's
inputs) beside whatever main-path op has its depth, inside another module's stretch, so the
order says nothing about where a node ran.
"""

from __future__ import annotations

import onnx

__all__ = ["sorted_breadth_first"]

_BREADTH_FIRST = frozenset({"onnx.quantize"})
"""`producer_name` of the tools that sort breadth-first before saving (onnxruntime.quantization's
`__producer__`)."""


def sorted_breadth_first(model: onnx.ModelProto) -> bool:
    """Whether the file was last saved by a tool that sorts its graph breadth-first."""
    return model.producer_name in _BREADTH_FIRST
