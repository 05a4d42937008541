"""Open a checkpoint as lazily read tensors: a `.safetensors` file, a directory of shards with
its `*.safetensors.index.json`, or a torch `.bin`/`.pt`/`.pth` state dict (only with torch).

safetensors are read with numpy: the header for names, dtypes, shapes and offsets, then each
tensor in chunks at its offset when it is compared, so a multi-GB checkpoint is never read into
memory. A torch file is loaded with `mmap=True` where torch supports it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tagger.errors import InputError
from tagger.tensorbytes.stored import StoredTensor, safetensors_tensors

__all__ = ["checkpoint_tensors"]

_TORCH_SUFFIXES = (".bin", ".pt", ".pth")


def checkpoint_tensors(path: str | Path) -> list[StoredTensor]:
    """Every float tensor of the checkpoint at `path`; one `InputError` line for anything else."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such checkpoint: {path}")
    files = _files_of(path) if path.is_dir() else [path]
    tensors: list[StoredTensor] = []
    for file in files:
        if file.suffix == ".safetensors":
            tensors.extend(safetensors_tensors(file))
        elif file.suffix in _TORCH_SUFFIXES:
            tensors.extend(_torch_tensors(file))
        else:
            raise InputError(f"not a checkpoint (expected .safetensors, .bin, .pt or a directory of them): {file}")
    return tensors


def _files_of(directory: Path) -> list[Path]:
    """A directory's shards as its index lists them, else its single weights file(s)."""
    for pattern in ("*.safetensors.index.json", "*.bin.index.json"):
        for index in sorted(directory.glob(pattern)):
            return _indexed_shards(index)
    for pattern in ("*.safetensors", "*.bin", "*.pt", "*.pth"):
        found = sorted(directory.glob(pattern))
        if found:
            return found
    raise InputError(f"no checkpoint in directory (no .safetensors, .bin or .pt file): {directory}")


def _indexed_shards(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise InputError(f"cannot read checkpoint index {index}: {exc}") from None
    if not isinstance(weight_map, dict):
        raise InputError(f"checkpoint index has no weight_map: {index}")
    base = index.parent.resolve()
    shards = []
    for name in sorted({str(v) for v in weight_map.values()}):
        shard = (base / name).resolve()
        if not shard.is_relative_to(base):
            raise InputError(f"checkpoint index names a shard outside its directory ({name!r}): {index}")
        if not shard.is_file():
            raise InputError(f"checkpoint shard {name!r} is missing: {index}")
        shards.append(shard)
    return shards


def _torch_tensors(file: Path) -> Iterator[StoredTensor]:
    try:
        import torch
    except ImportError:
        raise InputError(f"reading a torch checkpoint needs torch installed (or convert it to .safetensors): {file}") from None
    try:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input, in one line
        raise InputError(f"cannot read torch checkpoint {file}: {type(exc).__name__}: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"torch checkpoint is no state dict: {file}")
    for name, value in state.items():
        if isinstance(name, str) and isinstance(value, torch.Tensor) and value.is_floating_point():
            yield _from_torch(name, value)


def _from_torch(name: str, value) -> StoredTensor:
    import torch

    dtype_name = str(value.dtype).removeprefix("torch.")
    flat = value.detach().contiguous().reshape(-1)
    if value.dtype == torch.bfloat16:
        array = flat.view(torch.int16).numpy().view(np.uint16)
    else:
        array = flat.numpy()
    return StoredTensor(name, dtype_name, tuple(value.shape), lambda start, count: array[start : start + count])
