"""Tag transfer (`--reference`, `--weights`) on real dynamo exports degraded by real tools.

The families and tools are `bench.transfer_cases` (tiny random-weight transformers models; the
checkpoint is the model's own `save_pretrained`). Built once per session.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from tagger import report, retag, tag_proto
from tagger.model.keys import MODULE_KEY, OWNED_KEYS, SOURCE_KEY
from tagger.model.modelio import load_model

REPO_ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("onnxslim", "ort_optimizer", "quantize_dynamic", "quantize_qdq", "gs_roundtrip")


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("transfer")


@pytest.fixture(scope="session")
def families(work_dir):
    """family name -> `bench.transfer_cases.Family`, exported on first use."""
    from bench import transfer_cases as tc

    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = tc.export_family(name, work_dir)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def degraded(families):
    from bench import transfer_cases as tc

    cache: dict = {}

    def get(family: str, tool: str):
        if (family, tool) not in cache:
            cache[family, tool] = tc.make_case(families(family), tool)
        return cache[family, tool]

    return get


def modules_of(model: onnx.ModelProto) -> list[str | None]:
    return [next((p.value for p in n.metadata_props if p.key == MODULE_KEY), None) for n in model.graph.node]


def sources_of(model: onnx.ModelProto) -> list[str | None]:
    return [next((p.value for p in n.metadata_props if p.key == SOURCE_KEY), None) for n in model.graph.node]


def exact(model: onnx.ModelProto, truth: dict[int, str]) -> float:
    modules = modules_of(model)
    return sum(modules[i] == module for i, module in truth.items()) / len(truth)


def tagged(case, **evidence) -> tuple[onnx.ModelProto, object]:
    model = load_model(case.path)
    summary = tag_proto(model, str(case.path), **evidence)
    return model, summary


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tagger", *map(str, args)], capture_output=True, text=True, cwd=REPO_ROOT)


@pytest.mark.parametrize("tool", TOOLS)
def test_reference_transfer_is_exact_on_llama_after_each_tool(degraded, tool):
    case = degraded("llama", tool)
    model, summary = tagged(case, reference=case.family.export)
    assert exact(model, case.truth) >= 0.995
    assert summary.by_source.get("reference", 0) > 0


@pytest.mark.parametrize("family", ["bert", "t5", "vit"])
@pytest.mark.parametrize("tool", TOOLS)
def test_reference_transfer_is_exact_on_every_family_after_each_tool(degraded, family, tool):
    case = degraded(family, tool)
    model, _ = tagged(case, reference=case.family.export)
    assert exact(model, case.truth) >= 0.995


def test_fused_node_takes_the_module_that_wrote_its_output(degraded):
    """onnxruntime's BiasGelu adds `intermediate.dense.bias` and applies the GELU, writing the
    GELU's output: the file's own evidence says the Linear's caller (`intermediate`: the bias it
    reads, and the activation the caller applies), the reference (whose metadata placed that
    output in the activation) refines it, and the report lists the overruled claim."""
    case = degraded("bert", "ort_optimizer")
    model, summary = tagged(case, reference=case.family.export)
    fused = [i for i, node in enumerate(model.graph.node) if node.op_type == "BiasGelu"]
    modules = modules_of(model)
    assert fused and all(modules[i] == case.truth[i] and modules[i].endswith("intermediate_act_fn") for i in fused)
    overruled = {c.node.position: c for c in summary.conflicts if c.node.graph == "main" and c.chosen_source == "reference"}
    assert all(
        overruled[i].rejected_source == "initializer" and overruled[i].rejected_module.endswith(".intermediate") for i in fused
    )
    alone, _ = tagged(case)
    assert all(modules_of(alone)[i].endswith(".intermediate") for i in fused)  # what the file alone says


def test_a_reference_is_accepted_after_the_optimizer_then_the_quantizer(tmp_path):
    """RemBERT exported with TorchScript, then onnxruntime's optimizer and `quantize_dynamic` (its
    pre-processing first): the optimizer fuses the attention (most connections between name-matched
    nodes change) and the quantizer adds a float scale beside each int8 weight, so fewer than half
    the float initializers were found in the export and the export was refused as "not the model
    this one was made from". A scalar is no weight: the reference is accepted and transfers."""
    import torch
    import transformers
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from onnxruntime.transformers.optimizer import optimize_model

    config = transformers.RemBertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100,
        max_position_embeddings=64, input_embedding_size=16, output_embedding_size=16,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.RemBertModel(config).eval()
    with torch.no_grad():  # trained-like weights: a fresh init's equal norms and zero biases prove nothing
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    ids, mask = torch.randint(1, 100, (2, 8)), torch.ones(2, 8, dtype=torch.long)
    export, optimized, prepared, quantized = (tmp_path / f"{n}.onnx" for n in ("export", "opt", "pre", "int8"))
    axes = {"b": 0, "s": 1}
    torch.onnx.export(
        model, (ids, mask), export, dynamo=False, input_names=["ids", "mask"], output_names=["out"], opset_version=17,
        dynamic_axes={name: {d: a for a, d in axes.items()} for name in ("ids", "mask", "out")},
    )  # fmt: skip
    optimize_model(str(export), model_type="bert", num_heads=2, hidden_size=32).save_model_to_file(str(optimized))
    quant_pre_process(str(optimized), str(prepared), skip_optimization=True)
    quantize_dynamic(prepared, quantized, weight_type=QuantType.QInt8)
    tagged_model = load_model(quantized)
    summary = tag_proto(tagged_model, str(quantized), reference=str(export))
    assert summary.by_source.get("reference", 0) > 0


@pytest.mark.parametrize("tool", ["onnxslim", "gs_roundtrip"])
def test_tied_weight_read_by_the_embeddings_takes_the_references_module(degraded, tool):
    """T5 ties its encoder's and decoder's embeddings: dynamo names the one initializer after one of
    them (`m.decoder.embed_tokens.weight`), which the encoder's `Gather` reads too. After a tool the
    reference's metadata, which overruled that name in the reference itself, places both."""
    case = degraded("t5", tool)
    model, _ = tagged(case, reference=case.family.export)
    gathers = [i for i, n in enumerate(model.graph.node) if n.op_type == "Gather" and n.input[0].endswith("embed_tokens.weight")]
    tied = [i for i in gathers if not model.graph.node[i].input[0].startswith(case.truth[i] + ".")]
    modules = modules_of(model)
    assert tied and all(modules[i] == case.truth[i] for i in gathers)
    alone, _ = tagged(case)
    assert any(modules_of(alone)[i] != case.truth[i] for i in tied)  # the file alone follows the name


def test_module_names_a_quantizer_derives_from_graph_outputs_yield_to_the_reference(tmp_path_factory):
    """Static QDQ makes a `DequantizeLinear` write a named graph output (`present.0.value`) and
    names it after it (`present.0.value_DequantizeLinear`), which reads as a module path; the
    reference's metadata placed that output in the attention, and outranks the name. The export is
    the real-pipeline benchmark's (`bench.family_exports`: named cache outputs, grouped-query LLaMA)."""
    from bench import graph_truth, pipeline_tools
    from bench.family_exports import export

    exported = export("llama", "dynamo", tmp_path_factory.mktemp("pipelines"))[0]
    path = pipeline_tools.degraded(exported, "quantize_static")
    original = onnx.load(exported.path, load_external_data=False)
    model = onnx.load(path, load_external_data=False)
    truth = graph_truth.carry(original, graph_truth.truth_of(original, exported.modules, "metadata"), model)
    renamed = [
        key
        for key in truth
        if model.graph.node[key[1]].op_type == "DequantizeLinear" and model.graph.node[key[1]].output[0].startswith("present.")
    ]
    tag_proto(model, str(path), reference=str(exported.path))
    tags = graph_truth.tags_of(model)
    assert renamed and all(tags[key] == truth[key] and tags[key].endswith("self_attn") for key in renamed)
    assert sum(tags.get(key) == module for key, module in truth.items()) >= 0.995 * len(truth)


def test_reference_beats_the_file_alone_where_names_are_gone(degraded):
    case = degraded("llama", "onnxslim")
    alone, _ = tagged(case)
    transferred, _ = tagged(case, reference=case.family.export)
    assert exact(alone, case.truth) < 0.5 < 0.995 <= exact(transferred, case.truth)


def test_file_evidence_wins_over_the_reference_and_disagreements_are_conflicts(degraded, tmp_path):
    """A reference whose tags disagree with the file's own evidence: the file wins, the report lists it."""
    case = degraded("bert", "quantize_dynamic")
    reference = load_model(case.family.export)
    shutil.copy(case.family.export.parent / "model.onnx.data", tmp_path / "model.onnx.data")
    for node in reference.graph.node:  # an earlier retag that put everything in the root
        node.metadata_props.add(key=MODULE_KEY, value="")
        node.metadata_props.add(key=SOURCE_KEY, value="tag")
    onnx.save(reference, tmp_path / "model.onnx")
    model, summary = tagged(case, reference=tmp_path / "model.onnx")
    alone, _ = tagged(case)
    own = [i for i, s in enumerate(sources_of(alone)) if s not in ("inherited", "fallback")]
    assert own and all(modules_of(model)[i] == modules_of(alone)[i] for i in own)
    assert any(c.rejected_source == "reference" for c in summary.conflicts)


def test_wrong_reference_is_refused_in_one_line(degraded, tmp_path):
    case = degraded("llama", "onnxslim")
    other = degraded("bert", "onnxslim").family.export
    output = tmp_path / "out.onnx"
    result = run_cli("retag", case.path, "--output", output, "--reference", other)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "not the model this one was made from" in result.stderr
    assert not output.exists()


@pytest.mark.parametrize("family", ["bert", "t5", "vit"])
def test_every_other_family_is_refused_as_a_reference(degraded, families, family):
    from tagger.errors import InputError

    case = degraded("llama", "quantize_qdq")
    with pytest.raises(InputError, match="not the model"):
        tagged(case, reference=families(family).export)


def test_reference_with_external_data_is_hashed_from_its_file_not_loaded(degraded):
    from tagger.tensorbytes.stored import onnx_initializers

    case = degraded("llama", "onnxslim")
    reference = load_model(case.family.export)
    external = [t for t in reference.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external and not any(t.raw_data for t in external)
    stored = {t.name: t for t in onnx_initializers(reference, case.family.export.parent)}
    full = onnx.load(case.family.export)
    for tensor in full.graph.initializer:
        if tensor.name in stored:
            expected = onnx.numpy_helper.to_array(tensor).reshape(-1)
            chunks = list(stored[tensor.name].chunks(7))
            assert max(len(c) for c in chunks) <= 7
            assert np.array_equal(np.concatenate(chunks), expected)


def test_weights_name_the_folded_projections(degraded):
    case = degraded("llama", "onnxslim")
    alone, _ = tagged(case)
    weighted, summary = tagged(case, weights=case.family.checkpoint)
    assert exact(weighted, case.truth) > exact(alone, case.truth)
    projections = [i for i, m in case.truth.items() if m.endswith(("q_proj", "k_proj", "v_proj", "o_proj", "lm_head"))]
    assert projections and all(modules_of(weighted)[i] == case.truth[i] for i in projections)
    assert any("initializers of the model hold tensors" in note for note in summary.notes)


def test_weights_match_quantized_projections_and_their_scales(degraded):
    """quantize_dynamic stores the folded projections as int8 (`val_55_quantized`, `val_55_scale`):
    matched by correlation, the rescaling nodes around them follow."""
    case = degraded("llama", "quantize_dynamic")
    alone, _ = tagged(case)
    weighted, _ = tagged(case, weights=case.family.checkpoint)
    projections = [i for i, m in case.truth.items() if m.endswith(("q_proj", "k_proj", "v_proj", "o_proj", "lm_head"))]
    assert projections and all(modules_of(weighted)[i] == case.truth[i] for i in projections)
    assert not any(modules_of(alone)[i] == case.truth[i] for i in projections)
    integer = [i for i, n in enumerate(weighted.graph.node) if n.op_type == "MatMulInteger"]
    assert integer and all(sources_of(weighted)[i] == "initializer" for i in integer)


def test_weights_map_checkpoint_names_to_the_exported_modules(degraded):
    """transformers 5 saves ViT under its original names; the file's own names teach the mapping."""
    case = degraded("vit", "gs_roundtrip")
    alone, _ = tagged(case)
    weighted, _ = tagged(case, weights=case.family.checkpoint)
    assert exact(weighted, case.truth) >= exact(alone, case.truth)
    assert set(modules_of(weighted)) <= case.family.modules  # no checkpoint-only name like `…attention.attention.query`


def test_sharded_checkpoint_gives_the_same_tags(degraded, families, tmp_path):
    from bench import transfer_cases as tc

    case = degraded("llama", "ort_optimizer")
    inner, _, _ = tc.build("llama")
    inner.save_pretrained(tmp_path / "shards", max_shard_size="20KB")
    assert len(list((tmp_path / "shards").glob("*.safetensors"))) > 1
    assert list((tmp_path / "shards").glob("*.safetensors.index.json"))
    single, _ = tagged(case, weights=case.family.checkpoint)
    sharded, _ = tagged(case, weights=tmp_path / "shards")
    assert modules_of(sharded) == modules_of(single)


def test_bfloat16_and_torch_checkpoints_match_by_cast(degraded, tmp_path):
    import torch

    from bench import transfer_cases as tc

    case = degraded("llama", "onnxslim")
    inner, _, _ = tc.build("llama")
    torch.save({k: v.to(torch.float16) for k, v in inner.state_dict().items()}, tmp_path / "half.bin")
    inner.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    single, _ = tagged(case, weights=case.family.checkpoint)
    assert modules_of(tagged(case, weights=tmp_path / "bf16")[0]) == modules_of(single)
    assert modules_of(tagged(case, weights=tmp_path / "half.bin")[0]) == modules_of(single)


def test_torch_checkpoint_without_torch_is_one_error_line(degraded, tmp_path):
    import torch

    case = degraded("llama", "onnxslim")
    torch.save({"w": torch.ones(2, 2)}, tmp_path / "state.pt")
    code = "import sys; sys.modules['torch'] = None; from tagger.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, "report", str(case.path), "--weights", str(tmp_path / "state.pt")],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "needs torch" in result.stderr


def test_checkpoint_that_fits_nothing_changes_nothing_and_says_so(degraded, families):
    case = degraded("llama", "onnxslim")
    alone, _ = tagged(case)
    weighted, summary = tagged(case, weights=families("bert").checkpoint)
    assert modules_of(weighted) == modules_of(alone)
    assert any("fits an initializer of the model; no tag changed" in note for note in summary.notes)


def test_cli_flags_on_retag_report_and_diff(degraded, tmp_path):
    case = degraded("llama", "onnxslim")
    output = tmp_path / "tagged.onnx"
    result = run_cli("retag", case.path, "--output", output, "--reference", case.family.export, "--weights", case.family.checkpoint)
    assert result.returncode == 0, result.stderr
    assert exact(onnx.load(output, load_external_data=False), case.truth) >= 0.995
    result = run_cli("report", case.path, "--json", "--weights", case.family.checkpoint)
    assert result.returncode == 0 and '"initializer"' in result.stdout
    result = run_cli("diff", case.family.export, case.path, "--reference", case.family.export)
    assert result.returncode == 0 and "0 changed module" in result.stdout


def test_inference_heavy_report_says_what_would_fix_it(degraded):
    case = degraded("llama", "onnxslim")
    advice = "placed by inference only; pass reference or weights, or export with shim.export"  # `--reference` on the CLI
    assert any(advice in note for note in report(case.path).notes)
    assert not any(advice in note for note in report(case.path, reference=case.family.export).notes)
    with_weights = [note for note in report(case.path, weights=case.family.checkpoint).notes if "inference only" in note]
    assert with_weights and all(
        "pass reference, or export with shim.export" in note for note in with_weights
    )  # never "pass weights" again


def test_transfer_is_lossless(degraded, tmp_path):
    """Only the three hierarchy keys differ from the input."""
    case = degraded("t5", "quantize_dynamic")
    output = tmp_path / "out.onnx"
    retag(case.path, output, reference=case.family.export, weights=case.family.checkpoint)
    before, after = onnx.load(case.path, load_external_data=False), onnx.load(output, load_external_data=False)
    for node in after.graph.node:
        kept = [(p.key, p.value) for p in node.metadata_props if p.key not in OWNED_KEYS]
        del node.metadata_props[:]
        for key, value in kept:
            node.metadata_props.add(key=key, value=value)
    assert after.SerializeToString() == before.SerializeToString()


@pytest.mark.parametrize(
    "flag, make, message",
    [
        ("--reference", lambda d: d / "missing.onnx", "no such file"),
        ("--weights", lambda d: d / "missing.safetensors", "no such checkpoint"),
        ("--weights", lambda d: d, "no checkpoint in directory"),
        ("--weights", lambda d: (d / "bad.safetensors").write_bytes(b"\xff" * 12) and d / "bad.safetensors", "safetensors"),
        ("--weights", lambda d: (d / "w.txt").write_text("x") and d / "w.txt", "not a checkpoint"),
    ],
)
def test_bad_reference_or_checkpoint_is_one_line_exit_2(degraded, tmp_path, flag, make, message):
    case = degraded("bert", "onnxslim")
    output = tmp_path / "out" / "tagged.onnx"
    output.parent.mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("retag", case.path, "--output", output, flag, make(empty))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert not output.exists()


def test_tied_weights_are_decided_by_the_graph(tmp_path):
    """A LLaMA with tied embeddings: dynamo names the shared weight after `lm_head` and folds the
    head's transposed copy into `val_N`; a state dict names the tensor twice. The head's MatMul
    must get `lm_head`, not `embed_tokens`."""
    import onnxslim
    import torch
    import transformers as tf

    from bench import cases
    from bench.transfer_cases import _CausalLM

    cfg = tf.LlamaConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=64, vocab_size=100, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    inner = tf.LlamaForCausalLM(cfg).eval()
    wrapper = _CausalLM(inner)
    inputs = (torch.randint(0, 100, (1, 4)), torch.ones(1, 12, dtype=torch.long), *[torch.randn(1, 2, 8, 16) for _ in range(2)])
    with cases._quiet():
        torch.onnx.export(wrapper, inputs, str(tmp_path / "model.onnx"), dynamo=True)
    torch.save(inner.state_dict(), tmp_path / "state.bin")
    onnx.save(onnxslim.slim(onnx.load(tmp_path / "model.onnx")), tmp_path / "slim.onnx")
    model = load_model(tmp_path / "slim.onnx")
    tag_proto(model, str(tmp_path / "slim.onnx"), weights=tmp_path / "state.bin")
    reference = onnx.load(tmp_path / "model.onnx", load_external_data=False)
    truth = cases.carry_truth(reference, cases.truth_of_export(reference, "dynamo", {n for n, _ in wrapper.named_modules()}), model)
    heads = [i for i, module in truth.items() if module == "m.lm_head"]
    assert heads and all(modules_of(model)[i] == "m.lm_head" for i in heads)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_reference_transfer_works_from_weights_and_structure_alone(families, family, tmp_path):
    """Every name and all metadata gone (only initializer names and the graph left): the weights
    anchor their nodes, structure and fusion place the rest."""
    from bench import cases

    exported = families(family)
    original = onnx.load(exported.export, load_external_data=False)
    truth = cases.truth_of_export(original, "dynamo", exported.modules)
    path = tmp_path / "stripped.onnx"
    onnx.save(cases.strip_all(original), path)
    shutil.copy(exported.export.parent / "model.onnx.data", tmp_path / "model.onnx.data")
    model = load_model(path)
    summary = tag_proto(model, str(path), reference=exported.export)
    assert exact(model, truth) >= 0.995
    assert any("structure" in note for note in summary.notes)
