"""Scale benchmark: what a user waits for. `tagger retag`, `report` and `extract` of one layer
as whole processes (interpreter start and imports included), against the floor, a
`python -c "onnx.save(onnx.load(...))"` child on the same file, and against what a user would
otherwise run on it (onnx-ir load + save, a graphsurgeon round trip).

Four model kinds (`bench/scale_models.py`: lean graph, the synthetic, a real TorchScript and a
real dynamo export of a deep BERT), each with weights inline and in a `.onnx.data` file, at each
size. With a data file the floor does what a user does: `onnx.load(p, load_external_data=False)`
and save (the weights stay where they are, as retag leaves them). Every command runs under
`/usr/bin/time`, which reports its CPU time and peak RSS; runs are interleaved (floor, retag,
report, extract, floor, ...) so that the shared machine's drifts hit all alike; each starts from a
fresh output with the page cache's dirty pages flushed (untimed). A ratio is the median over runs
of a run's time over the floor run just before it. The anchors run once per file (they take
many floors) and, by default, only up to 100k nodes.

    python -m bench.scale [--sizes 10000,100000,300000] [--kinds lean,synthetic,torchscript,dynamo]
                          [--repeats 3] [--anchors_up_to 100000] [--quick]

Writes the tables to docs/scale.md and into docs/scale-summary.md between the scale markers.
"""

from __future__ import annotations

import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import fire

from bench import scale_models
from bench.docs import ROOT, publish
from bench.scale_models import KINDS, PLACEMENTS

PHASES_AT = 100_000
"""The model size whose retag is also timed step by step (on the lean graph, data file)."""

_TIME = "/usr/bin/time"
_OUTPUT_SUFFIXES = (".floor.onnx", ".tagged.onnx", ".skeleton.onnx", ".layer.onnx", ".ir.onnx", ".gs.onnx")


def _floor_code(placement: str) -> str:
    load = "onnx.load(p, load_external_data=False)" if placement == "data" else "onnx.load(p)"
    return f"import onnx, sys; p = sys.argv[1]; onnx.save({load}, p + '.floor.onnx')"


_ONNX_IR = "import onnx_ir as ir, sys; p = sys.argv[1]; ir.save(ir.load(p), p + '.ir.onnx')"
_GRAPHSURGEON = (
    "import onnx, onnx_graphsurgeon as gs, sys; p = sys.argv[1]; "
    "onnx.save(gs.export_onnx(gs.import_onnx(onnx.load(p, load_external_data=False))), p + '.gs.onnx')"
)


def _command(operation: str, path: Path, placement: str, module: str) -> list[str]:
    """The command line a user would type for `operation` on `path`."""
    python, p = sys.executable, str(path)
    return {
        "floor": [python, "-c", _floor_code(placement), p],
        "retag": [python, "-m", "tagger", "retag", p, "--output", p + ".tagged.onnx"],
        "skeleton": [python, "-m", "bench.scale_skeleton", p],
        "report": [python, "-m", "tagger", "report", p],
        "extract": [python, "-m", "tagger", "extract", p, "--module", module, "--output", p + ".layer.onnx"],
        "onnx-ir": [python, "-c", _ONNX_IR, p],
        "graphsurgeon": [python, "-c", _GRAPHSURGEON, p],
    }[operation]


@dataclass
class Run:
    """One process: wall seconds (as the user waits), CPU seconds (user + system), peak RSS."""

    seconds: float
    cpu: float
    rss_mb: float


def _fresh_start(path: Path) -> None:
    """Before each timed run (untimed): remove earlier outputs, flush the page cache's dirty
    pages, so no run pays for freeing or writing back another run's file."""
    for suffix in _OUTPUT_SUFFIXES:
        Path(str(path) + suffix).unlink(missing_ok=True)
    os.sync()
    time.sleep(0.3)


def _run(command: list[str], path: Path, timeout: float | None = None) -> Run | None:
    """Run `command` under /usr/bin/time; None when it took longer than `timeout`."""
    _fresh_start(path)
    with tempfile.NamedTemporaryFile("r", suffix=".time") as usage:
        started = time.perf_counter()
        try:
            subprocess.run(
                [_TIME, "-f", "%U %S %M", "-o", usage.name, *command],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True, timeout=timeout,
                env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return None
        except subprocess.CalledProcessError as exc:
            raise SystemExit(f"{' '.join(command)} failed:\n{exc.stderr.decode(errors='replace')[-2000:]}") from None
        seconds = time.perf_counter() - started
        user, system, rss_kb = usage.read().split()[-3:]
    return Run(seconds, float(user) + float(system), int(rss_kb) / 1024)


@dataclass
class Measured:
    """All runs of one operation on one file, with the floor run just before each."""

    runs: list[Run] = field(default_factory=list)
    floors: list[Run] = field(default_factory=list)
    timed_out: float | None = None
    """The timeout, when the operation did not finish within it."""

    @property
    def seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def rss_mb(self) -> float:
        return max(r.rss_mb for r in self.runs)

    def ratios(self, cpu: bool = False) -> list[float]:
        if cpu:
            return [r.cpu / f.cpu for r, f in zip(self.runs, self.floors, strict=True)]
        return [r.seconds / f.seconds for r, f in zip(self.runs, self.floors, strict=True)]

    def ratio(self, cpu: bool = False) -> float:
        return statistics.median(self.ratios(cpu))

    def cell(self, spread: bool = False, bold: bool = False) -> str:
        """`2.1×` (the median ratio), with the runs' range when `spread`; `> N s` after a timeout; `–` not run."""
        if self.timed_out is not None:
            return f"> {self.timed_out:.0f} s"
        if not self.runs:
            return "–"
        text = f"**{self.ratio():.1f}×**" if bold else f"{self.ratio():.1f}×"
        if spread and len(self.runs) > 1:
            ratios = self.ratios()
            text += f" ({min(ratios):.1f}–{max(ratios):.1f})"
        return text


OPERATIONS = ("floor", "retag", "skeleton", "report", "extract")
ANCHORS = ("onnx-ir", "graphsurgeon")


@dataclass
class Row:
    """One file: a kind at a size with one weight placement."""

    kind: str
    placement: str
    nodes: int
    megabytes: float
    measured: dict[str, Measured]

    def per_node_us(self, operation: str) -> float:
        return 1e6 * self.measured[operation].seconds / self.nodes

    def markdown(self) -> str:
        m = self.measured
        rss = " / ".join(f"{m[op].rss_mb:.0f}" for op in OPERATIONS if op != "skeleton")
        return (
            f"| {self.kind} | {self.placement} | {self.nodes:,} | {self.megabytes:.0f} MB | {m['floor'].seconds:.2f} s "
            f"| {m['retag'].seconds:.2f} s | {m['retag'].cell(spread=True, bold=True)} | {m['retag'].ratio(cpu=True):.1f}× "
            f"| {self.per_node_us('retag'):.1f} µs | {m['skeleton'].cell()} | {m['report'].cell()} "
            f"| {m['extract'].cell()} | {rss} MB "
            f"| {m['retag'].rss_mb / m['floor'].rss_mb:.1f}× | {m['onnx-ir'].cell()} | {m['graphsurgeon'].cell()} |"
        )


HEADER = (
    "| model | weights | nodes | file | floor: load + save | retag | retag / floor (runs' range) | same in CPU time "
    "| retag per node | skeleton / floor | report / floor | extract one layer / floor | peak RSS: floor / retag / report / extract "
    "| retag RSS / floor's | onnx-ir load + save / floor | graphsurgeon round trip / floor |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def _measure_file(path: Path, placement: str, module: str, repeats: int, anchors: bool) -> dict[str, Measured]:
    """Interleaved runs of every operation; anchors once each, after, with a timeout of 40 floors."""
    measured = {operation: Measured() for operation in (*OPERATIONS, *ANCHORS)}
    for _ in range(repeats):
        floor = None
        for operation in OPERATIONS:
            run = _run(_command(operation, path, placement, module), path)
            if operation == "floor":
                floor = run
            measured[operation].runs.append(run)
            measured[operation].floors.append(floor)
    if anchors:
        limit = max(60.0, 40 * measured["floor"].seconds)
        for operation in ANCHORS:
            floor = _run(_command("floor", path, placement, module), path)
            run = _run(_command(operation, path, placement, module), path, timeout=limit)
            if run is None:
                measured[operation].timed_out = limit
            else:
                measured[operation].runs.append(run)
                measured[operation].floors.append(floor)
    return measured


def _rows(kinds: list[str], sizes: list[int], repeats: int, anchors_up_to: int, build: bool) -> list[Row]:
    rows = []
    for size in sizes:
        for kind in kinds:
            if not build and not scale_models.built(kind, size):
                print(f"skipped {kind} at {size:,} nodes: not built (--build builds it)", flush=True)
                continue
            scale_models.ensure(kind, size)
            info = scale_models.info(kind, size)
            module = scale_models.middle_layer(kind, info["layers"])
            for placement in PLACEMENTS:
                path = scale_models.model_path(kind, size, placement)
                measured = _measure_file(path, placement, module, repeats, anchors=size <= anchors_up_to)
                megabytes = path.stat().st_size / 1e6
                rows.append(Row(kind, placement, info["nodes"], megabytes, measured))
                print(rows[-1].markdown(), flush=True)
                _fresh_start(path)
    return rows


def _growth(rows: list[Row]) -> str:
    """Per kind and placement: retag's time per node at the largest size over the one nearest 10k,
    and the floor's (what the machine's memory and disk add on the same file read and written)."""
    lines = []
    for kind in dict.fromkeys(r.kind for r in rows):
        for placement in PLACEMENTS:
            mine = [r for r in rows if r.kind == kind and r.placement == placement]
            if len(mine) < 2:
                continue
            base = min(mine, key=lambda r: abs(r.nodes - 10_000))
            top = max(mine, key=lambda r: r.nodes)
            retag = top.per_node_us("retag") / base.per_node_us("retag")
            floor = top.per_node_us("floor") / base.per_node_us("floor")
            lines.append(f"| {kind} | {placement} | {base.nodes:,} → {top.nodes:,} | **{retag:.2f}×** | {floor:.2f}× |")
    if not lines:
        return ""
    return (
        "\nGrowth of the time per node (retag's, the floor's on the same files):\n\n"
        "| model | weights | nodes | retag | floor |\n|---|---|---|---:|---:|\n" + "\n".join(lines) + "\n"
    )


def _phases(path: Path, repeats: int, floor: float) -> str:
    """Where retag's time goes on one model: median seconds of each step over `repeats` children
    (in-process, imports excluded), in units of the floor process measured on the same file."""
    runs = []
    for _ in range(repeats):
        _fresh_start(path)
        out = subprocess.run(
            [sys.executable, "-m", "bench.scale_phases", str(path)],
            capture_output=True, text=True, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    median = {step: statistics.median(run[step] for run in runs) for step in runs[0]}
    ours = sum(seconds for step, seconds in median.items() if not step.startswith("…"))
    rows = [f"| {step} | {seconds:.2f} s | {seconds / floor:.2f}× |" for step, seconds in median.items()]
    rows.append(f"| **retag's work, all steps** | **{ours:.2f} s** | **{ours / floor:.2f}×** |")
    rows.append(f"| floor process: `onnx.load` + `onnx.save` (table above) | {floor:.2f} s | 1× |")
    return "| step | median | in floors |\n|---|---:|---:|\n" + "\n".join(rows) + "\n"


def _external_row(gigabytes: float) -> str:
    """A 2-layer synthetic model plus an embedding table of `gigabytes` in a sparse data file."""
    path = scale_models.big_model(gigabytes)
    measured = {"floor": Measured(), "retag": Measured()}
    for _ in range(3):
        floor = _run(_command("floor", path, "data", ""), path)
        for operation, run in (("floor", floor), ("retag", _run(_command("retag", path, "data", ""), path))):
            measured[operation].runs.append(run)
            measured[operation].floors.append(floor)
    same = scale_models.same_outputs(path, Path(str(path) + ".tagged.onnx"))
    data_size = Path(str(path) + ".data").stat().st_size
    return (
        f"| {data_size / 1e9:.1f} GB external | {measured['floor'].seconds:.2f} s | {measured['retag'].seconds:.2f} s "
        f"| {measured['floor'].rss_mb:.0f} / {measured['retag'].rss_mb:.0f} MB | {'identical' if same else 'DIFFERENT'} |"
    )


def run(
    sizes: str = "10000,100000,300000",
    kinds: str = ",".join(KINDS),
    repeats: int = 3,
    anchors_up_to: int = 100_000,
    external_gb: float = 3.2,
    quick: bool = False,
    publish_docs: bool = True,
    build: bool = True,
) -> None:
    """Build (or reuse) the models, time every operation in child processes, print and publish the tables.

    --quick: 10k nodes, one run each, no anchors, no step timing, no external-data row, nothing published.
    --nobuild: measure only the models already in bench/.cache (a real export of 300k nodes takes
    an hour to build).
    """
    if quick:
        sizes, repeats, anchors_up_to, external_gb, publish_docs = "10000", 1, 0, 0, False
    size_list = [int(s) for s in str(sizes).split(",")] if not isinstance(sizes, (tuple, list)) else [int(s) for s in sizes]
    kind_list = kinds.split(",") if isinstance(kinds, str) else list(kinds)
    unknown = set(kind_list) - set(KINDS)
    if unknown:
        raise SystemExit(f"unknown kinds {sorted(unknown)}; choose from {', '.join(KINDS)}")
    started = time.perf_counter()
    _compile_tagger()
    print(HEADER, flush=True)
    rows = _rows(kind_list, size_list, repeats, anchors_up_to, build)
    phases = ""
    if not quick and PHASES_AT in size_list and "lean" in kind_list:
        lean = next(r for r in rows if r.kind == "lean" and r.placement == "data" and abs(r.nodes - PHASES_AT) < PHASES_AT / 10)
        path = scale_models.model_path("lean", PHASES_AT, "data")
        phases = _phases(path, repeats, lean.measured["floor"].seconds)
    external = _external_row(external_gb) if external_gb else ""
    text = _document(rows, repeats, anchors_up_to, phases, external, time.perf_counter() - started)
    print(text)
    if publish_docs:
        (ROOT / "docs" / "scale.md").write_text("# Scale benchmark\n\n" + text, encoding="utf-8")
        publish("scale", text, ("docs/scale-summary.md",))


def _compile_tagger() -> None:
    """Write the tagger's bytecode once, as installing a package does: a source checkout run with
    PYTHONDONTWRITEBYTECODE would compile every module again in each timed child (~40 ms, 0.08x
    of the floor at 100k nodes), a cost no installed user pays. onnx's own bytecode is installed."""
    compileall.compile_dir(str(ROOT / "tagger"), quiet=1)


def _document(rows: list[Row], repeats: int, anchors_up_to: int, phases: str, external: str, seconds: float) -> str:
    text = (
        f"Command: `python -m bench.scale` ({seconds / 60:.0f} min on a 2-core machine; `bench/scale_models.py` builds the "
        "models: **lean** = `bench/synthetic.py`'s layers without metadata, a third of the nodes scoped; **synthetic** = "
        "the same with the five metadata entries of a torch 2.13 dynamo export on every node, 2.2 kB a node; "
        "**torchscript** / **dynamo** = `torch.onnx.export` of a `transformers` BertModel of hidden size 4 and as many "
        "layers as the size needs (dynamo with `optimize=False`); each with its weights **inline** or in a `.onnx.data` "
        "file (**data**). Every figure is a whole process as a user runs it (`python -m tagger retag IN --output OUT`, "
        '`report`, `extract --module <middle layer>`; the floor: `python -c "onnx.save(onnx.load(IN), OUT)"`, with '
        "`load_external_data=False` for a data file), timed wall-clock, its CPU time and peak RSS from `/usr/bin/time`; "
        f"median of {repeats} runs interleaved with the floor's, a ratio the median of each run's ratio to the floor run "
        "just before it. The anchors (what a user would otherwise run on the same file: `onnx_ir.save(onnx_ir.load(IN), "
        "OUT)`, and `onnx.save(gs.export_onnx(gs.import_onnx(onnx.load(IN, load_external_data=False))), OUT)`) ran "
        f"once each, on files up to {anchors_up_to:,} nodes. **skeleton** (`python -m bench.scale_skeleton IN`): "
        "start-up with the CLI's imports, load, read every node's fields, write one tag on every node, save - the "
        "part of a retag no tagging logic can remove; retag's time above it is evidence, inference and the report.\n\n"
        f"{HEADER}\n" + "\n".join(row.markdown() for row in rows) + "\n" + _growth(rows)
    )
    if phases:
        text += (
            f"\nWhere retag's time goes on the lean graph at {PHASES_AT:,} nodes, weights in a data file "
            f"(steps timed inside one process, imports excluded; median of {repeats}):\n\n{phases}"
        )
    if external:
        text += (
            "\nExternal data (weights never loaded; the output beside the input shares the data file):\n\n"
            "| model | floor: load + save (structure) | retag | peak RSS: floor / retag | onnxruntime outputs after retag |\n"
            "|---|---:|---:|---:|---|\n" + external + "\n"
        )
    return text


if __name__ == "__main__":
    fire.Fire(run)
