"""The numerics report: per module, the error it adds and the error it receives, worst first."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tagger.commands.numerics.partition import Piece
from tagger.commands.numerics.stats import ErrorStats
from tagger.text import JsonReport, markdown, terminal

__all__ = ["ModuleNumerics", "NumericsReport"]


@dataclass
class ModuleNumerics:
    """One module's figures; `own` is what it adds, `output` what its outputs carry in the derived
    model (added plus received), `received` the error of its inputs there."""

    piece: Piece
    nodes: int
    own: ErrorStats | None
    output: ErrorStats | None
    received: ErrorStats | None
    note: str | None = None
    node_names: list[str] = field(default_factory=list, repr=False)
    """The float model's node names in the module (for `nodes_to_exclude`)."""

    def sort_key(self) -> tuple[float, float]:
        """Worst first: lowest own SNR, then lowest output SNR; modules without figures last."""
        own = self.own.snr_db if self.own is not None and not math.isnan(self.own.snr_db) else math.inf
        out = self.output.snr_db if self.output is not None and not math.isnan(self.output.snr_db) else math.inf
        return own, out

    def to_dict(self) -> dict:
        figures = {key: None if value is None else value.to_dict()
                   for key, value in (("own", self.own), ("output", self.output), ("received", self.received))}
        return {"module": self.piece.module, "own_nodes_only": self.piece.own, "nodes": self.nodes, **figures, "note": self.note}


@dataclass
class NumericsReport(JsonReport):
    """Every module at `depth` of the float model, worst own error first."""

    float_model: str
    derived_model: str
    depth: int
    feeds: str
    modules: list[ModuleNumerics]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "float_model": self.float_model,
            "derived_model": self.derived_model,
            "depth": self.depth,
            "feeds": self.feeds,
            "modules": [m.to_dict() for m in self.modules],
            "notes": self.notes,
        }

    def worst(self, count: int) -> list[ModuleNumerics]:
        """The `count` modules with the worst own error (modules without one are never picked)."""
        return [m for m in self.modules if m.own is not None and not math.isnan(m.own.snr_db)][:count]

    def nodes_to_exclude(self, count: int) -> list[str]:
        """The float model's node names of the `count` worst modules, for re-quantizing without them."""
        return [name for m in self.worst(count) for name in m.node_names]

    def to_text(self) -> str:
        return "\n".join([self._title(), _LEGEND, *_table(self.modules, terminal, plain=True), *self._notes(terminal)]) + "\n"

    def to_markdown(self) -> str:
        title = f"# Numerics: {markdown(self.derived_model)} against {markdown(self.float_model)}"
        lines = [title, "", self._summary(markdown), "", _LEGEND, ""]
        lines += _table(self.modules, markdown, plain=False)
        return "\n".join(lines + [f"- {markdown(note)}" for note in self.notes]) + "\n"

    def _title(self) -> str:
        return f"numerics: {terminal(self.derived_model)} against {terminal(self.float_model)}; {self._summary(terminal)}"

    def _summary(self, escape) -> str:
        return f"{len(self.modules)} modules at depth {self.depth}, worst own error first; feeds {escape(self.feeds)}"

    def _notes(self, escape) -> list[str]:
        return [f"note: {escape(note)}" for note in self.notes]


_LEGEND = ("own: the derived module run on the float model's inputs (the error it adds); "
           "out: its outputs in the derived model; in: its inputs there (the error it receives). SNR in dB, higher is better.")

_HEADER = ("module", "nodes", "own SNR", "own cosine", "own max abs diff", "out SNR", "in SNR", "note")


def _table(modules: list[ModuleNumerics], escape, plain: bool) -> list[str]:
    rows = [_row(m, escape) for m in modules]
    if not plain:
        return ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER), *("| " + " | ".join(r) + " |" for r in rows)]
    widths = [max(len(str(cell)) for cell in column) for column in zip(_HEADER, *rows, strict=True)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in (_HEADER, *rows)]


def _row(m: ModuleNumerics, escape) -> tuple[str, ...]:
    own = m.own
    return (
        escape(m.piece.label),
        str(m.nodes),
        _snr(own),
        "-" if own is None or math.isnan(own.cosine) else f"{own.cosine:.6f}",
        "-" if own is None or math.isnan(own.max_abs_diff) else f"{own.max_abs_diff:.3g}",
        _snr(m.output),
        _snr(m.received),
        escape(m.note or ""),
    )


def _snr(stats: ErrorStats | None) -> str:
    if stats is None or math.isnan(stats.snr_db):
        return "-" if stats is None or not stats.mismatched else f"{stats.mismatched} differ"
    return "exact" if math.isinf(stats.snr_db) and stats.snr_db > 0 else f"{stats.snr_db:.1f} dB"
