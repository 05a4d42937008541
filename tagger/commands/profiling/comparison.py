"""`profile --compare-unoptimized`: per module, the time with graph optimizations off and at the level asked.

1. The model runs twice on the same inputs, in two sessions: at the level asked (the report) and
   at `off` (`ORT_DISABLE_ALL`, every kernel one node of the file), with the same runs and warm-up.
2. Per module, `total_us` of each run and the nodes each ran (the graph onnxruntime executed at
   that level), for every module either run has; depth-first, children in natural order.
3. `change` is the optimized time over the unoptimized one, less 1: below 0 where the optimizer
   helped, 0 or above where it did not (fusion moved no time, or moved it into another module: a
   fused kernel counts for the module transfer gives it, which can be a parent of the modules
   whose nodes it replaced). Both are means of separate runs: differences of a few percent are
   within the noise of two sessions on a shared CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tagger.text import markdown, natural, terminal

if TYPE_CHECKING:
    from tagger.commands.profiling.report import ModuleTime

__all__ = ["OptimizationComparison", "ModuleGain", "compare"]


@dataclass(frozen=True)
class ModuleGain:
    """One module's time per run without and with graph optimizations."""

    module: str
    unoptimized_us: float
    optimized_us: float
    unoptimized_nodes: int
    optimized_nodes: int

    @property
    def change(self) -> float | None:
        """`optimized / unoptimized - 1` (None when the unoptimized run spent no time there)."""
        return self.optimized_us / self.unoptimized_us - 1 if self.unoptimized_us else None


@dataclass
class OptimizationComparison:
    """The two runs' totals and their modules side by side."""

    level: str
    unoptimized_kernel_us: float
    optimized_kernel_us: float
    unoptimized_run_us: float
    optimized_run_us: float
    modules: list[ModuleGain] = field(default_factory=list)

    def table(self, depth: int | None = None) -> str:
        shown = [m for m in self.modules if depth is None or _depth(m.module) <= depth]
        labels = [("  " * _depth(m.module)) + terminal(_label(m.module)) for m in shown]
        width = max([len(label) for label in labels] + [len("(kernels, all modules)")])
        lines = [
            f"graph optimizations off vs {self.level}:",
            f"{'module':<{width}}  {'off µs':>10}  {'optimized µs':>12}  {'change':>7}  {'nodes':>9}",
        ]
        for label, m in zip(labels, shown, strict=True):
            nodes = f"{m.unoptimized_nodes}→{m.optimized_nodes}"
            lines.append(
                f"{label:<{width}}  {m.unoptimized_us:>10.1f}  {m.optimized_us:>12.1f}  {_change(m.change):>7}  {nodes:>9}"
            )
        for label, off, on in (
            ("(kernels, all modules)", self.unoptimized_kernel_us, self.optimized_kernel_us),
            ("(run, wall time)", self.unoptimized_run_us, self.optimized_run_us),
        ):
            lines.append(f"{label:<{width}}  {off:>10.1f}  {on:>12.1f}  {_change(on / off - 1 if off else None):>7}")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        rows = [
            f"## Graph optimizations off vs {markdown(self.level)}",
            "",
            "| module | off µs | optimized µs | change | nodes |",
            "|---|---:|---:|---:|---|",
        ]
        for m in self.modules:
            indent = "&nbsp;&nbsp;" * _depth(m.module)
            rows.append(
                f"| {indent}{markdown(_label(m.module))} | {m.unoptimized_us:.1f} | {m.optimized_us:.1f} | {_change(m.change)} "
                f"| {m.unoptimized_nodes}→{m.optimized_nodes} |"
            )
        rows.append(
            f"| (run, wall time) | {self.unoptimized_run_us:.1f} | {self.optimized_run_us:.1f} "
            f"| {_change(self.optimized_run_us / self.unoptimized_run_us - 1 if self.unoptimized_run_us else None)} | |"
        )
        return "\n".join(rows) + "\n"


def compare(
    level: str, unoptimized: tuple[list[ModuleTime], float, float], optimized: tuple[list[ModuleTime], float, float]
) -> OptimizationComparison:
    """The modules of both runs side by side; each run as (modules, kernel µs, run µs)."""
    off = {m.module: m for m in unoptimized[0]}
    on = {m.module: m for m in optimized[0]}
    gains = {
        path: ModuleGain(
            path,
            off[path].total_us if path in off else 0.0,
            on[path].total_us if path in on else 0.0,
            off[path].nodes if path in off else 0,
            on[path].nodes if path in on else 0,
        )
        for path in set(off) | set(on)
    }
    return OptimizationComparison(level, unoptimized[1], optimized[1], unoptimized[2], optimized[2], _depth_first(gains))


def _depth_first(gains: dict[str, ModuleGain]) -> list[ModuleGain]:
    children: dict[str, list[str]] = {}
    for path in gains:
        if path:
            children.setdefault(path.rpartition(".")[0], []).append(path)
    ordered: list[ModuleGain] = []

    def visit(path: str) -> None:
        if path in gains:
            ordered.append(gains[path])
        for child in sorted(children.get(path, []), key=natural):
            visit(child)

    visit("")
    return ordered


def _change(change: float | None) -> str:
    return "n/a" if change is None else f"{100 * change:+.0f}%"


def _label(module: str) -> str:
    return module.rpartition(".")[2] if module else "(root)"


def _depth(module: str) -> int:
    return module.count(".") + 1 if module else 0
