"""End-to-end benchmark of the shim: export -> real post-processing tool -> `tagger retag`.

For every architecture x exporter, the same model is exported twice in the same run — with
`shim.export` (retag off, so the tools see what a user ships) and with plain
`torch.onnx.export` — and each file goes through onnxslim, onnxruntime's transformer optimizer,
`quantize_dynamic` and a graphsurgeon round trip, then the tagger. Accuracy is measured against
the truth torch itself reported for the export (dynamo `name_scopes`; TorchScript scoped names),
carried to each tool's output by node name or output tensor name. Export overhead is the median
of several timed runs of each exporter path.

    python -m bench.pipeline [--archs bert,vit] [--repeats 7]

Writes docs/pipeline.md and the table in docs/shim.md between the pipeline markers.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from pathlib import Path

import fire
import onnx
import torch

import shim
from bench import cases
from bench.docs import ROOT, publish
from tagger import tag_proto

TOOLS = ("none", "onnxslim", "ort_optimizer", "quantize_dynamic", "gs_roundtrip")


def _export(arch: str, exporter: str, path: Path, with_shim: bool) -> float:
    """Export `arch` to `path` (plain torch or shim) and return the wall time."""
    model, inputs = cases.build_model(arch)
    kwargs = dict(input_names=list(cases.INPUT_NAMES[arch]), output_names=list(cases.OUTPUT_NAMES), dynamo=exporter == "dynamo")
    started = time.perf_counter()
    with cases._quiet():
        if with_shim:
            shim.export(model, inputs, str(path), retag=False, **kwargs)
        else:
            torch.onnx.export(model, inputs, str(path), **kwargs)
    return time.perf_counter() - started


def _truth(path: Path, exporter: str, arch: str, plain: onnx.ModelProto) -> dict[int, str]:
    """torch's own scopes for the file at `path`: its metadata (dynamo), or the plain
    TorchScript export's names by position (the shim renames, it does not reorder)."""
    model = onnx.load(path, load_external_data=False)
    if exporter == "dynamo":
        return cases.truth_of_export(model, exporter, cases.module_paths(arch))
    if [n.op_type for n in model.graph.node] != [n.op_type for n in plain.graph.node]:
        raise AssertionError(f"{path}: the shim changed the node order")
    return cases.truth_of_export(plain, exporter, cases.module_paths(arch))


def _score(path: Path, truth: dict[int, str], tool: str, arch: str, exporter: str) -> cases.Score:
    original = onnx.load(path, load_external_data=False)
    model = onnx.load(path)
    result = model if tool == "none" else cases.degrade(model, tool, arch)
    carried = truth if tool == "none" else cases.carry_truth(original, truth, result)
    tag_proto(result)
    case = cases.Case(arch, exporter, tool, path, carried, len(result.graph.node))
    return cases.score(result, case)


def _overhead(arch: str, exporter: str, work: Path, repeats: int) -> tuple[float, float]:
    """Median export time, plain vs shim, interleaved and after a GC so neither pays the other's garbage."""
    plain: list[float] = []
    shimmed: list[float] = []
    for i in range(repeats):
        gc.collect()
        plain.append(_export(arch, exporter, work / f"t-plain-{i}.onnx", False))
        gc.collect()
        shimmed.append(_timed_shim(arch, exporter, work / f"t-shim-{i}.onnx"))
    return statistics.median(plain), statistics.median(shimmed)


def _timed_shim(arch: str, exporter: str, path: Path) -> float:
    """A shim export as users run it: retag on."""
    model, inputs = cases.build_model(arch)
    kwargs = dict(input_names=list(cases.INPUT_NAMES[arch]), output_names=list(cases.OUTPUT_NAMES), dynamo=exporter == "dynamo")
    started = time.perf_counter()
    with cases._quiet():
        shim.export(model, inputs, str(path), **kwargs)
    return time.perf_counter() - started


def _pct(score: cases.Score) -> str:
    return f"{100 * score.accuracy:.1f}%" if score.with_truth else "n/a"


def run(archs: str | None = None, repeats: int = 7, publish_docs: bool = True) -> None:
    """Run every arch x exporter x tool for shim and plain exports; print and publish."""
    selected = tuple(archs.split(",")) if isinstance(archs, str) else tuple(archs or cases.ARCHS)
    rows = [
        "| arch | exporter | tool | nodes | with truth | coverage | **shim export: accuracy** | plain export: accuracy |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    overhead_rows = ["| arch | exporter | plain torch.onnx.export | shim.export (retag on) | ratio |", "|---|---|---:|---:|---:|"]
    worst = 1.0
    perfect = total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for arch in selected:
            for exporter in cases.EXPORTERS:
                if (arch, exporter) not in cases.SUPPORTED:
                    continue
                work = Path(tmp) / f"{arch}-{exporter}"
                (work / "plain").mkdir(parents=True)
                (work / "shim").mkdir()
                plain_path, shim_path = work / "plain" / "model.onnx", work / "shim" / "model.onnx"
                _export(arch, exporter, plain_path, False)
                _export(arch, exporter, shim_path, True)
                plain_model = onnx.load(plain_path, load_external_data=False)
                truths = {
                    "shim": _truth(shim_path, exporter, arch, plain_model),
                    "plain": _truth(plain_path, exporter, arch, plain_model),
                }
                for tool in TOOLS:
                    if not cases.supported(arch, exporter, tool):
                        continue
                    ours = _score(shim_path, truths["shim"], tool, arch, exporter)
                    base = _score(plain_path, truths["plain"], tool, arch, exporter)
                    worst = min(worst, ours.accuracy if ours.with_truth else 1.0)
                    total += 1
                    perfect += not ours.with_truth or ours.correct == ours.with_truth
                    rows.append(
                        f"| {arch} | {exporter} | {tool} | {ours.nodes} | {ours.with_truth} "
                        f"| {100 * ours.tagged / ours.nodes:.0f}% "
                        f"| **{_pct(ours)}** | {_pct(base)} |"
                    )
                    print(rows[-1], flush=True)
                plain_s, shim_s = _overhead(arch, exporter, work, repeats)
                overhead_rows.append(f"| {arch} | {exporter} | {plain_s:.2f} s | {shim_s:.2f} s | **{shim_s / plain_s:.2f}×** |")
                print(overhead_rows[-1], flush=True)
    text = (
        f"Command: `python -m bench.pipeline` (median of {repeats} exports for the overhead).\n\n"
        f"Shim exports: **{perfect} of {total}** arch x exporter x tool rows tagged 100% right; "
        f"worst row **{100 * worst:.1f}%**.\n\n" + "\n".join(rows) + "\n\nExport time:\n\n" + "\n".join(overhead_rows) + "\n"
    )
    print(text)
    if publish_docs and set(selected) == set(cases.ARCHS):
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "pipeline.md").write_text("# Shim end-to-end benchmark\n\n" + text, encoding="utf-8")
        publish("pipeline", text, ("docs/shim.md",))


if __name__ == "__main__":
    fire.Fire(run)
