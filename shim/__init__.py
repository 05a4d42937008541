"""modelexport's shim: a drop-in `torch.onnx.export` whose output names carry the module scope.

>>> import shim
>>> result = shim.export(model, (x,), "model.onnx")          # same arguments as torch.onnx.export
>>> print(result)  # dynamo export of Net -> model.onnx: 82 nodes (82 renamed), ...

Node names become `/encoder/layer.0/attention/self/view_1`, intermediate tensors get the same
prefix, the model records `hierarchy.modules` (module path -> class) and, unless `retag=False`,
every node carries the tagger's `hierarchy.*` tags. Both torch exporters (`dynamo=True`/`False`).

>>> shim.write_modules(model, "modules.json")   # for a file made by another tool: tagger retag F --modules modules.json
"""

from shim.errors import ExportFailed
from shim.export import ExportResult, export
from shim.modules import write_modules

__all__ = ["ExportFailed", "ExportResult", "export", "write_modules"]
