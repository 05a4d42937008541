"""The model as the tagger reads it: loading and writing the file (`modelio`, `serialize`), the
positional node index (`index`), the tag keys (`keys`), module paths (`paths`) and onnxruntime's
fused contrib ops (`contrib`). Imports nothing of `tagger` outside it but `errors`.
"""
