"""`tagger profile` at onnxruntime's default level, checked against what the sweep
(`bench/profile_sweep.py`) found and against a hand count of onnxruntime's own trace."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import onnx
import pytest

from tagger import profile, retag
from tagger.model.keys import MODULE_KEY
from tagger.model.paths import ancestors

pytest.importorskip("onnxruntime")


def fp16(source: Path, target: Path) -> Path:
    """onnxruntime's own float16 conversion of `source`, inputs and outputs kept float (as bench.numerics makes it)."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(source))
    model.convert_float_to_float16(keep_io_types=True)
    onnx.save(model.model, target)
    return target


@pytest.fixture(scope="module")
def bert_fp16(built_cases, tmp_path_factory) -> Path:
    return fp16(built_cases[("bert", "torchscript", "none")].path, tmp_path_factory.mktemp("fp16") / "model.fp16.onnx")


def test_the_nodes_onnxruntime_inlines_without_a_name_are_placed_by_execution_order(bert_fp16):
    """The CPU has no fp16 Softmax kernel: onnxruntime inlines Softmax's function body, nodes
    without a name profiled as `ReduceMax_121`, ... Each counts for the attention module whose
    Softmax it computes, none is unmatched."""
    result = profile(bert_fp16, runs=2, warmup=1)
    assert result.graph_written and result.unmatched == {}, result.unmatched_why
    inlined = [n for n in result.nodes if n.op_type in ("ReduceMax", "Exp", "ReduceSum")]
    assert len(inlined) == 6  # one of each per layer
    assert {n.module for n in inlined} == {"m.encoder.layer.0.attention.self", "m.encoder.layer.1.attention.self"}
    assert all(n.name.removeprefix(n.op_type + "_").isdigit() and n.nodes == 1 for n in inlined)
    assert sum(m.self_us for m in result.modules) == pytest.approx(result.kernel_us)


def test_the_graph_that_ran_is_tagged_within_the_files_modules(bert_fp16):
    """onnxruntime casts each fp16 weight back to float once, as an initializer named
    `FusedBack_<weight>`: that name is no module (`FusedBack_m.encoder...`)."""
    from tagger.commands.nodetags import model_tags

    result = profile(bert_fp16, runs=1, warmup=0)
    file_modules = {t.module for t in model_tags(onnx.load(bert_fp16, load_external_data=False)).nodes}
    known = file_modules | {a for m in file_modules for a in ancestors(m)}
    assert {m.module for m in result.modules} <= known
    assert not any("FusedBack" in m.module for m in result.modules)


def test_module_totals_of_the_optimized_run_are_the_hand_summed_kernels_of_onnxruntimes_trace(built_cases, tmp_path):
    """The hand check: onnxruntime's raw trace (`trace=`), its `Node` events of the measured runs
    summed per module by this test's own code: each event's node found by name in the graph
    onnxruntime writes at the same level, that graph tagged by `retag` with the file as its
    reference. Every module's total in the report is that sum (within rounding)."""
    import onnxruntime as ort

    case = built_cases[("bert", "torchscript", "none")]
    trace = tmp_path / "trace.json"
    runs, warmup = 3, 1
    result = profile(case.path, runs=runs, warmup=warmup, trace=trace)
    assert result.optimization == "all (ORT_ENABLE_ALL)" and result.graph_written

    options = ort.SessionOptions()  # the graph onnxruntime runs at its default level, written as it is
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(case.path), options, providers=["CPUExecutionProvider"])
    retag(tmp_path / "optimized.onnx", output=tmp_path / "optimized.tagged.onnx", reference=case.path)
    tagged = onnx.load(tmp_path / "optimized.tagged.onnx")
    module_of = {node.name: {p.key: p.value for p in node.metadata_props}[MODULE_KEY] for node in tagged.graph.node}
    assert len(module_of) == len(tagged.graph.node) == result.graph_nodes  # every node named, once

    events = json.loads(trace.read_text(encoding="utf-8"))
    run_spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    assert len(run_spans) == warmup + runs
    measured = run_spans[warmup:]
    own: Counter[str] = Counter()
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        if not any(start <= event["ts"] <= end for start, end in measured):
            continue  # a warm-up kernel
        own[module_of[event["name"].removesuffix("_kernel_time")]] += event["dur"] / runs  # KeyError: a kernel of no node
    total: Counter[str] = Counter()
    for module, us in own.items():
        for path in {module, *ancestors(module)}:
            total[path] += us

    reported = {m.module: m.total_us for m in result.modules if m.total_us}
    assert reported.keys() == total.keys()
    for module, us in total.items():
        assert reported[module] == pytest.approx(us, abs=1e-6), module
    assert sum(own.values()) == pytest.approx(result.kernel_us) and result.unmatched_us == 0
    assert {m.module: m.self_us for m in result.modules if m.self_us} == pytest.approx(dict(own))


def test_unnamed_kernels_whose_place_does_not_line_up_stay_unmatched(bert_fp16, tmp_path):
    """Placement by execution order pairs a gap of unnamed kernels with the unnamed nodes between
    the same two named nodes only when their ops line up, in order; a gap that does not stays
    unmatched (the report then says why), the other gaps are placed."""
    import onnxruntime as ort

    from tagger.commands.nodetags import model_tags
    from tagger.commands.profiling.attribution import Attribution
    from tagger.commands.profiling.executed import (
        executed_graph,
        optimization_level,
        placed_by_order,
        session_options,
        unnamed_kernel,
    )

    trace = tmp_path / "trace.json"
    profile(bert_fp16, runs=1, warmup=0, trace=trace)
    events = json.loads(trace.read_text())
    kernels = sorted((e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")), key=lambda e: e["ts"])
    sequence = [(e["name"].removesuffix("_kernel_time"), e["args"]["op_name"]) for e in kernels]
    unnamed = [i for i, (name, op) in enumerate(sequence) if unnamed_kernel(name, op)]
    assert len(unnamed) == 22  # per layer: Softmax's ReduceMax, Sub, Exp, ReduceSum, Div; Gelu's Mul, Sqrt, Div, Erf, Sum, Mul

    proto = onnx.load(bert_fp16, load_external_data=False)
    options = ort.SessionOptions()
    session_options(options, optimization_level("all"), tmp_path, write=True)
    ort.InferenceSession(str(bert_fp16), options, providers=["CPUExecutionProvider"])
    graph = executed_graph(model_tags(proto, base_dir=bert_fp16.parent), [], proto, bert_fp16, tmp_path)
    names = [sequence[i][0] for i in unnamed]
    assert set(names).isdisjoint(graph.kernels)
    assert set(names) <= set(placed_by_order(graph, [sequence]).kernels)

    swapped = list(sequence)
    first, second = unnamed[1], unnamed[2]  # Sub and Exp of layer 0 in the wrong order
    swapped[first], swapped[second] = swapped[second], swapped[first]
    placed = placed_by_order(graph, [swapped]).kernels
    assert set(names[:5]).isdisjoint(placed) and set(names[5:]) <= set(placed)
    assert unnamed_kernel("ReduceMax_144", "ReduceMax") and not unnamed_kernel("ReduceMax_x", "ReduceMax")
    assert "without a name" in Attribution(graph, 1)._why("Sub_145", "CPUExecutionProvider", "Sub")
