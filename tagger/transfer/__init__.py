"""Tag transfer: evidence from what a tool started from, outside the file being tagged.

- `--reference ORIGINAL.onnx` (`reference`): the model before the tool, tagged with its own
  evidence (as `retag` tags it), matched node to node (`matching`), its tags carried over.
- `--weights CHECKPOINT` (`weights`): the checkpoint the model was exported from; an anonymous
  initializer holding a checkpoint tensor's values gets its name.

Both are evidence sources from outside the file (`tagger.evidence.ExternalSource`), given to
`tagger.evidence.collect` by the caller. This package sits above `tagger.evidence` and
`tagger.tagging` (a reference is tagged as the file is); both compare weights by value
(`content`, `composite`), read lazily through `tagger.tensorbytes`: no model's or checkpoint's
weights are loaded whole.
"""

from __future__ import annotations

import os
from pathlib import Path

from tagger.evidence import ExternalSource

__all__ = ["transfer_sources"]


def transfer_sources(
    reference: str | os.PathLike | None, weights: str | os.PathLike | None, base_dir: Path | None
) -> list[ExternalSource]:
    """The sources for `--reference` and `--weights` (none when neither is given); `base_dir` is
    the tagged model's directory (its external data), None for a model only in memory. A bad
    reference or checkpoint raises `InputError` here, before any work."""
    sources: list[ExternalSource] = []
    if reference is not None:  # each imported only when asked for: a plain retag does not pay their imports
        from tagger.transfer.reference import ReferenceSource

        sources.append(ReferenceSource(_path(reference, "reference"), base_dir))
    if weights is not None:
        from tagger.transfer.weights import WeightsSource

        sources.append(WeightsSource(_path(weights, "weights"), base_dir))
    return sources


def _path(value: object, parameter: str) -> Path:
    from tagger.errors import ParameterError

    if isinstance(value, bool | list | tuple | dict) or value == "":
        raise ParameterError(parameter, f"needs one path, got {value!r}")
    return Path(str(value))
