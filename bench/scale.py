"""Scale benchmark: retag, report and extract (one layer) on 1k-300k-node models and a model
with > 3 GB of external weights, against the protobuf floor (`onnx.load` + `onnx.save` of the
same file) measured in the same run. Each operation runs in a fresh child process, which reports
its wall time, CPU time and peak RSS (VmHWM); runs are interleaved and each starts from a fresh
output path with the page cache's dirty pages flushed (untimed). The models are built in a child
process too, so this process holds none of them while the timed children run. At 100k nodes
retag is also timed step by step.

    python -m bench.scale [--sizes 1000,10000,100000,300000] [--external_gb 3.2] [--repeats 3]

Writes the table to docs/scale.md and into README.md between the scale markers.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import fire
import numpy as np
import onnx
from onnx import TensorProto, helper

from bench import synthetic
from bench.docs import ROOT, publish

OPERATIONS = ("floor", "retag", "report", "extract")
PHASES_AT = 100_000
"""The model size whose retag is also timed step by step."""


def measure(operation: str, path: str, module: str = "") -> None:
    """Child-process entry: run one operation on `path`, print wall seconds, CPU seconds (user +
    system: what the work costs without the disk's waits) and peak RSS as JSON. Imports happen
    before the clock starts, as `import onnx` does for the floor. `extract` cuts out `module`
    from the untagged model (so it tags it in memory first, as a user's first extract does)."""
    from tagger import extract, report, retag

    cpu = _cpu_seconds()
    started = time.perf_counter()
    if operation == "floor":
        model = onnx.load(path, load_external_data=False)
        onnx.save(model, path + ".floor.onnx")
    elif operation == "retag":
        retag(path, path + ".tagged.onnx")
    elif operation == "report":
        report(path).to_json()
    elif operation == "extract":
        extract(path, module=module, output=path + ".layer.onnx")
    else:
        raise SystemExit(f"unknown operation {operation}")
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "cpu": _cpu_seconds() - cpu, "rss_mb": _peak_rss_mb()}))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_phases(path: str) -> None:
    """Child-process entry: retag's steps one by one (the same calls `tagger.retag` makes), each
    timed; prints {step: seconds} as JSON. Nothing else runs in the process: a floor timed after
    them would find its memory already faulted in and look cheaper than in a process of its own."""
    import contextlib
    import gc

    from tagger.coverage_report import build_report
    from tagger.index import build_index
    from tagger.modelio import load_model, save_model
    from tagger.tagging import tag_model
    from tagger.validate import check_index
    from tagger.write import write_tags

    source = Path(path)
    steps: dict[str, float] = {}

    @contextlib.contextmanager
    def step(name: str):
        started = time.perf_counter()
        yield
        steps[name] = time.perf_counter() - started

    gc.disable()  # as `tagger.api` does while it tags
    with step("read and parse (load_model)"):
        model = load_model(source)
    with step("index, evidence, inference (tag_model)"):
        result = tag_model(model)
    with step("… of which reading every node's fields (build_index, timed again apart)"):
        build_index(model)
    with step("structural checks (check_index)"):
        check_index(result.index)
    with step("write tags (write_tags)"):
        write_tags(result.index.nodes, result.index.views, result.assignments)
    with step("coverage report (build_report)"):
        build_report(result, source.name)
    with step("free the analysis"):
        del result
    gc.enable()
    with step("serialise and write (save_model)"):
        save_model(model, source, Path(path + ".tagged.onnx"))
    print(json.dumps(steps))


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not `ru_maxrss`: Linux carries `ru_maxrss` over from the
    forking parent across exec, so a child of a big benchmark process would report the parent's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fresh_start(path: Path) -> None:
    """Before each timed run (untimed): remove the previous run's outputs and flush the page
    cache's dirty pages, so no run pays for freeing or writing back another run's file."""
    for suffix in (".floor.onnx", ".tagged.onnx", ".layer.onnx"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    os.sync()
    time.sleep(0.5)  # let the writeback the sync started settle before the clock runs


def _child(operation: str, path: Path, module: str) -> dict:
    _fresh_start(path)
    out = subprocess.run(
        [sys.executable, "-m", "bench.scale", "measure", operation, str(path), module],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def _timed(operations: tuple[str, ...], path: Path, repeats: int, module: str = "") -> dict[str, dict]:
    """Median wall and CPU seconds and peak RSS of each operation, runs interleaved (floor,
    retag, report, ..., floor, ...) so that drifts of the machine's disk and CPU hit all alike;
    and each run's ratio to the floor run just before it (adjacent runs share the machine's state)."""
    runs: dict[str, list[dict]] = {operation: [] for operation in operations}
    for _ in range(repeats):
        for operation in operations:
            runs[operation].append(_child(operation, path, module))
    floors = runs["floor"]
    return {
        operation: {
            "seconds": statistics.median(r["seconds"] for r in done),
            "cpu": statistics.median(r["cpu"] for r in done),
            "rss_mb": max(r["rss_mb"] for r in done),
            "ratios": [r["seconds"] / f["seconds"] for r, f in zip(done, floors, strict=True)],
            "cpu_ratios": [r["cpu"] / f["cpu"] for r, f in zip(done, floors, strict=True)],
        }
        for operation, done in runs.items()
    }


@dataclass
class ScaleRow:
    """Medians (and per-run ratios to the floor) for one model size."""

    nodes: int
    floor: dict
    retag: dict
    report: dict
    extract: dict
    phases: str = ""
    """Markdown table of retag's steps (only for the `PHASES_AT` size)."""

    def per_node_us(self, operation: str) -> float:
        return 1e6 * getattr(self, operation)["seconds"] / self.nodes

    def ratio(self, operation: str, kind: str = "ratios") -> float:
        """Median over runs of the run's time / the adjacent floor run's time."""
        return statistics.median(getattr(self, operation)[kind])

    def spread(self, operation: str) -> str:
        ratios = getattr(self, operation)["ratios"]
        return f"{min(ratios):.1f}–{max(ratios):.1f}"

    def markdown(self) -> str:
        rss = " / ".join(f"{getattr(self, op)['rss_mb']:.0f}" for op in ("retag", "report", "extract"))
        return (
            f"| {self.nodes:,} | {self.floor['seconds']:.2f} s | {self.retag['seconds']:.2f} s | **{self.ratio('retag'):.1f}×** "
            f"({self.spread('retag')}) | {self.ratio('retag', 'cpu_ratios'):.1f}× | {self.per_node_us('floor'):.1f} µs "
            f"| {self.per_node_us('retag'):.1f} µs | {self.ratio('report'):.1f}× | {self.ratio('extract'):.1f}× | {rss} MB |"
        )


def _scale_rows(sizes: list[int], work: Path, repeats: int) -> list[ScaleRow]:
    rows = []
    for size in sizes:
        layers = max(1, round(size / synthetic.LAYER_NODES))
        path = work / f"synthetic-{size}.onnx"
        nodes = _build_in_child(layers, path)
        timed = _timed(OPERATIONS, path, repeats, module=f"encoder.layer.{layers // 2}")
        rows.append(ScaleRow(nodes, timed["floor"], timed["retag"], timed["report"], timed["extract"]))
        print(rows[-1].markdown(), flush=True)
        if size == PHASES_AT:
            rows[-1].phases = _phases(path, repeats, rows[-1].floor["seconds"])
    return rows


def build_model(layers: str, path: str) -> None:
    """Child-process entry: write the synthetic model of `layers` layers; print its node count."""
    model = synthetic.build(int(layers))
    onnx.save(model, path)
    print(len(model.graph.node))


def _build_in_child(layers: int, path: Path) -> int:
    """The model is built in a child of its own: a parent holding gigabytes of it while the timed
    children run would slow their page faults (measured: a 300k-node retag took 9 s beside an
    idle process and 10-11 s beside one holding 4 GB)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.scale", "build", str(layers), str(path)],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return int(out.stdout.strip().splitlines()[-1])


def _phases(path: Path, repeats: int, floor: float) -> str:
    """Where retag's time goes on one model: median seconds of each step over `repeats` children,
    in units of the floor measured for the same file in children of its own (`floor` seconds)."""
    runs = []
    for _ in range(repeats):
        _fresh_start(path)
        out = subprocess.run(
            [sys.executable, "-m", "bench.scale", "phases", str(path)], capture_output=True, text=True, check=True, cwd=ROOT
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    median = {step: statistics.median(run[step] for run in runs) for step in runs[0]}
    ours = sum(seconds for step, seconds in median.items() if not step.startswith("…"))
    rows = [f"| {step} | {seconds:.2f} s | {seconds / floor:.2f}× |" for step, seconds in median.items()]
    rows.append(f"| **retag, all steps** | **{ours:.2f} s** | **{ours / floor:.2f}×** |")
    rows.append(f"| floor: `onnx.load` + `onnx.save` (its own children, table above) | {floor:.2f} s | 1× |")
    return "| step | median | in floors |\n|---|---:|---:|\n" + "\n".join(rows) + "\n"


def _growth(rows: list[ScaleRow]) -> str:
    """Per-node time of the largest model over the one nearest 10k nodes: retag's, the floor's,
    and that of retag's own work (its time minus the floor's, per node)."""
    base = min(rows, key=lambda r: abs(r.nodes - 10_000))
    top = max(rows, key=lambda r: r.nodes)
    if top is base:
        return ""
    retag = top.per_node_us("retag") / base.per_node_us("retag")
    floor = top.per_node_us("floor") / base.per_node_us("floor")
    own = (top.per_node_us("retag") - top.per_node_us("floor")) / (base.per_node_us("retag") - base.per_node_us("floor"))
    return (
        f"\nGrowth from {base.nodes:,} to {top.nodes:,} nodes, time per node: retag **{retag:.2f}×**, "
        f"the floor itself {floor:.2f}× (the same file read and written: what the machine's memory and disk add), "
        f"retag's own work (retag − floor) {own:.2f}×.\n"
    )


def _external_model(work: Path, gigabytes: float) -> Path:
    """A 2-layer model plus an embedding table of `gigabytes` in a sparse external data file."""
    model = synthetic.build(2)
    rows = int(gigabytes * 1e9 / (4 * synthetic.HIDDEN))
    table = onnx.TensorProto(name="big.embedding.weight", data_type=TensorProto.FLOAT, dims=[rows, synthetic.HIDDEN])
    table.data_location = TensorProto.EXTERNAL
    size = rows * synthetic.HIDDEN * 4
    for key, value in (("location", "big.onnx.data"), ("offset", "0"), ("length", str(size))):
        table.external_data.add(key=key, value=value)
    model.graph.initializer.append(table)
    ids = onnx.numpy_helper.from_array(np.arange(synthetic.SEQ, dtype=np.int64).reshape(1, -1) * 7919 % rows, "big.ids")
    model.graph.initializer.append(ids)
    last = model.graph.output[0].name
    model.graph.node.extend(
        [
            helper.make_node(
                "Gather", ["big.embedding.weight", "big.ids"], ["/big/embedding/Gather_output_0"], name="/big/embedding/Gather"
            ),
            helper.make_node("Add", [last, "/big/embedding/Gather_output_0"], ["y"], name="/big/Add"),
        ]
    )
    model.graph.output[0].name = "y"
    path = work / "big.onnx"
    with open(work / "big.onnx.data", "wb") as data:
        data.truncate(size)  # sparse: zeros on disk without writing gigabytes
    onnx.save(model, path)
    return path


def _run_ort(path: Path) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"x": np.ones((1, synthetic.SEQ, synthetic.HIDDEN), np.float32), "mask": np.zeros((1, 1, 1, synthetic.SEQ), np.int64)}
    return session.run(None, feeds)[0]


def _external_row(work: Path, gigabytes: float) -> str:
    path = _external_model(work, gigabytes)
    data_size = (work / "big.onnx.data").stat().st_size
    timed = _timed(("floor", "retag"), path, 3)
    floor, retag = timed["floor"], timed["retag"]
    same = bool(np.array_equal(_run_ort(path), _run_ort(Path(str(path) + ".tagged.onnx"))))
    return (
        f"| {data_size / 1e9:.1f} GB external | {floor['seconds']:.2f} s | {retag['seconds']:.2f} s "
        f"| {retag['rss_mb']:.0f} MB | {'identical' if same else 'DIFFERENT'} |"
    )


def run(sizes: str = "1000,10000,100000,300000", external_gb: float = 3.2, repeats: int = 3, publish_docs: bool = True) -> None:
    """Build the models, time every operation in child processes, print and publish the tables."""
    size_list = [int(s) for s in str(sizes).split(",")] if not isinstance(sizes, tuple) else list(sizes)
    with tempfile.TemporaryDirectory(dir=os.environ.get("SCALE_TMP")) as tmp:
        work = Path(tmp)
        rows = _scale_rows(size_list, work, repeats)
        external = _external_row(work, external_gb) if external_gb else ""
    header = (
        "| nodes | floor: load + save | retag | retag / floor (runs' range) | same in CPU time | floor per node | retag per node "
        "| report / floor | extract one layer / floor | peak RSS: retag / report / extract |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    text = (
        "Command: `python -m bench.scale` (`bench/synthetic.py`: BERT-like layers of 43 nodes, TorchScript-style "
        "scoped names and the five metadata entries of a torch 2.13 dynamo export on every node, about 2.2 kB a "
        f"node; each figure from a fresh child process, median of {repeats} runs interleaved with the floor's (a ratio is "
        "the median of each run's ratio to the floor run just before it), each run "
        "writing a fresh output after the page cache's dirty pages were flushed, while the benchmark process itself holds no "
        "model: each is built in a child of its own).\n\n"
        f"{header}\n" + "\n".join(row.markdown() for row in rows) + "\n" + _growth(rows)
    )
    for row in rows:
        if row.phases:
            text += f"\nWhere retag's time goes at {row.nodes:,} nodes (steps timed in one child process, median of {repeats}):\n\n"
            text += row.phases
    if external:
        text += (
            "\nExternal data (weights never loaded; output beside the input shares the data file):\n\n"
            "| model | floor: load + save (structure) | retag | retag peak RSS | onnxruntime outputs after retag |\n"
            "|---|---:|---:|---:|---|\n" + external + "\n"
        )
    print(text)
    if publish_docs:
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "scale.md").write_text("# Scale benchmark\n\n" + text, encoding="utf-8")
        publish("scale", text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "measure":
        measure(*sys.argv[2:5])
    elif len(sys.argv) > 1 and sys.argv[1] == "phases":
        measure_phases(sys.argv[2])
    elif len(sys.argv) > 1 and sys.argv[1] == "build":
        build_model(*sys.argv[2:4])
    else:
        fire.Fire(run)
