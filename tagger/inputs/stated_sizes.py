"""Input sizes stated beside a model, in the files the tools that made it write next to it.

Some sizes live in no part of the graph: an optimum export's image size is in `config.json` /
`preprocessor_config.json` (a Swin's window Reshape accepts one grid only, and shape inference
does not see it), an onnxruntime-genai output's head size, KV heads and context length in
`genai_config.json` (its `past_key_values.*` dims are symbols such as `kv_cache_dim`). The rules,
each applied only to a dim that is a symbol in the file (a static dim is what the file says):

1. **Images** (`pixel_values`, rank 4, NCHW): channels from `config.json` `num_channels`; height
   and width from `preprocessor_config.json` (`crop_size` when `do_center_crop`, else `size`:
   an int, `{height, width}` or `{shortest_edge}`), else `config.json` `image_size` (an int or
   `[height, width]`).
2. **onnxruntime-genai** (`genai_config.json`, `model.decoder`): the inputs named by
   `past_key_names` / `past_value_names` (`past_key_values.%d.key`) are `[batch, kv heads, past
   length, head size]`: axis 1 `num_key_value_heads`, axis 3 `head_size`. `context_length`
   bounds the sequence axes (`input_ids` and `attention_mask` axis 1, the past's axis 2).

A file that is missing, unreadable or of another shape states nothing (the model alone decides).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["StatedSizes", "stated_sizes"]

_Keys = Mapping[str, list[int | str]]


@dataclass
class StatedSizes:
    """Symbol -> (size, reason) stated beside the model; symbol -> (largest size, reason)."""

    sizes: dict[str, tuple[int, str]] = field(default_factory=dict)
    limits: dict[str, tuple[int, str]] = field(default_factory=dict)

    def state(self, key: int | str, size: object, reason: str) -> None:
        if isinstance(key, str) and _positive(size) and key not in self.sizes:
            self.sizes[key] = (int(size), reason)  # type: ignore[arg-type]

    def limit(self, key: int | str, size: object, reason: str) -> None:
        if isinstance(key, str) and _positive(size):
            known = self.limits.get(key)
            if known is None or int(size) < known[0]:  # type: ignore[arg-type]
                self.limits[key] = (int(size), reason)  # type: ignore[arg-type]


def stated_sizes(base_dir: Path | None, keys: _Keys) -> StatedSizes:
    """What the config files in `base_dir` state about the dims `keys` (input -> per-axis key)."""
    stated = StatedSizes()
    if base_dir is None:
        return stated
    _image_sizes(base_dir, keys, stated)
    _genai_sizes(base_dir, keys, stated)
    return stated


def _image_sizes(base_dir: Path, keys: _Keys, stated: StatedSizes) -> None:
    pixels = keys.get("pixel_values")
    if pixels is None or len(pixels) != 4:
        return
    config = _read(base_dir / "config.json")
    stated.state(pixels[1], config.get("num_channels"), "config.json num_channels")
    height, width, reason = _preprocessor_size(_read(base_dir / "preprocessor_config.json"))
    if height is None:
        image = config.get("image_size")
        height, width = (image[0], image[-1]) if isinstance(image, list) and image else (image, image)
        reason = "config.json image_size"
    stated.state(pixels[2], height, reason)
    stated.state(pixels[3], width, reason)


def _preprocessor_size(config: dict) -> tuple[object, object, str]:
    for name in ("crop_size", "size") if config.get("do_center_crop") else ("size",):
        size = config.get(name)
        if isinstance(size, dict):
            height = size.get("height", size.get("shortest_edge"))
            width = size.get("width", size.get("shortest_edge"))
        else:
            height = width = size
        if _positive(height) and _positive(width):
            return height, width, f"preprocessor_config.json {name}"
    return None, None, ""


def _genai_sizes(base_dir: Path, keys: _Keys, stated: StatedSizes) -> None:
    model = _read(base_dir / "genai_config.json").get("model")
    decoder = model.get("decoder") if isinstance(model, dict) else None
    if not isinstance(decoder, dict):
        return
    names = decoder.get("inputs") if isinstance(decoder.get("inputs"), dict) else {}
    patterns = [_pattern(names.get(k)) for k in ("past_key_names", "past_value_names")]
    context = model.get("context_length")
    for name, dims in keys.items():
        if len(dims) == 4 and any(p is not None and p.fullmatch(name) for p in patterns):
            stated.state(dims[1], decoder.get("num_key_value_heads"), "genai_config.json num_key_value_heads")
            stated.state(dims[3], decoder.get("head_size"), "genai_config.json head_size")
            stated.limit(dims[2], context, "genai_config.json context_length")
    for name in (names.get("input_ids", "input_ids"), names.get("attention_mask", "attention_mask")):
        dims = keys.get(name) if isinstance(name, str) else None
        if dims is not None and len(dims) == 2:
            stated.limit(dims[1], context, "genai_config.json context_length")


def _pattern(template: object) -> re.Pattern | None:
    """`past_key_values.%d.key` as a pattern matching every layer's name."""
    if not isinstance(template, str) or "%d" not in template:
        return None
    return re.compile(r"\d+".join(re.escape(part) for part in template.split("%d")))


def _read(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _positive(size: object) -> bool:
    return isinstance(size, int) and not isinstance(size, bool) and size > 0
