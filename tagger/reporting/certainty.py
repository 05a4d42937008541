"""How sure a node's tag is, in the four kinds every output people read shows.

1. `direct`: evidence named the module (a source of `keys.DIRECT_SOURCES`: an earlier direct
   tag, metadata, a scoped name or tensor, a parameter name, `--reference`, a function's call
   sites or a body's owner);
2. `certain`: inherited, where the facts of `tagger.infer` put it (rules 1-3 and 6: the bound);
3. `chosen`: inherited, a choice deeper than the bound (rules 4a, 4 and 5: `Bound.certain` is
   false) - plausible, not proven;
4. `fallback`: the root, because nothing at all was known.

The *certain share* of a set of nodes is `(direct + certain) / nodes`: the nodes whose module
is known, not guessed (a root fallback is true but says nothing, so it does not count).
A module *rests mostly on choices* when more than half (`MOSTLY_CHOSEN`) of its own nodes (those
tagged with exactly that module, not its descendants') are chosen; `tree`, `report` (text,
Markdown, HTML) and `profile` mark it with `MARK`. A module without own nodes is never marked:
its children are.

A tagged file does not say which of its `inherited` tags were choices: `hierarchy.source` is
`inherited` for both. `report` and `audit` decide every inherited tag again anyway (an earlier
inherited tag is no evidence, `tagger.evidence.tags`), which gives the retag's own answer.
The commands that keep the file's tags (`diff`, `profile`, `extract`, `nodes`) decide them again too,
once, when the file holds an inherited tag (`file_kinds`): a kept inherited tag is certain when
the new decision puts the node in the same module with certainty, and chosen otherwise (a file
tagged by another version of the tagger, or edited: nothing makes its tag certain).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

from tagger.evidence import ExternalSource
from tagger.pipeline.tagging import TaggingResult, tag_model

__all__ = ["KINDS", "LEGEND", "MARK", "MOSTLY_CHOSEN", "Certainty", "by_module", "file_kinds", "kind_of", "result_kinds"]

KINDS = ("direct", "certain", "chosen", "fallback")
MOSTLY_CHOSEN = 0.5
"""A module whose own nodes are chosen for more than this share is marked."""
MARK = "[mostly chosen]"
"""The mark of a module that rests mostly on choices, in every text output."""
LEGEND = (
    "own nodes by kind: direct (evidence), certain (inferred from facts), chosen (inferred by choice), "
    f"fallback (root, nothing known); {MARK}: more than half of a module's own nodes are chosen"
)
_NOT_DIRECT = {"inherited": "certain", "fallback": "fallback"}


def kind_of(source: str, certain: bool) -> str:
    """The kind of a node tagged from `source` (`certain`: its bound's flag, read for `inherited` only)."""
    kind = _NOT_DIRECT.get(source, "direct")
    return "chosen" if kind == "certain" and not certain else kind


@dataclass
class Certainty:
    """Nodes counted by kind; the four add up to `nodes`."""

    direct: int = 0
    certain: int = 0
    chosen: int = 0
    fallback: int = 0

    @property
    def nodes(self) -> int:
        return self.direct + self.certain + self.chosen + self.fallback

    @property
    def known(self) -> int:
        """Nodes whose module is known, not chosen: direct and certainly inferred."""
        return self.direct + self.certain

    @property
    def share(self) -> float:
        """The certain share, 0 to 1 (1 for no nodes: nothing rests on a choice)."""
        return self.known / self.nodes if self.nodes else 1.0

    @property
    def mostly_chosen(self) -> bool:
        return self.chosen > MOSTLY_CHOSEN * self.nodes

    @property
    def mark(self) -> str:
        """`MARK` with a leading space when mostly chosen, else empty (to append to a label)."""
        return f" {MARK}" if self.mostly_chosen else ""

    def add(self, kind: str, count: int = 1) -> None:
        setattr(self, kind, getattr(self, kind) + count)

    def counts(self) -> str:
        """`3 direct, 2 chosen`: the kinds present, for a line of text (`none` for no nodes)."""
        return ", ".join(f"{getattr(self, kind)} {kind}" for kind in KINDS if getattr(self, kind)) or "none"


def by_module(modules: Iterable[str], kinds: Iterable[str]) -> dict[str, Certainty]:
    """Each module's own nodes by kind, from parallel sequences of node modules and kinds."""
    counts: dict[str, Certainty] = {}
    for module, kind in zip(modules, kinds, strict=True):
        found = counts.get(module)
        if found is None:
            found = counts[module] = Certainty()
        found.add(kind)
    return counts


def result_kinds(result: TaggingResult) -> list[str]:
    """Every node's kind in index order, from a tagging run. An inherited node without a recorded
    bound counts as chosen: nothing says it is certain."""
    bounds = result.bounds
    kinds = []
    for node_id, assignment in enumerate(result.assignments):
        source = assignment.source
        bound = bounds.get(node_id) if source == "inherited" else None
        kinds.append(kind_of(source, bound is not None and bound.certain))
    return kinds


def file_kinds(
    model: onnx.ModelProto,
    found: Sequence[tuple[str, str, str]],
    sources: Sequence[ExternalSource] = (),
    base_dir: Path | None = None,
    tree: dict[str, str | None] | None = None,
) -> list[str]:
    """Every node's kind for the tags a file holds (`found`: `(module, tag, source)` per node in
    `tagger.model.index` order). Inherited tags are decided again once (module docstring); a file
    without any is not tagged at all."""
    if not any(source == "inherited" for _, _, source in found):
        return [kind_of(source, True) for _, _, source in found]
    again = tag_model(model, extra=sources, base_dir=base_dir, tree=tree)
    decided = result_kinds(again)
    kinds = []
    for (module, _, source), assignment, kind in zip(found, again.assignments, decided, strict=True):
        if source == "inherited":
            kind = "certain" if assignment.module == module and kind in ("direct", "certain") else "chosen"
        else:
            kind = kind_of(source, True)
        kinds.append(kind)
    return kinds
