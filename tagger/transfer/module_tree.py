"""The model's true module tree, given from outside the file (`--modules FILE`).

A module name in an ONNX file is a claim: an exporter placeholder, a converter's own vocabulary
(onnxruntime-genai's `attn/qkv_proj`, `layers.2/final_norm_layernorm`) or a legacy checkpoint key
can name a module the model does not have. Where the real `named_modules()` paths are known, a
claim naming none of them is never written (`tagger.evidence.collect`). They come from the shim's
`hierarchy.modules` map in the file, from the reference model's map (`--reference`), or from a
file written by `shim.write_modules(model, path)` for any `nn.Module`:

- a JSON object `{path: class name}` (the shim's map: `{"": "Wrapper", "m": "BertModel", ...}`),
- a JSON list of paths, or
- plain text, one path per line (`named_modules()` order; the root `""` may be an empty line).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from tagger.errors import InputError, param

if TYPE_CHECKING:
    from tagger.evidence import Context

__all__ = ["read_module_tree", "tree_notes"]

_MAX_BYTES = 256 << 20
"""Far above any real tree (a 100k-module model's map is a few MB); a larger file is no tree."""


def read_module_tree(path: str | os.PathLike) -> dict[str, str | None]:
    """Module path -> class name (None where the file gives none); the root is always present."""
    file = Path(path)
    try:
        if file.stat().st_size > _MAX_BYTES:
            raise InputError(f"modules file {file} is larger than {_MAX_BYTES >> 20} MB: no module list")
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"modules file {file} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"modules file {file} cannot be read: {exc}") from None
    tree = _parse(text, file)
    tree.setdefault("", None)
    return tree


def _parse(text: str, file: Path) -> dict[str, str | None]:
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            value = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise InputError(f"modules file {file} is not valid JSON: {exc}") from None
        return _from_json(value, file)
    return {line.strip(): None for line in text.splitlines() if line.strip()}  # the root is added by the caller


def _from_json(value: object, file: Path) -> dict[str, str | None]:
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str | None) for k, v in value.items()):
        return dict(value)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return dict.fromkeys(value)
    raise InputError(f"modules file {file} must hold a JSON object of path -> class name, or a JSON list of paths")


def tree_notes(context: Context) -> list[str]:
    """What the report says about the module names: checked against which tree, and what was
    dropped; or that nothing checked them."""
    if context.tree_origin is None:
        if len(context.modules) <= 1:
            return []  # nothing named a module: nothing to check
        return [
            "module names are the file's own, not checked against the model's module tree "
            f"(give {param('modules')} FILE, written by shim.write_modules(model, FILE))",
            *_reread_notes(context),
            *_alike_notes(context),
        ]
    claims = context.unknown_claims
    if not claims:
        return [f"module names checked against {context.tree_origin}", *_alike_notes(context)]
    shown = ", ".join(repr(path) for path, _ in claims.most_common(3)) + (", ..." if len(claims) > 3 else "")
    return [
        f"module names checked against {context.tree_origin}: {sum(claims.values())} nodes' evidence named "
        f"{len(claims)} paths that are no module of it ({shown}); those nodes were placed by inference",
        *_alike_notes(context),
    ]


def _alike_notes(context: Context) -> list[str]:
    """Scopes that name several list entries alike: why the names did not say their nodes' entry."""
    if not context.alike:
        return []
    return [
        f"{len(context.alike)} nodes have TorchScript scopes that name several module list entries alike (a list run "
        "by `layer.forward(x)` leaves the entry out of every scope): their entry comes from the parameters "
        "they read or from inference, and the scope places them inside it"
    ]


def _reread_notes(context: Context) -> list[str]:
    """Without the tree, what a list entry's parameter read several times leaves open."""
    facts = context.parameters
    if not facts.rereads or not facts.untrained:
        return []  # trained weights: equal clones would have diverged, so one module is called again
    later = sum(facts.rereads.values()) - len(facts.rereads)
    return [
        f"{len(facts.rereads)} parameters of module list entries are read more than once in an untrained file: "
        "one module called again, or equal clones an exporter merged into the first entry's names (a freshly "
        f"built nn.TransformerEncoder); the {later} reads after the first are tagged with the outermost module "
        f"list, which holds both; the module tree tells which entry ({param('modules')})"
    ]
