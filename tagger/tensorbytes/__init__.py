"""Tensor bytes read where they lie, the one layer below both `tagger.evidence` and `tagger.transfer`.

- `stored`: `StoredTensor`, a named tensor whose values are read on demand in chunks, from an
  ONNX initializer (inline or in external data) or a `.safetensors` file;
- `checkpoint`: a checkpoint (a `.safetensors` file, a directory of shards, a torch state dict)
  opened as such tensors.

It knows files and dtypes, nothing of modules or evidence: the evidence sources read a few values
of the file's own weights through it (`tagger.evidence.merged_parameters`), the transfer sources
compare a model's weights with a reference's or a checkpoint's (`tagger.transfer`).
"""
