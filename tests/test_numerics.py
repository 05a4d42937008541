"""`tagger numerics`: per module, the error a derived model adds and the error it receives.

Real exports of tiny transformers models, derived by hand (one Linear's weight perturbed) and by
real tools (onnxruntime's `quantize_dynamic`, onnxconverter-common's fp16), run in onnxruntime.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tagger import retag
from tagger.cli import main
from tagger.commands.numerics import numerics
from tagger.commands.numerics.partition import Piece, partition
from tagger.commands.numerics.stats import Accumulator
from tagger.model.keys import tags_of
from tagger.model.paths import is_within

LAYER0, LAYER1 = "m.encoder.layer.0", "m.encoder.layer.1"


def run(argv, capsys):
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def by_label(report) -> dict:
    return {m.piece.label: m for m in report.modules}


def perturbed(path, module, tmp_path, scale=0.05):
    """The model at `path` with the weight of the MatMul (or Gemm) tagged `module` perturbed by noise."""
    tagged = retag(path, tmp_path / "float.tagged.onnx").output
    model = onnx.load(tagged)
    weights = {t.name: t for t in model.graph.initializer}
    node = next(
        n for n in model.graph.node
        if n.op_type in ("MatMul", "Gemm") and tags_of({p.key: p.value for p in n.metadata_props})[0] == module
        and any(name in weights for name in n.input)
    )
    weight = weights[next(name for name in node.input if name in weights)]
    array = numpy_helper.to_array(weight)
    noise = np.random.default_rng(0).standard_normal(array.shape).astype(array.dtype) * scale * float(np.abs(array).max())
    weight.CopyFrom(numpy_helper.from_array(array + noise, weight.name))
    derived = tmp_path / "derived.onnx"
    onnx.save(model, derived)
    return tagged, derived


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_a_planted_error_comes_first_by_own_error_and_downstream_modules_only_receive_it(exporter, built_cases, tmp_path):
    case = built_cases[("bert", exporter, "none")]
    float_model, derived = perturbed(case.path, f"{LAYER0}.attention.output.dense", tmp_path)

    report = numerics(float_model, derived)
    found = by_label(report)
    assert report.depth == 4 and {LAYER0, LAYER1, "m.embeddings"} <= set(found)
    assert report.modules[0].piece == Piece(LAYER0)
    assert 0 < found[LAYER0].own.snr_db < 60 and found[LAYER0].own.cosine < 1.0
    assert math.isinf(found[LAYER1].own.snr_db)  # unchanged float: bit-identical on the float inputs
    assert found[LAYER1].received.snr_db == pytest.approx(found[LAYER0].output.snr_db)  # it receives layer 0's error
    assert math.isinf(found["m.embeddings"].output.snr_db)  # upstream of the error: untouched

    deeper = numerics(float_model, derived, depth=6)
    assert deeper.modules[0].piece == Piece(f"{LAYER0}.attention.output")
    other = by_label(deeper)[f"{LAYER0}.attention.self"]
    assert math.isinf(other.own.snr_db) and math.isinf(other.output.snr_db)  # runs before the perturbed dense


def test_a_module_excluded_from_quantize_dynamic_adds_no_error_while_the_quantized_layer_does(built_cases, tmp_path, capsys):
    from onnxruntime.quantization import quantize_dynamic

    case = built_cases[("bert", "torchscript", "none")]
    code, listed, _ = run(["nodes", case.path, "--module", LAYER0], capsys)
    assert code == 0
    quantized = tmp_path / "int8.onnx"
    quantize_dynamic(case.path, quantized, nodes_to_exclude=listed.split())

    found = by_label(numerics(case.path, quantized))
    assert math.isinf(found[LAYER0].own.snr_db)  # left in float: it adds nothing
    assert found[LAYER0].received.snr_db < 80  # the quantized embedding table feeds it error
    assert found[LAYER1].own.snr_db < 80 and found[LAYER1].own.cosine > 0.99  # int8 MatMuls: a small, real error


def test_exclude_worst_prints_the_worst_modules_float_nodes_for_the_quantizer(built_cases, tmp_path, capsys):
    case = built_cases[("bert", "torchscript", "none")]
    float_model, derived = perturbed(case.path, f"{LAYER1}.intermediate.dense", tmp_path)
    code, out, err = run(["numerics", float_model, derived, "--exclude_worst", 1], capsys)
    assert (code, err) == (0, "")
    _, listed, _ = run(["nodes", float_model, "--module", LAYER1], capsys)
    assert out.split() == listed.split() and out.split()


def test_fp16_conversion_of_a_vision_model_runs_with_fp16_inputs_and_reports_every_piece(built_cases, tmp_path):
    from onnxconverter_common import float16

    case = built_cases[("vit", "torchscript", "none")]
    model = float16.convert_float_to_float16(onnx.load(case.path), keep_io_types=False)
    derived = tmp_path / "fp16.onnx"
    onnx.save(model, derived)
    report = numerics(case.path, derived)
    assert report.modules and all(m.own is not None or m.note for m in report.modules)
    layers = [m for m in report.modules if m.piece.module.startswith("m.layers.")]
    assert len(layers) >= 2 and all(50 < m.own.snr_db < 100 for m in layers)  # fp16 rounding: small, never zero


def test_a_decoder_with_a_kv_cache_after_quantize_dynamic(pipeline_model, tmp_path):
    from onnxruntime.quantization import quantize_dynamic

    float_model = pipeline_model("llama_with_past")
    quantized = tmp_path / "int8.onnx"
    quantize_dynamic(float_model, quantized)
    report = numerics(float_model, quantized)
    layers = {m.piece.module: m for m in report.modules if m.piece.module.startswith("m.model.layers.")}
    assert len(layers) == 2 and all(m.own is not None and m.own.snr_db < 80 for m in layers.values())


def test_markdown_and_json_carry_every_module(built_cases, tmp_path, capsys):
    case = built_cases[("bert", "torchscript", "none")]
    float_model, derived = perturbed(case.path, f"{LAYER0}.attention.output.dense", tmp_path)
    code, out, _ = run(["numerics", float_model, derived, "--markdown"], capsys)
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| module")]
    assert code == 0 and len(rows) == 4 and all(row.count("|") == 9 for row in rows)
    code, out, _ = run(["numerics", float_model, derived, "--json"], capsys)
    import json

    data = json.loads(out)
    assert code == 0 and data["modules"][0]["module"] == LAYER0 and data["modules"][0]["own"]["snr_db"] < 60


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--depth", 0], "--depth must be an integer >= 1, got 0"),
        (["--inputs", "x.npz", "--dim", 2], "pass one of them"),
        (["--exclude_worst", "a"], "exclude_worst"),
    ],
    ids=["depth", "inputs-and-dim", "exclude-worst"],
)
def test_bad_options_exit_2_with_one_line(argv, message, built_cases, capsys):
    case = built_cases[("bert", "torchscript", "none")]
    code, out, err = run(["numerics", case.path, case.path, *argv], capsys)
    assert (code, out) == (2, "") and err.count("\n") == 1 and message in err


def test_a_missing_derived_model_exits_2_and_writes_nothing(built_cases, tmp_path, capsys):
    case = built_cases[("bert", "torchscript", "none")]
    code, out, err = run(["numerics", case.path, tmp_path / "absent.onnx"], capsys)
    assert (code, out) == (2, "") and "no such file" in err and not list(tmp_path.iterdir())


def test_snr_cosine_and_max_diff_of_a_known_error():
    total = Accumulator()
    want = np.ones(1000, dtype=np.float32)
    total.add(want, want + np.float32(0.1))  # noise power 0.01 against signal 1: 20 dB
    stats = total.stats()
    assert stats.snr_db == pytest.approx(20.0) and stats.cosine == pytest.approx(1.0) and stats.max_abs_diff == pytest.approx(0.1)
    same = Accumulator()
    same.add(want, want.copy())
    same.add(np.arange(3), np.arange(3))
    assert math.isinf(same.stats().snr_db) and same.stats().tensors == 1
    ints = Accumulator()
    ints.add(np.arange(3), np.arange(3) + 1)
    assert math.isnan(ints.stats().snr_db) and ints.stats().mismatched == 1


def test_pieces_cover_every_node_once_and_keep_shallow_branches_whole():
    paths = ["", "m.embeddings.word", "m.embeddings", "m.encoder.layer.0.attn", "m.encoder.layer.1", "m.encoder", "m.pooler.dense"]
    pieces = partition(paths, 4)
    assert sorted(i for nodes in pieces.values() for i in nodes) == list(range(len(paths)))
    assert pieces == {
        Piece("", own=True): [0],
        Piece("m.embeddings"): [1, 2],
        Piece("m.encoder.layer.0"): [3],
        Piece("m.encoder.layer.1"): [4],
        Piece("m.encoder", own=True): [5],
        Piece("m.pooler"): [6],
    }
    assert Piece("m.encoder", own=True).label == "m.encoder (own nodes)" and Piece("", own=True).label == "(root)"
    assert is_within("m.encoder.layer.0", "m.encoder")


def test_node_data_colours_the_float_models_nodes_by_their_modules_own_error(built_cases, tmp_path):
    import json

    case = built_cases[("bert", "torchscript", "none")]
    float_model, derived = perturbed(case.path, f"{LAYER0}.attention.output.dense", tmp_path)
    path = tmp_path / "numerics.node-data.json"
    report = numerics(float_model, derived, node_data=path)
    document = json.loads(path.read_text(encoding="utf-8"), parse_constant=lambda c: pytest.fail(f"{c} is no JSON"))
    ((graph_id, entry),) = document.items()
    model = onnx.load(float_model, load_external_data=False)
    assert graph_id == model.graph.name and entry["gradient"]
    names = {node.name: node for node in model.graph.node}
    assert set(entry["results"]) <= set(names)
    values = {name: result["value"] for name, result in entry["results"].items()}
    modules = {name: tags_of({p.key: p.value for p in names[name].metadata_props})[0] for name in values}
    worst = max(values.values())
    assert worst > 0 and {is_within(modules[name], LAYER0) for name, value in values.items() if value == worst} == {True}
    assert all(value == 0 for name, value in values.items() if is_within(modules[name], LAYER1))
    assert entry["modules"][LAYER0] == worst and any("node data" in note for note in report.notes)
    dacite = pytest.importorskip("dacite")
    builder = pytest.importorskip("model_explorer.node_data_builder")
    dacite.from_dict(builder.ModelNodeData, {"graphsData": document}, config=dacite.Config(check_types=True))


def test_weights_name_a_genai_builds_modules_after_the_checkpoint_in_both_models(tmp_path):
    """onnxruntime-genai's builder names its nodes in its own words (`layers.2/final_norm_layernorm`
    for `model.norm`); with `--weights` both models' pieces are the HF model's modules."""
    import json
    import shutil

    from onnxruntime.quantization import quantize_dynamic

    from tests.conftest import REPO_ROOT

    data = REPO_ROOT / "tests" / "data" / "genai"
    float_model = tmp_path / "model.onnx"
    shutil.copy(data / "llama-fp32-fused.onnx", float_model)
    shutil.copy(data / "config.json", tmp_path / "config.json")
    quantized = tmp_path / "int8.onnx"
    quantize_dynamic(float_model, quantized)
    tree = set(json.loads((data / "modules.json").read_text(encoding="utf-8")))

    sizes = {"kv_cache_dim": 16}  # the head size: genai_config.json says it, this fixture has none
    unchecked = {m.piece.module for m in numerics(float_model, quantized, dim=sizes).modules}
    checked = numerics(float_model, quantized, dim=sizes, weights=data / "model.safetensors")
    assert not unchecked <= tree | {""}  # the builder's own scope names
    assert {m.piece.module for m in checked.modules} <= tree | {""}
    layers = [m for m in checked.modules if m.piece.module.startswith("model.layers.")]
    assert layers and all(m.own is not None and m.own.snr_db < 80 for m in layers)
