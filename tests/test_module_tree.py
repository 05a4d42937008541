"""A module name is a claim: checked against the model's true module tree wherever one is known.

The tree comes from `--modules FILE` (written by `shim.write_modules`), the shim's
`hierarchy.modules` map, or the reference's map (`--reference`). Exporter placeholders (torch's
dynamic-shape `sym_size` nodes) are no modules even without a tree.
"""

from __future__ import annotations

import json
import shutil

import onnx
import pytest

from tagger import report, retag, tag_proto
from tagger.cli import main
from tagger.errors import InputError
from tagger.transfer.module_tree import read_module_tree
from tests.conftest import REPO_ROOT
from tests.graphs import chain_model, tags_of

# a converter's own vocabulary (onnxruntime-genai's builder) for a 2-layer LLaMA-like model
BUILDER_NAMES = [
    "/model/embed_tokens/Gather",
    "/model/layers.0/input_layernorm/Mul",
    "/model/layers.0/attn/qkv_proj/MatMul",
    "/model/layers.0/attn/o_proj/MatMul",
    "/model/layers.1/input_layernorm/Mul",
    "/model/layers.1/attn/qkv_proj/MatMul",
    "/model/layers.2/final_norm_layernorm/Mul",
    "/lm_head/MatMul",
]
TREE = [
    "",
    "model",
    "model.embed_tokens",
    "model.layers",
    *[
        f"model.layers.{i}{leaf}"
        for i in range(2)
        for leaf in ("", ".input_layernorm", ".self_attn", ".self_attn.q_proj", ".self_attn.o_proj")
    ],
    "model.norm",
    "lm_head",
]


def builder_model() -> onnx.ModelProto:
    return chain_model(BUILDER_NAMES)


def test_without_a_tree_a_converters_names_are_kept_and_the_report_says_unchecked():
    model = builder_model()
    result = tag_proto(model)
    modules = [t["hierarchy.module"] for t in tags_of(model)]
    assert "model.layers.0.attn.qkv_proj" in modules  # the file's own vocabulary, as it is
    assert any("not checked against the model's module tree" in note for note in result.notes)


@pytest.mark.parametrize("form", ["text", "json-list", "json-map"])
def test_modules_file_keeps_every_written_module_inside_the_tree(tmp_path, form):
    path = tmp_path / "modules.txt"
    if form == "text":
        path.write_text("\n".join(TREE) + "\n", encoding="utf-8")
    elif form == "json-list":
        path.write_text(json.dumps(TREE), encoding="utf-8")
    else:
        path.write_text(json.dumps({p: f"C{i}" for i, p in enumerate(TREE)}), encoding="utf-8")
    model = builder_model()
    result = tag_proto(model, modules=path)
    modules = [t["hierarchy.module"] for t in tags_of(model)]
    assert set(modules) <= set(TREE), set(modules) - set(TREE)
    # what the tree confirms is still direct evidence
    assert modules[0] == "model.embed_tokens" and modules[1] == "model.layers.0.input_layernorm"
    assert tags_of(model)[-1] == {
        "hierarchy.module": "lm_head",
        "hierarchy.tag": tags_of(model)[-1]["hierarchy.tag"],
        "hierarchy.source": "name",
    }
    # the builder's `attn` and the norm it files under a layer that does not exist are not modules
    assert tags_of(model)[2]["hierarchy.source"] == "inherited"
    assert tags_of(model)[6]["hierarchy.source"] == "inherited"
    note = next(n for n in result.notes if "checked against the modules file" in n)
    assert "'model.layers.0.attn.qkv_proj'" in note or "'model.layers.2.final_norm_layernorm'" in note


def test_metadata_naming_no_module_of_the_shims_map_is_not_written():
    model = chain_model(["", ""])
    model.metadata_props.add(key="hierarchy.modules", value=json.dumps({"": "Net", "enc": "Enc", "enc.a": "A"}))
    model.graph.node[0].metadata_props.add(key="pkg.torch.onnx.name_scopes", value="['', 'enc', 'enc.a', 'relu']")
    model.graph.node[1].metadata_props.add(key="pkg.torch.onnx.name_scopes", value="['', 'enc', 'enc.ghost', 'relu_1']")
    result = tag_proto(model)
    tags = tags_of(model)
    assert tags[0]["hierarchy.module"] == "enc.a"
    assert tags[1]["hierarchy.module"] in ("", "enc", "enc.a") and tags[1]["hierarchy.source"] == "inherited"
    assert any("hierarchy.modules map" in note and "'enc.ghost'" in note for note in result.notes)


def test_a_module_stack_not_starting_at_the_root_is_no_evidence():
    """torch 2.13's placeholder on dynamic-shape `sym_size` nodes is no module."""
    model = chain_model(["", ""])
    hook = "['_empty_nn_module_stack_from_metadata_hook', 'sym_size_int_12']"
    model.graph.node[0].metadata_props.add(key="pkg.torch.onnx.name_scopes", value=hook)
    model.graph.node[1].metadata_props.add(key="pkg.torch.onnx.name_scopes", value="['', 'enc', 'relu']")
    tag_proto(model)
    tags = tags_of(model)
    assert tags[0]["hierarchy.source"] != "metadata"
    assert not tags[0]["hierarchy.module"].startswith("_empty")


def test_read_module_tree_refuses_what_is_no_tree(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": 3}', encoding="utf-8")
    with pytest.raises(InputError, match="JSON object of path -> class name"):
        read_module_tree(bad)
    with pytest.raises(InputError, match="does not exist"):
        read_module_tree(tmp_path / "missing.json")
    text = tmp_path / "tree.txt"
    text.write_text("a.b\n", encoding="utf-8")
    assert read_module_tree(text) == {"a.b": None, "": None}


def test_cli_bad_modules_file_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    shutil.copy(REPO_ROOT / "data" / "bert-tiny.onnx", model)
    before = model.read_bytes()
    (tmp_path / "bad.json").write_text("[1, 2]", encoding="utf-8")
    code = main(["retag", str(model), "--modules", str(tmp_path / "bad.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "modules file" in err
    assert model.read_bytes() == before and not (tmp_path / "m.tagged.onnx").exists()


# --------------------------------------------------------------------------------------------
# real exports


@pytest.fixture(scope="module")
def dynamic_bert(tmp_path_factory):
    """A dynamo export with dynamic batch and sequence sizes, as users export."""
    from bench import cases

    return cases.export("bert", "dynamo", tmp_path_factory.mktemp("dynamic"), shapes="dynamic")


def _written_modules(path) -> set[str]:
    model = onnx.load(path, load_external_data=False)
    return {t["hierarchy.module"] for t in tags_of(model)}


def test_dynamic_shape_export_invents_no_module(dynamic_bert, tmp_path):
    from bench import cases

    out = tmp_path / "tagged.onnx"
    retag(dynamic_bert, out)
    assert _written_modules(out) <= cases.module_paths("bert")


def test_dynamic_shape_export_through_fp16_quantization_and_reference_invents_no_module(dynamic_bert, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from bench import cases

    full = onnx.load(dynamic_bert)
    half = tmp_path / "fp16.onnx"
    onnx.save(convert_float_to_float16(full), half)
    quantized = tmp_path / "int8.onnx"
    quantize_dynamic(str(dynamic_bert), str(quantized), weight_type=QuantType.QInt8)
    for derived in (half, quantized):
        out = tmp_path / f"{derived.stem}.tagged.onnx"
        retag(derived, out, reference=dynamic_bert)
        assert _written_modules(out) <= cases.module_paths("bert"), derived.name


def test_write_modules_then_retag_a_plain_export_checks_every_name(tmp_path):
    """The shim's one-liner for a file the shim did not export: the report says it checked."""
    import torch

    import shim
    from bench import cases

    wrapper, inputs = cases.build_model("bert")
    modules = tmp_path / "modules.json"
    shim.write_modules(wrapper, str(modules))
    path = tmp_path / "plain.onnx"
    with cases._quiet():
        torch.onnx.export(wrapper, inputs, str(path), dynamo=False)
    result = report(path, modules=modules)
    assert any(note == "module names checked against the modules file" for note in result.notes), result.notes
    out = tmp_path / "plain.tagged.onnx"
    retag(path, out, modules=modules)
    assert _written_modules(out) <= cases.module_paths("bert")


def test_a_list_entrys_weight_read_twice_is_told_apart_by_the_tree_and_said_to_be_open_without_it(tmp_path):
    """Equal clones merged into the first entry's names (a fresh nn.TransformerEncoder) read like
    one module called twice: the report says so without the tree, and the tree tells them apart."""
    from tests.test_infer import _two_layers_reading_one_weight

    path = tmp_path / "clones.onnx"
    onnx.save(_two_layers_reading_one_weight(), path)
    without = report(path)
    assert any("read more than once" in note for note in without.notes)
    tree = tmp_path / "modules.txt"
    tree.write_text("\n".join(["enc", "enc.layers", "enc.layers.0", "enc.layers.0.lin", "enc.layers.1", "enc.layers.1.lin"]))
    retag(path, output=tmp_path / "tagged.onnx", modules=tree)
    tags = [t["hierarchy.module"] for t in tags_of(onnx.load(tmp_path / "tagged.onnx"))]
    assert (tags[0], tags[2]) == ("enc.layers.0.lin", "enc.layers.1.lin")
    assert not any("read more than once" in note for note in report(path, modules=tree).notes)


def test_the_trees_class_names_show_an_attention_whose_own_parameters_a_tool_folded_away(tmp_path):
    """nn.MultiheadAttention applies its out_proj's weights itself; onnxslim folds the in_proj_bias
    that would show it. The shim's map names the class: out_proj's Gemm is the attention's."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(1).normal(size=(4, 4)).astype(np.float32), "m.attn.out_proj.weight")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "val_1"], ["q"]),
            helper.make_node("Gemm", ["q", "m.attn.out_proj.weight"], ["y"], transB=1),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [weight, numpy_helper.from_array(np.ones((4, 4), dtype=np.float32), "val_1")],
    )
    path = tmp_path / "mha.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    tree = tmp_path / "modules.json"
    classes = {"": "Wrapper", "m": "Encoder", "m.attn": "MultiheadAttention", "m.attn.out_proj": "NonDynamicallyQuantizableLinear"}
    tree.write_text(json.dumps(classes))
    retag(path, output=tmp_path / "with_tree.onnx", modules=tree)
    assert tags_of(onnx.load(tmp_path / "with_tree.onnx"))[1]["hierarchy.module"] == "m.attn"
    retag(path, output=tmp_path / "without.onnx")
    assert tags_of(onnx.load(tmp_path / "without.onnx"))[1]["hierarchy.module"] == "m.attn.out_proj"


def test_the_tree_a_retag_checked_against_is_recorded_and_a_files_own_map_is_kept(tmp_path):
    """`--modules` on a file without a map: the tagged file records the tree, so reading it back
    without the file checks the same names. A file with its own map (the shim's) keeps it."""
    modules = tmp_path / "modules.json"
    modules.write_text(json.dumps(TREE), encoding="utf-8")
    source = tmp_path / "builder.onnx"
    onnx.save(builder_model(), source)
    out = tmp_path / "tagged.onnx"
    retag(source, output=out, modules=modules)
    recorded = {p.key: p.value for p in onnx.load(out).metadata_props}["hierarchy.modules"]
    assert set(json.loads(recorded)) == set(TREE)
    again = report(out)
    assert set(again.modules) <= set(TREE)
    assert any(note.startswith("module names checked against the model's hierarchy.modules map") for note in again.notes)
    own = builder_model()
    entry = own.metadata_props.add()
    entry.key, entry.value = "hierarchy.modules", json.dumps({path: "C" for path in TREE + ["model.layers.0.attn"]})
    onnx.save(own, source)
    retag(source, output=out, modules=modules, force=True)
    kept = {p.key: p.value for p in onnx.load(out).metadata_props}["hierarchy.modules"]
    assert kept == entry.value
