"""Tag transfer: evidence from what a tool started from, outside the file being tagged.

- `reference` (`--reference ORIGINAL.onnx`, `reference.ReferenceSource`): the model before the
  tool, tagged with its own evidence by the caller (as `retag` tags it), matched node to node
  (`matching`), its tags carried over.
- `weights` (`--weights CHECKPOINT`, `weights.WeightsSource`): the checkpoint the model was
  exported from; an anonymous initializer holding a checkpoint tensor's values gets its name.
- `modules` (`--modules FILE`, `module_tree`): the model's true module tree, which checks every
  module name the file claims.

The first two are evidence sources from outside the file (`tagger.evidence.ExternalSource`), built
by the API (`tagger.api.transfer_sources`) and given to `tagger.evidence.collect`. This package
sits above `tagger.evidence` and below the pipeline (a reference is tagged by the caller, who hands
the result in); both compare weights by value (`content`, `composite`), read lazily through
`tagger.tensorbytes`: no model's or checkpoint's weights are loaded whole.
"""
