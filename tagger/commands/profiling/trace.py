"""onnxruntime's profile trace read: the kernel events of the measured runs.

1. A run is a `cat == "Session"` event named `model_run`; the first `warmup` runs are left out
   (they allocate memory). A trace without a measured run is an error.
2. A kernel is a `cat == "Node"` event named `<node name>_kernel_time` (or naming its node in
   `args.node_name`), with its start and duration in µs, its op (`args.op_name`) and provider
   (`args.provider`). Only kernels inside a measured run count.
3. `Measured.totals` sums each kernel name's time per provider over the measured runs;
   `Measured.sequences` lists each run's kernels in the order they started.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from tagger.commands.profiling.executed import kernel_name
from tagger.errors import TaggerError

__all__ = ["KERNEL_SUFFIX", "Kernel", "Measured", "measured"]

KERNEL_SUFFIX = "_kernel_time"


@dataclass(frozen=True)
class Kernel:
    """One kernel event of a measured run."""

    run: int
    ts: float
    dur: float
    name: str
    op: str
    provider: str


@dataclass
class Measured:
    """The kernel events of the measured runs, their sums per node name and provider, the runs."""

    kernels: list[Kernel]
    runs: list[tuple[float, float]]
    totals: dict[str, Counter[str]]
    providers: dict[str, str]
    """Kernel name -> the provider it ran on (the last event's)."""
    ops: dict[str, str] = field(default_factory=dict)
    """Kernel name -> its op (`args.op_name`)."""

    @property
    def run_us(self) -> float:
        return sum(end - start for start, end in self.runs) / len(self.runs)

    def sequences(self) -> list[list[tuple[str, str]]]:
        """Each measured run's kernels as `(name, op)`, in the order they started."""
        by_run: dict[int, list[Kernel]] = defaultdict(list)
        for kernel in self.kernels:
            by_run[kernel.run].append(kernel)
        return [[(k.name, k.op) for k in sorted(by_run[run], key=lambda k: k.ts)] for run in sorted(by_run)]


def measured(events: list[dict], warmup: int) -> Measured:
    """The kernel events inside the measured runs (after `warmup`), and those runs."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    kept = runs[warmup:]
    if not kept:
        raise TaggerError("the onnxruntime trace holds no measured model_run")
    starts = [start for start, _ in kept]
    kernels: list[Kernel] = []
    totals: dict[str, Counter[str]] = defaultdict(Counter)
    providers: dict[str, str] = {}
    ops: dict[str, str] = {}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith(KERNEL_SUFFIX):
            continue
        run = _run_of(event["ts"], starts, kept)
        if run is None:
            continue
        args = event.get("args", {})
        name, provider = kernel_name(event, KERNEL_SUFFIX), str(args.get("provider", ""))
        op = str(args.get("op_name", ""))
        kernels.append(Kernel(run, float(event["ts"]), float(event["dur"]), name, op, provider))
        totals[name][provider] += float(event["dur"])
        providers[name], ops[name] = provider, op
    return Measured(kernels, kept, dict(totals), providers, ops)


def _run_of(ts: float, starts: list[float], runs: list[tuple[float, float]]) -> int | None:
    position = bisect_right(starts, ts) - 1
    return position if position >= 0 and ts <= runs[position][1] else None
