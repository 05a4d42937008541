"""Audit benchmark: `tagger audit` over 50 small real models with --workers 1 and 2.

python -m bench.audit [--models 50] [--repeats 9] [--work bench/.cache]

The models are copies of the test cases (`bench.cases`: five architectures, two exporters,
real degradations), each in a directory of its own (a dynamo export keeps its external data
file beside it). Each setting runs as the CLI would be run by a CI job, in a fresh process,
alternating settings so that both see the same machine load; the table gives the median wall
time of the whole command and the median time the audit itself reports (`seconds` in the total
line of `--json`, which leaves out interpreter start and imports). Writes docs/audit.md and the
`audit` block of docs/insight.md.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fire

from bench import cases
from bench.docs import ROOT, publish


def copy_models(count: int, work_dir: Path, target: Path) -> list[Path]:
    """`count` case models (cycling through the cases if there are fewer), one directory each."""
    keys = [
        (arch, exporter, degradation)
        for arch in cases.ARCHS
        for exporter in cases.EXPORTERS
        for degradation in cases.DEGRADATIONS
        if cases.supported(arch, exporter, degradation)
    ]
    copied = []
    for i in range(count):
        case = cases.make_case(*keys[i % len(keys)], work_dir)
        directory = target / f"{i:02d}-{case.arch}-{case.exporter}-{case.degradation}"
        directory.mkdir(parents=True)
        shutil.copy2(case.path, directory / case.path.name)
        data = case.path.with_name(case.path.name + ".data")
        if data.exists():
            shutil.copy2(data, directory / data.name)
        copied.append(directory / case.path.name)
    return copied


def run_audit(directory: Path, workers: int) -> tuple[float, dict]:
    """One `tagger audit DIR --workers N --json` in a fresh process: wall seconds and the total line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "tagger", "audit", str(directory), "--workers", str(workers), "--json"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"audit failed ({result.returncode}): {result.stderr.strip()}")
    total = json.loads(result.stdout.splitlines()[-1])
    return wall, total


def run(models: int = 50, repeats: int = 9, work: str = "bench/.cache", publish_docs: bool = True) -> str:
    work_dir = ROOT / work
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tagger-audit-bench-") as tmp:
        target = Path(tmp) / "models"
        files = copy_models(models, work_dir, target)
        nodes = 0
        load = os.getloadavg()[0]
        walls: dict[int, list[float]] = {1: [], 2: []}
        audits: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(repeats):
            for workers in (1, 2):
                wall, total = run_audit(target, workers)
                assert total["models"] == len(files) and total["failed"] == 0, total
                nodes = total["nodes"]
                walls[workers].append(wall)
                audits[workers].append(total["seconds"])
    wall = {w: statistics.median(v) for w, v in walls.items()}
    audit = {w: statistics.median(v) for w, v in audits.items()}
    rows = [
        "| workers | command wall time | audit time | per model | speed-up (command) | speed-up (audit) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for workers in (1, 2):
        rows.append(
            f"| {workers} | {wall[workers]:.3f} s | {audit[workers]:.3f} s | {1000 * audit[workers] / len(files):.1f} ms "
            f"| **{wall[1] / wall[workers]:.2f}×** | **{audit[1] / audit[workers]:.2f}×** |"
        )
    text = (
        f"Command: `python -m bench.audit` — `tagger audit DIR --workers N --json` over {len(files)} models "
        f"({nodes} nodes; copies of the test cases), median of {repeats} alternating runs per setting, "
        f"{os.cpu_count()} CPUs, load average {load:.2f} at the start.\n\n" + "\n".join(rows) + "\n\n"
        "*Command* is the whole process a CI job waits for (interpreter start and imports included); *audit* is the "
        "time the audit itself reports (finding files, worker start, every model loaded, tagged and counted).\n"
    )
    if publish_docs:
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "audit.md").write_text("# Audit benchmark\n\n" + text, encoding="utf-8")
        publish("audit", text, ("docs/insight.md",))
    print(text)
    return ""


if __name__ == "__main__":
    fire.Fire(run)
