"""`profile --timeline` and `--speedscope`: the measured runs as files viewers open.

Both are drawn from one walk over the measured kernels, in time order on one thread:

1. Each measured run opens a `model_run` span; each kernel opens, below it, the spans of its
   module and of every ancestor (root first) that are not open yet, after closing the open
   modules it is not in. A module's span therefore lasts from its first kernel to its last one
   in a row, the executor's work between them included, and every span nests in its parent.
2. A kernel whose node is no module's (unmatched) sits right under its run. Control-flow kernels
   (If/Loop/Scan) are not drawn: their time encloses their bodies' kernels, which are.
3. Times are µs from the start of the first measured run. onnxruntime's kernels follow one
   another; one that started before the previous one ended (by rounding) would be drawn from that
   end (measured: no such kernel on the benchmark models).

`--timeline` writes the Trace Event Format Perfetto and chrome://tracing read
(`{"traceEvents": [{"ph": "X", "name", "ts", "dur", "pid", "tid", "args"}]}`: complete events
nesting on one thread draw the module tree over time). `--speedscope` writes speedscope's file
format (`https://www.speedscope.app/file-format-schema.json`): one evented profile whose frames
are the modules and kernels, opened and closed in order, so its flame graph ("left heavy")
is time per module.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tagger.model.modelio import save_text
from tagger.model.paths import ancestors

__all__ = ["DrawnKernel", "Step", "SPEEDSCOPE_SCHEMA", "steps", "speedscope", "trace_events", "write_json"]

SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"
_RUN = "model_run"


@dataclass(frozen=True)
class DrawnKernel:
    """One measured kernel: its run (0-based), start and duration in µs, node, op, module
    (None: unmatched) and provider."""

    run: int
    ts: float
    dur: float
    name: str
    op: str
    module: str | None
    provider: str


@dataclass(frozen=True)
class Step:
    """A span opening (`open`) or closing at `at` µs: a run, a module or a kernel."""

    open: bool
    at: float
    kind: str
    """`run`, `module` or `kernel`."""
    key: str
    """The frame: `model_run`, the module path, or the kernel's node name."""
    args: tuple[tuple[str, str], ...] = ()


def steps(kernels: Sequence[DrawnKernel], runs: Sequence[tuple[float, float]]) -> list[Step]:
    """The opening and closing of every span, in time order, properly nested (see the module doc)."""
    origin = runs[0][0] if runs else 0.0
    by_run: dict[int, list[DrawnKernel]] = {}
    for kernel in kernels:
        by_run.setdefault(kernel.run, []).append(kernel)
    out: list[Step] = []
    for run, (start, end) in enumerate(runs):
        out.append(Step(True, start - origin, "run", _RUN, (("run", str(run)),)))
        last = _walk(sorted(by_run.get(run, []), key=lambda k: k.ts), start - origin, origin, out)
        out.append(Step(False, max(end - origin, last), "run", _RUN))
    return out


def _walk(kernels: Iterable[DrawnKernel], start: float, origin: float, out: list[Step]) -> float:
    """Append one run's module and kernel steps; return the end of its last kernel."""
    stack: list[str] = []
    last = start
    for kernel in kernels:
        begin = max(kernel.ts - origin, last)
        end = max(kernel.ts + kernel.dur - origin, begin)
        chain = [] if kernel.module is None else [*ancestors(kernel.module), kernel.module]
        keep = 0
        while keep < min(len(stack), len(chain)) and stack[keep] == chain[keep]:
            keep += 1
        while len(stack) > keep:
            out.append(Step(False, last, "module", stack.pop()))
        for path in chain[keep:]:
            stack.append(path)
            out.append(Step(True, begin, "module", path))
        args = (("op", kernel.op), ("module", kernel.module if kernel.module is not None else "(unmatched)"))
        out.append(Step(True, begin, "kernel", kernel.name, (*args, ("provider", kernel.provider))))
        out.append(Step(False, end, "kernel", kernel.name))
        last = end
    while stack:
        out.append(Step(False, last, "module", stack.pop()))
    return last


def trace_events(spans: Sequence[Step], model: str) -> dict:
    """The Trace Event Format document: one complete (`X`) event per span, on one thread."""
    events: list[dict] = [
        {"ph": "M", "name": "process_name", "pid": 1, "tid": 1, "args": {"name": f"tagger profile {model}"}},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 1, "args": {"name": "modules and kernels"}},
    ]
    opened: list[Step] = []
    spans_of: list[tuple[int, dict]] = []
    for step in spans:
        if step.open:
            opened.append(step)
            continue
        begin = opened.pop()
        args = {"module": begin.key} if begin.kind == "module" else dict(begin.args)
        event = {"ph": "X", "cat": begin.kind, "name": _label(begin), "ts": begin.at, "dur": step.at - begin.at}
        spans_of.append((len(opened), {**event, "pid": 1, "tid": 1, "args": args}))
    # parents first: by start, then longest, then shallowest (a module and its only kernel coincide)
    events += [e for _, e in sorted(spans_of, key=lambda item: (item[1]["ts"], -item[1]["dur"], item[0]))]
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"model": model, "producer": "tagger profile"}}


def speedscope(spans: Sequence[Step], model: str) -> dict:
    """speedscope's file format: one evented profile, frames for the run, modules and kernels."""
    frames: list[dict] = []
    index: dict[tuple[str, str], int] = {}
    events: list[dict] = []
    for step in spans:
        frame = (step.kind, step.key)
        if frame not in index:
            index[frame] = len(frames)
            frames.append({"name": _label(step)})
        events.append({"type": "O" if step.open else "C", "frame": index[frame], "at": step.at})
    end = max((e["at"] for e in events), default=0.0)
    profile = {"type": "evented", "name": model, "unit": "microseconds", "startValue": 0.0, "endValue": end, "events": events}
    return {
        "$schema": SPEEDSCOPE_SCHEMA,
        "shared": {"frames": frames},
        "profiles": [profile],
        "name": f"tagger profile {model}",
        "activeProfileIndex": 0,
        "exporter": "tagger profile",
    }


def _label(step: Step) -> str:
    if step.kind == "module":
        return step.key or "(root)"
    if step.kind == "kernel":
        return f"{dict(step.args).get('op', '')} {step.key}".strip()
    return step.key


def write_json(document: dict, path: str | Path) -> None:
    save_text(json.dumps(document), Path(path))
