"""`tagger audit PATH...`: the hierarchy coverage of many models at once, for CI jobs and nightlies.

This module ensures that:
1. every `*.onnx` file under the given directories (recursively, symlinks not followed, sorted)
   and every file given by name is audited once, in parallel worker processes;
2. a file that cannot be read or tagged becomes a failed row with its one-line error, never a
   crash of the audit (a worker process that dies takes only its own file with it: the files
   it left pending are audited again one by one in fresh processes);
3. rows come out in path order, whatever order the workers finish in;
4. thresholds are percentages of each model's nodes: `min_direct` (direct evidence share at
   least this), `max_fallback` (root fallback share at most this) and `min_certain` (certain
   share at least this: direct and certainly inferred nodes, `tagger.reporting.certainty`); a model with
   no nodes passes them all;
5. `exit_code` is 0 when every file was audited and met the thresholds, `THRESHOLD_MISSED` (4)
   when some model missed one, `FILES_FAILED` (5) when some file could not be audited (it wins
   over 4: a failed file's coverage is unknown).

Nothing is written; models are analysed like `tagger report` (`tagger.api.report`).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tagger.api import report
from tagger.commands.options import check_integer, check_percentage
from tagger.errors import InputError, ModelsFailed, TaggerError, ThresholdMissed
from tagger.text import markdown, pct, terminal

__all__ = ["FILES_FAILED", "THRESHOLD_MISSED", "AuditReport", "AuditRow", "audit", "find_models"]

THRESHOLD_MISSED = ThresholdMissed.exit_code
FILES_FAILED = ModelsFailed.exit_code
_CHUNKS_PER_WORKER = 4
"""Files go to workers in chunks (few round trips), small enough to balance uneven models."""


@dataclass
class AuditRow:
    """One model's coverage, or why it could not be audited (`error`)."""

    path: str
    nodes: int = 0
    direct: int = 0
    inherited: int = 0
    fallback: int = 0
    chosen: int = 0
    """Inherited nodes whose tag is a choice (`tagger.reporting.certainty`); the rest of `inherited` is certain."""
    conflicts: int = 0
    seconds: float = 0.0
    error: str | None = None
    missed: list[str] = field(default_factory=list)
    """The thresholds this model missed, as readable sentences."""

    @property
    def ok(self) -> bool:
        return self.error is None and not self.missed

    @property
    def certain(self) -> int:
        """Nodes whose module is known, not chosen: direct and certainly inferred."""
        return self.direct + self.inherited - self.chosen

    def share(self, count: int) -> float:
        """`count` as a percentage of this model's nodes (0 for an empty model)."""
        return 100.0 * count / self.nodes if self.nodes else 0.0

    def to_dict(self) -> dict:
        data = {"kind": "model", **asdict(self)}
        data.update(
            seconds=round(self.seconds, 4),
            direct_pct=round(self.share(self.direct), 2),
            inherited_pct=round(self.share(self.inherited), 2),
            fallback_pct=round(self.share(self.fallback), 2),
            certain_pct=round(self.share(self.certain), 2),
            ok=self.ok,
        )
        return data


@dataclass
class AuditReport:
    """Every audited model, the thresholds applied, and the verdict."""

    rows: list[AuditRow]
    min_direct: float | None
    max_fallback: float | None
    workers: int
    seconds: float
    min_certain: float | None = None

    @property
    def failed(self) -> list[AuditRow]:
        """Rows whose file could not be audited."""
        return [r for r in self.rows if r.error is not None]

    @property
    def missed(self) -> list[AuditRow]:
        """Audited rows that missed a threshold."""
        return [r for r in self.rows if r.error is None and r.missed]

    def check(self) -> None:
        """Raise `ModelsFailed` or `ThresholdMissed` (exit codes 5 and 4) unless every model passed."""
        if self.failed:
            raise ModelsFailed(f"{len(self.failed)} of {_plural(len(self.rows), 'file')} could not be audited")
        if self.missed:
            raise ThresholdMissed(f"{len(self.missed)} of {_plural(len(self.rows), 'model')} missed a coverage threshold")

    @property
    def exit_code(self) -> int:
        if self.failed:
            return FILES_FAILED
        if self.missed:
            return THRESHOLD_MISSED
        return 0

    def totals(self) -> dict:
        audited = [r for r in self.rows if r.error is None]
        nodes = sum(r.nodes for r in audited)
        direct = sum(r.direct for r in audited)
        inherited = sum(r.inherited for r in audited)
        fallback = sum(r.fallback for r in audited)
        chosen = sum(r.chosen for r in audited)
        return {
            "kind": "total",
            "models": len(self.rows),
            "audited": len(audited),
            "failed": len(self.failed),
            "missed_threshold": len(self.missed),
            "nodes": nodes,
            "direct": direct,
            "inherited": inherited,
            "fallback": fallback,
            "chosen": chosen,
            "conflicts": sum(r.conflicts for r in audited),
            "direct_pct": round(100.0 * direct / nodes, 2) if nodes else 0.0,
            "inherited_pct": round(100.0 * inherited / nodes, 2) if nodes else 0.0,
            "fallback_pct": round(100.0 * fallback / nodes, 2) if nodes else 0.0,
            "certain_pct": round(100.0 * (nodes - chosen - fallback) / nodes, 2) if nodes else 0.0,
            "min_direct": self.min_direct,
            "max_fallback": self.max_fallback,
            "min_certain": self.min_certain,
            "workers": self.workers,
            "seconds": round(self.seconds, 3),
            "exit_code": self.exit_code,
        }

    def to_dict(self) -> dict:
        return {"rows": [r.to_dict() for r in self.rows], "total": self.totals()}

    def to_json(self) -> str:
        """JSON lines: one object per model (`"kind": "model"`), then one `"kind": "total"`."""
        lines = [json.dumps(r.to_dict(), ensure_ascii=False) for r in self.rows]
        lines.append(json.dumps(self.totals(), ensure_ascii=False))
        return "\n".join(lines)

    def to_text(self) -> str:
        """One line per model and a total line, for a terminal or a CI log."""
        lines = [_text_row(r) for r in self.rows]
        t = self.totals()
        lines.append(
            f"total: {_plural(t['models'], 'model')}, {t['audited']} audited, {t['failed']} failed, {t['missed_threshold']} "
            f"missed a threshold; {t['nodes']} nodes — direct {t['direct_pct']:.1f}%, inherited {t['inherited_pct']:.1f}%, "
            f"fallback {t['fallback_pct']:.1f}%; certain {t['certain_pct']:.1f}%; conflicts {t['conflicts']}; "
            f"{_plural(self.workers, 'worker')}, "
            f"{self.seconds:.2f} s"
        )
        return "\n".join(lines)

    def to_markdown(self) -> str:
        thresholds = ", ".join(
            text
            for text in (
                f"direct ≥ {self.min_direct:g}%" if self.min_direct is not None else "",
                f"fallback ≤ {self.max_fallback:g}%" if self.max_fallback is not None else "",
                f"certain ≥ {self.min_certain:g}%" if self.min_certain is not None else "",
            )
            if text
        )
        rows = [
            "# Hierarchy audit",
            "",
            f"Thresholds: {thresholds or 'none'}. Exit code {self.exit_code}.",
            "",
            "| model | nodes | direct | inherited | fallback | certain | conflicts | result |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in self.rows:
            if r.error is not None:
                rows.append(f"| {markdown(r.path)} | – | – | – | – | – | – | **failed**: {markdown(r.error)} |")
                continue
            result = "ok" if r.ok else "**missed**: " + markdown("; ".join(r.missed))
            rows.append(
                f"| {markdown(r.path)} | {r.nodes} | {pct(r.direct, r.nodes)} | {pct(r.inherited, r.nodes)} "
                f"| {pct(r.fallback, r.nodes)} | {pct(r.certain, r.nodes)} | {r.conflicts} | {result} |"
            )
        t = self.totals()
        rows.append(
            f"| **total** ({t['models']} models, {t['failed']} failed) | {t['nodes']} | {t['direct_pct']:.1f}% "
            f"| {t['inherited_pct']:.1f}% | {t['fallback_pct']:.1f}% | {t['certain_pct']:.1f}% | {t['conflicts']} "
            f"| {t['missed_threshold']} missed |"
        )
        return "\n".join(rows) + "\n"


def find_models(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given; directories expanded to their `*.onnx` files, recursively, sorted.

    A path that does not exist is kept (it becomes a failed row); a directory without any
    model contributes nothing.
    """
    found: dict[Path, Path] = {}  # resolved -> as first named, so each file is audited once
    for entry in paths:
        path = Path(entry)
        named = sorted(p for p in _walk(path) if p.suffix == ".onnx" and p.is_file()) if path.is_dir() else [path]
        for file in named:
            found.setdefault(file.resolve(), file)
    return list(found.values())


def _walk(directory: Path) -> Iterable[Path]:
    for root, _dirs, files in os.walk(directory):  # does not follow directory symlinks
        for name in files:
            yield Path(root) / name


def audit(
    *paths: str | os.PathLike,
    min_direct: float | None = None,
    max_fallback: float | None = None,
    workers: int | None = None,
    min_certain: float | None = None,
) -> AuditReport:
    """Audit every model under `paths` (files and directories, see `find_models`); the
    thresholds are percentages (module docstring, point 4).

    `workers` worker processes (default: one per CPU, at most one per model; 1 audits in this
    process). Raises `InputError` when the paths hold no model at all.
    """
    min_direct = check_percentage("min_direct", min_direct)
    max_fallback = check_percentage("max_fallback", max_fallback)
    min_certain = check_percentage("min_certain", min_certain)
    workers = check_integer("workers", workers, least=1)
    files = find_models(paths)
    if not files:
        raise InputError(f"no ONNX models (*.onnx) found in {', '.join(map(str, paths)) or 'no paths'}")
    count = min(workers or os.cpu_count() or 1, len(files))
    started = time.perf_counter()
    rows = _audit_files([str(f) for f in files], count)
    for row in rows:
        row.missed = _missed(row, min_direct, max_fallback, min_certain)
    return AuditReport(rows, min_direct, max_fallback, count, time.perf_counter() - started, min_certain)


def audit_one(path: str) -> AuditRow:
    """Audit one file; any failure becomes the row's `error` (this runs in a worker process)."""
    started = time.perf_counter()
    try:
        result = report(path)
    except TaggerError as exc:
        return AuditRow(path, error=str(exc), seconds=time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - one bad model is a failed row, never a failed audit
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return AuditRow(path, error=f"internal error: {type(exc).__name__}: {first}", seconds=time.perf_counter() - started)
    return AuditRow(
        path,
        nodes=result.nodes,
        direct=result.direct,
        inherited=result.inherited,
        fallback=result.fallback,
        chosen=result.inherited - result.inherited_certain,
        conflicts=len(result.conflicts),
        seconds=time.perf_counter() - started,
    )


def _audit_files(files: Sequence[str], workers: int) -> list[AuditRow]:
    if workers <= 1:
        return [audit_one(f) for f in files]
    rows: dict[str, AuditRow] = {}
    orphans: list[str] = []
    size = max(1, math.ceil(len(files) / (workers * _CHUNKS_PER_WORKER)))
    chunks = [list(files[i : i + size]) for i in range(0, len(files), size)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=_context()) as pool:
        futures: list[tuple[list[str], Future]] = [(chunk, pool.submit(_audit_chunk, chunk)) for chunk in chunks]
        for chunk, future in futures:
            try:
                rows.update(zip(chunk, future.result(), strict=True))
            except BrokenProcessPool:
                orphans.extend(chunk)
    for file in orphans:  # a crashed worker broke the pool: audit what it left one by one
        rows[file] = _audit_isolated(file)
    return [rows[f] for f in files]


def _audit_chunk(files: list[str]) -> list[AuditRow]:
    return [audit_one(f) for f in files]


def _audit_isolated(file: str) -> AuditRow:
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=_context()) as pool:
            return pool.submit(audit_one, file).result()
    except BrokenProcessPool:
        return AuditRow(file, error="the worker process auditing this file died (crash or out of memory)")


def _context():
    """How to start workers. `fork` when no other Python thread runs: workers start in
    milliseconds with the tagger already imported, and they only parse and tag models, never
    touching the native thread pools (BLAS, onnxruntime, torch) a parent may hold. With other
    Python threads running, one may hold a lock at the moment of the fork, so `forkserver`
    (a clean server imports the tagger once and forks the workers), or `spawn` elsewhere."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["tagger.api"])
        return context
    return multiprocessing.get_context("spawn")


def _missed(row: AuditRow, min_direct: float | None, max_fallback: float | None, min_certain: float | None) -> list[str]:
    if row.error is not None or not row.nodes:
        return []
    missed = []
    if min_direct is not None and row.share(row.direct) < min_direct:
        missed.append(f"direct {row.share(row.direct):.1f}% < {min_direct:g}%")
    if max_fallback is not None and row.share(row.fallback) > max_fallback:
        missed.append(f"fallback {row.share(row.fallback):.1f}% > {max_fallback:g}%")
    if min_certain is not None and row.share(row.certain) < min_certain:
        missed.append(f"certain {row.share(row.certain):.1f}% < {min_certain:g}%")
    return missed


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _text_row(row: AuditRow) -> str:
    path = terminal(row.path)
    if row.error is not None:
        return f"FAILED {path}: {terminal(row.error)}"
    verdict = "ok    " if row.ok else "MISSED"
    line = (
        f"{verdict} {path}: {row.nodes} nodes — direct {pct(row.direct, row.nodes)}, "
        f"inherited {pct(row.inherited, row.nodes)}, fallback {pct(row.fallback, row.nodes)}; "
        f"certain {pct(row.certain, row.nodes)}; conflicts {row.conflicts}"
    )
    return line + (f" ({'; '.join(row.missed)})" if row.missed else "")
