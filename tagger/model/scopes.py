"""Reading exporter scopes as module paths: TorchScript's quirks undone against the known modules.

`ScopeReading` is the half of `paths.ModuleSet` that reads scopes (`/m/encoder/layer.0/...`):
it needs the known set (`_known`) and keeps what reading learns (the scopes seen, the shared
modules, a memo per scope). `ModuleSet` keeps the known set itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = ["MAX_DEPTH", "ScopeReading"]

_CALL_SUFFIX = re.compile(r"_\d+$")

MAX_DEPTH = 128
"""Deeper than any module hierarchy anyone builds (real models nest ~10-20 levels). Names with
more scope levels are not evidence, and a deeper path from other evidence keeps only its first
`MAX_DEPTH` levels of ancestors: hostile names then cost linear time, not quadratic, and no
recursion runs deeper than this."""


def _unqualified(path: str) -> str:
    """What TorchScript names a module's scope: its last non-numeric component and any indices
    after it (`model.decoder.layers.0` -> `layers.0`)."""
    last = path.rpartition(".")[2]
    if not last.isdigit():
        return last  # most paths end in an attribute: no list to split
    parts = path.split(".")
    end = len(parts) - 1
    while end > 0 and parts[end].isdigit():
        end -= 1
    return ".".join(parts[end:])


def _another_entry(segments: Sequence[str], module: str) -> bool:
    """Whether a segment of `segments` names another entry of a list that holds `module` (`layers.1`
    beside the path's `layers.0`)."""
    entries = {}
    parts = module.split(".")
    for k in range(1, len(parts)):
        if parts[k].isdigit() and not parts[k - 1].isdigit():
            entries[parts[k - 1]] = parts[k]
    for segment in segments:
        base, _, index = segment.partition(".")
        if index.isdigit() and entries.get(base, index) != index:
            return True
    return False


class ScopeReading:
    """Scope segments read as module paths against the known set `_known` (set by the subclass)."""

    _known: set[str]

    def __init__(self) -> None:
        self._observed: set[str] = set()
        self._memo: dict[tuple[tuple[str, ...], bool], tuple[str, ...] | None] = {}
        self._by_unqualified: dict[str, list[str]] | None = None
        self._shared: dict[tuple[str, ...], tuple[str, ...]] = {}

    def observe(self, segments: Sequence[str]) -> None:
        """Record a literal scope seen in a name: a `_N` reading is preferred when its base was seen."""
        self._memo.clear()
        path = ".".join(segments)
        for segment in reversed(segments):  # deepest first: a seen scope's prefixes are seen too
            if path in self._observed:
                return
            self._observed.add(path)
            path = path[: len(path) - len(segment) - 1]

    def read_shared(self, segments: Sequence[str], owners: Iterable[str]) -> None:
        """Read the TorchScript scope `segments`, whose nodes read parameters of the known modules
        `owners`, as the one owner whose unqualified name is its last segment, when the scope reads
        as no known module otherwise.

        TorchScript names a module object by one path, its first `named_modules()` path, so a
        module reached by two (a tied embedding: T5's `shared` is also `decoder.embed_tokens`)
        appears under every caller with that path's unqualified name (`/decoder/shared/Gather`).
        The scope's callers' scopes are read as the owner's ancestors too, while their segments are
        those ancestors' unqualified names and read as no known module.

        Not when a caller's segment is another entry of a list the owner lies in (`/m/layers.1/self_attn`
        reading `m.layers.0.self_attn.*`): TorchScript names an entry by its own index, so the scope
        is another object, a clone whose equal parameters (a fresh model's `copy.deepcopy`d layers)
        the exporter stored once under the first one's names.
        """
        resolved = self.resolve(segments) if segments else None
        if resolved is None or resolved in self._known:
            return  # it reads as a known module already (the common case), or as several alike
        named = [owner for owner in owners if owner in self._known and _unqualified(owner) == segments[-1]]
        if len(named) != 1 or _another_entry(segments, named[0]):
            return
        segments, module = tuple(segments), named[0]
        while segments and module and (resolved := self.resolve(segments)) is not None and resolved not in self._known:
            name = _unqualified(module)
            if segments[-1] != name:
                return
            self._shared[segments] = tuple(module.split("."))
            self._memo.clear()
            segments, module = segments[:-1], module[: len(module) - len(name)].rstrip(".")

    def resolve(self, segments: Sequence[str], torchscript: bool = True) -> str | None:
        """Turn exporter scope segments into a module path; None when the scope names several
        known modules alike (`_known_below`).

        Undoes three TorchScript quirks: a segment is the *unqualified* name of a called module
        (its last non-numeric attribute plus any index: `layers.0`), so a module that its caller
        reaches through an uncalled container (`self.model.decoder(...)`: `/decoder/...`) is the
        known module below the caller that ends with the segment, and only when none is known a
        new child of the caller (`lm_head`, whose weight no parameter name shows); a Sequential's
        child repeats its parent's segment (`layer/layer.0` is `layer.0`); and a module called
        again gets `_N` (`attention_1`).
        Membership in the known set decides between readings, so a real attribute named
        `fc_1` stays `fc_1`; for modules without parameters, a base scope seen elsewhere in the
        model's names (`activation` beside `activation_1`) marks the suffix as a second call —
        only for TorchScript-style names (`/a/b/Op`): in Keras-style `model/dense_1/Relu`,
        `dense_1` is a layer of its own.
        """
        path = ".".join(segments)
        if path in self._known and (not torchscript or not self._shared) and path.count(".") < MAX_DEPTH:
            # every prefix of such a path is known (`add` and `adopt` record ancestors), so each segment
            # reads as itself (`_extend`'s first test) unless a TorchScript prefix is a shared module's:
            # the readings below give the literal path; most scopes of a large model are read here
            return path
        parts = self._resolve_prefix(tuple(segments), torchscript)
        return None if parts is None else ".".join(parts)

    def _resolve_prefix(self, segments: tuple[str, ...], torchscript: bool) -> tuple[str, ...] | None:
        """Resolve scope by scope, memoised: sibling names share every prefix. None from the first
        segment that names several known modules alike on (`_known_below`)."""
        key = (segments, torchscript)
        if key in self._memo:
            return self._memo[key]
        parts = self._shared.get(segments) if torchscript else None
        if parts is None:
            if not segments:
                parts = ()
            else:
                head = self._resolve_prefix(segments[:-1], torchscript)
                previous = segments[-2] if len(segments) > 1 else ""
                extended = None if head is None else self._extend(list(head), previous, segments, torchscript)
                parts = None if extended is None else tuple(extended)
        self._memo[key] = parts
        return parts

    def _extend(self, parts: list[str], previous: str, segments: tuple[str, ...], torchscript: bool) -> list[str] | None:
        """`parts` (the resolved caller) extended by the last of the literal `segments`; None when
        the segment names several known modules below the caller alike (`_known_below`)."""
        readings = self._extensions(parts, previous, segments, torchscript)
        return readings[0] if len(readings) == 1 else None

    def alike_readings(self, segments: Sequence[str], limit: int = 64) -> tuple[str, ...]:
        """The known module paths a TorchScript scope may name when a segment of it names several
        known modules alike (`_known_below`): one per such module, the rest of the scope read
        below each (a module the file does not name may be a new child, as `resolve` reads one:
        TorchScript scopes only modules that ran). Fewer than two: the scope is no such scope."""
        partial: list[list[str]] = [[]]
        for end in range(len(segments)):
            literal, previous = tuple(segments[: end + 1]), segments[end - 1] if end else ""
            partial = [reading for parts in partial for reading in self._extensions(parts, previous, literal, True)][:limit]
        return tuple(dict.fromkeys(".".join(parts) for parts in partial))

    def _extensions(self, parts: list[str], previous: str, segments: tuple[str, ...], torchscript: bool) -> list[list[str]]:
        """The readings of `parts` extended by the last of the literal `segments`: one, or the
        several known modules the segment names alike (`_known_below`)."""
        segment = segments[-1]
        plain = segment.split(".")
        if ".".join(parts + plain) in self._known:  # the common case, before any other reading is built
            return [parts + plain]
        stripped = [_CALL_SUFFIX.sub("", p) or p for p in plain]
        base = parts
        if previous and segment.startswith(previous + "."):
            base = parts[: len(parts) - len(previous.split("."))]
        # every reading extends `base`; a known path's ancestors of up to MAX_DEPTH parts are known
        # (`add`): below an unknown `base` nothing is known, so only the observed reading is left
        maybe_known = not base or len(base) > MAX_DEPTH or ".".join(base) in self._known
        candidates = [parts + plain, base + plain, parts + stripped, base + stripped] if maybe_known else []
        for candidate in candidates:
            if ".".join(candidate) in self._known:
                return [candidate]
        if torchscript and maybe_known:
            below = self._known_below(".".join(parts), segment, stripped)
            if below:
                return [path.split(".") for path in below]
        if torchscript and stripped != plain and self._second_call(base + stripped, segments, stripped):
            return [base + stripped]
        return [base + plain]

    def _second_call(self, reading: list[str], segments: tuple[str, ...], stripped: list[str]) -> bool:
        """Whether a `_N` scope is a second call of the base scope: the base was seen, read as it
        resolves or literally under the same literal caller (a parameter-free child of a
        Sequential called twice: `/blocks.0/blocks.0.2_1` beside `/blocks.0/blocks.0.2`)."""
        return ".".join(reading) in self._observed or ".".join((*segments[:-1], *stripped)) in self._observed

    def _known_below(self, caller: str, segment: str, stripped: list[str]) -> list[str]:
        """The shallowest known strict descendants of `caller` whose unqualified name is `segment`
        (else its `_N`-stripped form); empty when there is none.

        More than one means the name does not say which: TorchScript scopes a module by its
        unqualified name only, so entries of a list their caller runs without a scope of their own
        (`for layer in self.layers: layer.forward(x)`: SqueezeBERT's `/encoder/attention_1`) or
        equal names on two branches reached through uncalled containers read alike, and an `_N`
        suffix counts calls of that name, not entries. The scope is then no evidence (`resolve`
        gives None): the nodes' parameters and inference place them."""
        if self._by_unqualified is None:
            self._by_unqualified = {}
            for path in self._known:
                if path:
                    self._by_unqualified.setdefault(_unqualified(path), []).append(path)
        prefix = caller + "." if caller else ""
        for name in (segment, ".".join(stripped)):
            found = [
                p for p in self._by_unqualified.get(name, ()) if p.startswith(prefix) and not self._skips_called(prefix, p, name)
            ]
            if found:
                depth = min(p.count(".") for p in found)
                return sorted(p for p in found if p.count(".") == depth)
        return []

    def _skips_called(self, prefix: str, path: str, name: str) -> bool:
        """Whether reaching `path` from the caller skips a module the file's names show was called:
        the exporter scopes every module it calls, so a skipped module is one reached through an
        uncalled container (`self.model.decoder`), never one with a scope of its own (`attention`
        in `/layer.0/attention/self/...` is no container `/layer.0/output/...` reaches through)."""
        skipped = path[len(prefix) : len(path) - len(name) - 1]
        if not skipped:
            return False
        parts = skipped.split(".")
        return any(prefix + ".".join(parts[: end + 1]) in self._observed for end in range(len(parts)))
