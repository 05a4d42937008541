"""`tagger numerics` on the pipelines' real files: does it run, and does it name a module?

Rows: the optimum exports `bench.pipelines` caches (BERT; LLaMA with a KV cache; ViT; T5's
encoder and decoder with past) against what the tools people quantize or convert with made of
them: `quantize_dynamic` (per tensor, and `per_channel=True`), `quantize_static` (QDQ, random
calibration), fp16 by onnxruntime's converter (`OnnxModel.convert_float_to_float16`,
`keep_io_types=True`) and by onnxconverter-common (`fp16_occ`, its defaults: onnxruntime refuses
what it makes of a graph holding a Cast to float, FIELD-NOTES §8; such rows are that refusal,
the exit 2 every command gives), onnxruntime's transformer optimizer with and without
`--float16`; and onnxruntime-genai's int4 builds against
their fp32 builds (when `/work/genai-cache` holds them: `bench/genai_fixtures.py`). Everything
runs with default inputs (generated, as a user's first run would).

Per row: the pieces listed at the default depth, how many have an own figure (the derived module
run alone on the float inputs), the worst module by own error, and the run time. Then peak
memory on a 100k-node model (`bench.synthetic`, and the same with its weights rounded to fp16) against a floor in the
same run: one onnxruntime session of each model running once.

    python -m bench.numerics [--work bench/.cache] [--memory_nodes 100000] [--nopublish_doc]

Writes docs/numerics.md (full runs only).
"""

from __future__ import annotations

import logging
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import fire
import onnx

from bench.docs import ROOT, publish
from bench.family_exports import ExportError, export
from bench.pipeline_tools import ToolError, degraded
from tagger.commands.numerics import numerics
from tagger.errors import TaggerError

FILES = (("bert", "optimum", "model"), ("llama", "optimum-past", "model"), ("vit", "optimum", "model"),
         ("t5", "optimum", "encoder_model"), ("t5", "optimum-past", "decoder_with_past_model"))
TOOLS = ("quantize_dynamic", "per_channel", "quantize_static", "fp16", "fp16_occ", "ort_optimizer", "ort_fp16")
GENAI = Path("/work/genai-cache")


@dataclass
class Row:
    file: str
    tool: str
    status: str
    depth: int = 0
    pieces: int = 0
    own: int = 0
    worst: str = ""
    seconds: float = 0.0

    def cells(self) -> list[str]:
        return [self.file, self.tool, self.status, str(self.depth or ""), str(self.pieces or ""),
                str(self.own or ""), self.worst, f"{self.seconds:.1f}"]


def _derived(path: Path, tool: str, family: str) -> Path | None:
    """The file `tool` makes of `path`, cached beside it (the pipelines' tools through `degraded`)."""
    if tool in ("per_channel", "fp16", "fp16_occ", "ort_fp16"):
        target = path.parent / "tools" / f"{path.stem}.{tool}.onnx"
        if not target.exists():
            target.parent.mkdir(exist_ok=True)
            _make(path, target, tool, family)
        return target
    return None  # the caller uses `degraded`


def _make(path: Path, target: Path, tool: str, family: str = "") -> None:
    if tool in ("fp16", "ort_fp16"):  # onnxruntime's float16 converter, alone or after its optimizer (--float16)
        from onnxruntime.transformers.onnx_model import OnnxModel

        from bench.pipeline_tools import _ort_optimizer

        model = onnx.load(path)
        converted = OnnxModel(_ort_optimizer(model, family) if tool == "ort_fp16" else model)
        converted.convert_float_to_float16(keep_io_types=True)
        onnx.save(converted.model, target)
        return
    if tool == "per_channel":
        from onnxruntime.quantization import quantize_dynamic

        quantize_dynamic(path, target, per_channel=True)
    else:
        from onnxconverter_common import float16

        onnx.save(float16.convert_float_to_float16(onnx.load(path)), target)


def _row(label: str, tool: str, float_path: Path, derived: Path) -> Row:
    start = time.perf_counter()
    try:
        report = numerics(float_path, derived)
    except TaggerError as exc:
        message = re.sub(r"/\S*/", "", str(exc))  # file names, not this machine's paths
        return Row(label, tool, f"error: {message[:90]}", seconds=time.perf_counter() - start)
    seconds = time.perf_counter() - start
    measured = [m for m in report.modules if m.own is not None and not math.isnan(m.own.snr_db)]
    worst = report.modules[0] if measured else None
    text = "" if worst is None or worst.own is None else f"{worst.piece.label} ({_db(worst.own.snr_db)})"
    return Row(label, tool, "ok", report.depth, len(report.modules), len(measured), text, seconds)


def _db(value: float) -> str:
    return "exact" if math.isinf(value) else f"{value:.1f} dB"


def matrix_rows(work: Path) -> list[Row]:
    rows = []
    for family, exporter, component in FILES:
        label = f"{family} {exporter} {component}"
        try:
            exported = next(f for f in export(family, exporter, work) if f.component == component)
        except (ExportError, StopIteration) as exc:
            rows.append(Row(label, "-", f"not exported: {exc}"))
            continue
        for tool in TOOLS:
            try:
                derived = _derived(exported.path, tool, family) or degraded(exported, tool)
            except (ToolError, Exception) as exc:  # noqa: BLE001 - a tool that fails is a row, not a crash
                rows.append(Row(label, tool, f"tool failed: {str(exc)[:60]}"))
                continue
            rows.append(_row(label, tool, exported.path, derived))
    return rows + _genai_rows()


def _genai_rows() -> list[Row]:
    rows = []
    for family in ("llama", "qwen2", "phi3"):
        for qkv in ("unfused", "fused"):
            fp32, int4 = GENAI / family / f"fp32-{qkv}" / "model.onnx", GENAI / family / f"int4-{qkv}" / "model.onnx"
            if fp32.exists() and int4.exists():
                rows.append(_row(f"{family} genai fp32-{qkv}", f"genai int4-{qkv}", fp32, int4))
    return rows


def genai_example() -> str | None:
    """The text report of the int4 LLaMA build against its fp32 build, paths as a user in the cache types them."""
    folder = GENAI / "llama"
    if not (folder / "int4-fused" / "model.onnx").exists():
        return None
    here = Path.cwd()
    os.chdir(folder)  # contextlib.chdir is Python 3.11+
    try:
        text = numerics("fp32-fused/model.onnx", "int4-fused/model.onnx", weights="hf").to_text()
    finally:
        os.chdir(here)
    return "```\n" + text.rstrip() + "\n```"


def memory_row(nodes: int) -> list[str]:
    """Peak RSS of `tagger numerics` on a `nodes`-node model and the same model with its weights
    rounded to fp16 (at 100k nodes `quantize_dynamic` takes hours: its initializer list is
    quadratic; onnxconverter-common's fp16 of this graph does not load), and the floor."""
    from bench import synthetic

    with tempfile.TemporaryDirectory() as tmp:
        float_path, derived = Path(tmp) / "float.onnx", Path(tmp) / "rounded.onnx"
        model = synthetic.build(max(1, nodes // synthetic.LAYER_NODES))
        onnx.save(model, float_path)
        onnx.save(_weights_rounded_to_fp16(model), derived)
        count = len(model.graph.node)
        floor = _peak([sys.executable, "-c", _FLOOR, str(float_path), str(derived)])
        measured = _peak([sys.executable, "-m", "tagger", "numerics", str(float_path), str(derived), "--json"])
    return [f"{count:,}", f"{floor[0] / 1024:.0f} MB", f"{measured[0] / 1024:.0f} MB", f"{measured[0] / floor[0]:.2f}×",
            f"{floor[1]:.1f}", f"{measured[1]:.1f}"]


def _weights_rounded_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnx import numpy_helper

    rounded = onnx.ModelProto()
    rounded.CopyFrom(model)
    for tensor in rounded.graph.initializer:
        if tensor.data_type == onnx.TensorProto.FLOAT:
            array = numpy_helper.to_array(tensor)
            tensor.CopyFrom(numpy_helper.from_array(array.astype("float16").astype("float32"), tensor.name))
    return rounded


_FLOOR = """
import sys, onnxruntime as ort
from tagger.inputs.feeds import make_feeds
import onnx
for path in sys.argv[1:]:
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    session.run(None, dict(make_feeds(onnx.load(path), 1)))
"""


_MEASURE = """
import resource, subprocess, sys
child = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)
print(child.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _peak(command: list[str]) -> tuple[float, float]:
    """(peak RSS in kB, seconds) of `command`, run in a fresh process of its own (whose only child it is)."""
    start = time.perf_counter()
    child = subprocess.run([sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True, cwd=ROOT)
    code, peak = child.stdout.split()
    if code != "0":
        raise RuntimeError(f"{' '.join(command[3:6])} failed: {child.stderr.strip().splitlines()[-1:]}")
    return float(peak), time.perf_counter() - start


def render(rows: list[Row], memory: list[str] | None) -> str:
    header = ["file (float)", "derived by", "status", "depth", "pieces", "with own figure", "worst by own error", "s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    failed = [row for row in rows if row.status != "ok"]
    lines += ["", f"{len(rows) - len(failed)} of {len(rows)} rows ran; failures: {len(failed)}."]
    if memory:
        lines += ["", "| nodes | floor peak RSS | numerics peak RSS | ratio | floor s | numerics s |", "|---|---|---|---|---|---|",
                  "| " + " | ".join(memory) + " |"]
    return "\n".join(lines)


def main(work: str = str(ROOT / "bench" / ".cache"), memory_nodes: int = 100_000, publish_doc: bool = True) -> None:
    started = time.perf_counter()
    logging.disable(logging.WARNING)  # the quantizer's advice to pre-process, once per file
    rows = matrix_rows(Path(work))
    try:
        memory = memory_row(memory_nodes) if memory_nodes else None
    except RuntimeError as exc:
        print(f"memory: {exc}")
        memory = None
    table = render(rows, memory)
    print(table)
    print(f"\n({time.perf_counter() - started:.0f} s)")
    example = genai_example()
    if publish_doc:
        publish("numerics", table, ("docs/numerics.md",))
        if example:
            publish("numerics-example", example, ("docs/numerics.md",))


if __name__ == "__main__":
    fire.Fire(main)
