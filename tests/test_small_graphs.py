"""Evidence sources, inference, structure and fallback on hand-built graphs."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.baselines import BASELINES
from tagger import tag_proto
from tagger.pipeline.tagging import tag_model
from tests.graphs import chain_model, function_model, if_model, tags_of


def test_scoped_node_names_are_direct_evidence():
    model = chain_model(["/enc/a/Relu", "/enc/b/Relu"])
    tag_proto(model)
    assert [t["hierarchy.module"] for t in tags_of(model)] == ["enc.a", "enc.b"]
    assert {t["hierarchy.source"] for t in tags_of(model)} == {"name"}


def test_scoped_output_tensor_names_tag_nodes_whose_names_are_gone():
    model = chain_model(["", ""])
    model.graph.node[0].output[0] = "/enc/a/Relu_output_0"
    model.graph.node[1].input[0] = "/enc/a/Relu_output_0"
    tag_proto(model)
    assert tags_of(model)[0] == {"hierarchy.module": "enc.a", "hierarchy.tag": "/enc/a", "hierarchy.source": "tensor"}


def test_parameter_names_tag_the_nodes_that_consume_them():
    model = chain_model(["", ""], {1: "encoder.layer.0.dense.bias"})
    tag_proto(model)
    assert tags_of(model)[1]["hierarchy.module"] == "encoder.layer.0.dense"
    assert tags_of(model)[1]["hierarchy.source"] == "initializer"


def test_exporter_temporaries_are_not_parameter_evidence():
    model = chain_model(["", ""], {1: "onnx::Add_352"})
    report = tag_proto(model)
    assert report.fallback == 2 and report.direct == 0


def test_an_index_buffer_read_by_its_owners_caller_is_no_evidence_of_its_owner():
    """ConvBertModel slices its embeddings' `token_type_ids` buffer (INT64) to build their default
    argument, in its own forward: an integer buffer holds nothing learned, and reading it applies
    no weight, so the slice is not stated in the embeddings (before: stated, with the Expand
    after it, in every dynamic-shape dynamo ConvBERT row)."""
    inits = [
        numpy_helper.from_array(np.zeros((1, 8), dtype=np.int64), "m.embeddings.token_type_ids"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
        numpy_helper.from_array(np.ones((2, 4), dtype=np.float32), "m.embeddings.token_type_embeddings.weight"),
        numpy_helper.from_array(np.ones(4, dtype=np.float32), "m.encoder.dense.bias"),
    ]
    nodes = [
        helper.make_node("Slice", ["m.embeddings.token_type_ids", "zero", "n", "one"], ["types"]),
        helper.make_node("Gather", ["m.embeddings.token_type_embeddings.weight", "types"], ["e"]),
        helper.make_node("Add", ["e", "m.encoder.dense.bias"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("n", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    result = tag_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert result.assignments[1].module == "m.embeddings.token_type_embeddings"
    slice_ = result.assignments[0]
    assert slice_.source != "initializer"
    assert not (slice_.module.startswith("m.embeddings") and result.bounds[0].certain)


def test_dynamo_metadata_beats_names_and_the_conflict_is_reported():
    model = chain_model(["/enc/wrong/Relu", "/enc/b/Relu"])
    model.graph.node[0].metadata_props.add(key="pkg.torch.onnx.name_scopes", value="['', 'enc', 'enc.a', 'relu']")
    report = tag_proto(model)
    assert tags_of(model)[0]["hierarchy.module"] == "enc.a"
    assert tags_of(model)[0]["hierarchy.source"] == "metadata"
    assert len(report.conflicts) == 1
    assert report.conflicts[0].rejected_module == "enc.wrong"


def test_untagged_node_between_two_children_inherits_their_parent():
    model = chain_model(["/enc/a/Relu", "", "/enc/b/Relu"])
    report = tag_proto(model)
    assert tags_of(model)[1]["hierarchy.module"] == "enc"
    assert tags_of(model)[1]["hierarchy.source"] == "inherited"
    assert report.inherited == 1 and report.fallback == 0


def test_model_without_any_evidence_falls_back_to_root_and_says_so():
    model = chain_model(["Relu_1", "Relu_2"])
    report = tag_proto(model)
    assert {t["hierarchy.module"] for t in tags_of(model)} == {""}
    assert report.fallback == 2 and len(report.fallback_nodes) == 2
    assert "no scope evidence" in report.summary()


def test_nodes_inside_if_bodies_are_tagged_from_their_own_names_or_their_owner():
    model = if_model()
    tag_proto(model)
    if_node = model.graph.node[3]
    bodies = {a.name: a.g for a in if_node.attribute}
    then_tags = tags_of(model, bodies["then_branch"].node)
    else_tags = tags_of(model, bodies["else_branch"].node)
    assert then_tags[0]["hierarchy.module"] == "block.then"
    assert else_tags[0]["hierarchy.source"] == "subgraph"
    assert else_tags[0]["hierarchy.module"] == tags_of(model)[3]["hierarchy.module"] == "block"
    onnx.checker.check_model(model, full_check=True)


def _owner_of_named_bodies(context: list[str]) -> onnx.ModelProto:
    """`If` between nodes named `context` (before, after), each branch holding one named node."""
    model = if_model()
    owner = model.graph.node[3]
    for attribute, name in zip(sorted(owner.attribute, key=lambda a: a.name), ["/blk/p/Neg", "/blk/q/Relu"], strict=True):
        attribute.g.node[0].name = name
    model.graph.node[0].name = context[0]
    return model


def test_an_if_without_evidence_takes_the_common_module_of_its_bodies():
    model = _owner_of_named_bodies([""])
    tag_proto(model)
    assert tags_of(model)[3] == {"hierarchy.module": "blk", "hierarchy.tag": "/blk", "hierarchy.source": "subgraph"}
    assert [t["hierarchy.module"] for t in tags_of(model)[:3]] == ["blk"] * 3, "the condition is computed where it is used"


def test_an_if_inferred_beside_its_bodies_is_lifted_to_their_common_ancestor():
    model = _owner_of_named_bodies(["/enc/x/ReduceSum"])
    tag_proto(model)
    assert tags_of(model)[3]["hierarchy.module"] == ""
    assert tags_of(model)[3]["hierarchy.source"] == "inherited"


def test_function_bodies_take_the_common_module_of_their_call_sites():
    model = function_model()
    tag_proto(model)
    body = tags_of(model, model.functions[0].node)
    assert {t["hierarchy.module"] for t in body} == {"encoder.layer"}
    assert {t["hierarchy.source"] for t in body} == {"function"}
    onnx.checker.check_model(model, full_check=True)


def test_duplicate_and_empty_names_do_not_confuse_positions():
    model = chain_model(["/a/Relu", "/a/Relu", "", "/b/Relu"])
    tag_proto(model)
    assert [t["hierarchy.module"] for t in tags_of(model)] == ["a", "a", "", "b"]


@pytest.mark.parametrize("infer", list(BASELINES.values()), ids=list(BASELINES))
def test_the_tagger_and_every_baseline_tag_every_node(infer):
    model = chain_model(["/enc/a/Relu", "", "", "/enc/b/Relu", ""])
    result = tag_model(model, infer)
    assert len(result.assignments) == 5
    assert all(a.source for a in result.assignments)


def test_names_whose_first_scope_is_no_known_module_are_not_evidence():
    model = chain_model(["node_MatMul_34/MatMulAddFusion", "/enc/b/Add"], {1: "enc.b.bias"})
    tag_proto(model)
    assert tags_of(model)[0]["hierarchy.source"] != "name"


def test_a_tool_suffix_after_an_op_name_is_no_module():
    model = chain_model(["/enc/a/Add/MatMulAddFusion", "/enc/b/Mul_1/SimplifiedLayerNormFusion/"], {1: "enc.c.bias"})
    tag_proto(model)
    assert [t["hierarchy.module"] for t in tags_of(model)] == ["enc.a", "enc.b"]


def test_a_module_known_from_parameters_stays_a_module_when_named_like_an_op():
    model = chain_model(["/LSTM/Add", "/enc/Relu"], {0: "LSTM.bias"})
    tag_proto(model)
    assert tags_of(model)[0]["hierarchy.module"] == "LSTM"


def test_a_torchscript_top_level_scope_no_parameter_shows_is_kept():
    model = chain_model(["/enc/a/Add", "/lm_head/Relu"], {0: "enc.a.bias"})
    tag_proto(model)
    assert tags_of(model)[1]["hierarchy.module"] == "lm_head"


def test_a_scope_called_past_an_uncalled_container_is_the_known_module_it_names():
    model = chain_model(["/decoder/a/Add", "/decoder/Relu"], {0: "model.decoder.a.bias"})
    tag_proto(model)
    assert [t["hierarchy.module"] for t in tags_of(model)] == ["model.decoder.a", "model.decoder"]


def test_a_quantizer_scale_named_after_a_tensor_is_no_parameter():
    model = chain_model(["", "/enc/Relu"], {0: "input.1_scale"})
    tag_proto(model)
    assert tags_of(model)[0]["hierarchy.module"] != "input"


def _qdq_around_an_add(parameter: str) -> onnx.ModelProto:
    """Static QDQ as onnxruntime writes it around one `Add` of a decoder step: the KV cache input
    `past_key_values.0.key` and the output `present.0.key` get `<tensor>_scale` / `_zero_point`
    initializers and `<tensor>_QuantizeLinear` / `_DequantizeLinear` nodes."""
    past, present = "past_key_values.0.key", "present.0.key"
    scales = [numpy_helper.from_array(np.array(0.1, np.float32), f"{t}_scale") for t in (past, present)]
    zeros = [numpy_helper.from_array(np.array(0, np.uint8), f"{t}_zero_point") for t in (past, present)]
    bias = numpy_helper.from_array(np.full((4,), 0.5, np.float32), parameter)
    q = [f"{past}_scale", f"{past}_zero_point"]
    r = [f"{present}_scale", f"{present}_zero_point"]
    nodes = [
        helper.make_node("QuantizeLinear", [past, *q], [f"{past}_QuantizeLinear_Output"], name=f"{past}_QuantizeLinear"),
        helper.make_node("DequantizeLinear", [f"{past}_QuantizeLinear_Output", *q], ["k"], name=f"{past}_DequantizeLinear"),
        helper.make_node("Add", ["k", parameter], [f"{present}_QuantizeLinear_Input"], name="/layers.0/self_attn/Add"),
        helper.make_node("QuantizeLinear", [f"{present}_QuantizeLinear_Input", *r], ["q"], name=f"{present}_QuantizeLinear"),
        helper.make_node("DequantizeLinear", ["q", *r], [present], name=f"{present}_DequantizeLinear"),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info(past, TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info(present, TensorProto.FLOAT, [4])],
        [*scales, *zeros, bias],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_initializers_named_after_a_graph_input_or_a_node_output_are_no_parameters():
    model = _qdq_around_an_add("layers.0.self_attn.bias")
    tag_proto(model)
    tags = [t["hierarchy.module"] for t in tags_of(model)]
    assert tags[2] == "layers.0.self_attn"
    assert not {t for t in tags if t.startswith(("past_key_values", "present"))}, tags


def test_a_parameter_whose_module_is_named_like_a_tensor_stays_a_parameter():
    """dynamo names tensors after fx nodes (`linear`): `linear.bias` and `linear_out.bias` are still parameters."""
    model = chain_model(["", "", ""], {1: "linear.bias", 2: "linear_out.bias"})
    model.graph.node[0].output[0] = model.graph.node[1].input[0] = "linear"
    tag_proto(model)
    assert [t["hierarchy.module"] for t in tags_of(model)][1:] == ["linear", "linear_out"]


def test_a_dequantized_parameter_keeps_naming_its_module():
    """QDQ puts a `DequantizeLinear` in a bias's place under the bias's name: `…bias_quantized` is still the bias's."""
    bias = "enc.ln.bias"
    stored = [
        numpy_helper.from_array(np.full((4,), 3, np.int32), f"{bias}_quantized"),
        numpy_helper.from_array(np.array(0.1, np.float32), f"{bias}_quantized_scale"),
        numpy_helper.from_array(np.array(0, np.int32), f"{bias}_quantized_zero_point"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", [t.name for t in stored], [bias], name=f"{bias}_DequantizeLinear"),
        helper.make_node("Add", ["x", bias], ["y"], name=""),
    ]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in ("x", "y")]
    model = helper.make_model(helper.make_graph(nodes, "dq", io[:1], io[1:], stored), opset_imports=[helper.make_opsetid("", 17)])
    tag_proto(model)
    assert [(t["hierarchy.module"], t["hierarchy.source"]) for t in tags_of(model)][0] == ("enc.ln", "initializer")


def _learnt(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """`model` with initializer `name` holding distinct values, as training leaves a parameter."""
    tensor = next(t for t in model.graph.initializer if t.name == name)
    tensor.CopyFrom(numpy_helper.from_array(np.linspace(-1, 1, 4, dtype=np.float32), name))
    return model


def test_a_shared_module_called_from_another_caller_is_the_module_its_parameters_name():
    """TorchScript names a tied module by its first path (`shared`) under every caller: `/decoder/shared/`."""
    model = chain_model(
        ["/encoder/a/Add", "/decoder/shared/Add", "/decoder/shared/Relu", "/decoder/Relu"], {0: "encoder.a.bias", 1: "shared.bias"}
    )
    tag_proto(_learnt(model, "shared.bias"))
    assert [t["hierarchy.module"] for t in tags_of(model)] == ["encoder.a", "shared", "shared", "decoder"]


def test_a_merged_constant_read_once_under_another_modules_scope_does_not_make_that_scope_its_module():
    """A fresh init's zero biases are one initializer named after the first (`embeddings.LayerNorm.bias`);
    onnxslim drops every zero-bias Add but the one writing a graph output, the last layer's norm
    (DeBERTa, I-BERT): its scope is its own module, not the embeddings' norm (before: stated there)."""
    last = "/m/encoder/layer.1/output/LayerNorm/"
    model = chain_model(["/m/embeddings/LayerNorm/Relu", f"{last}Relu", f"{last}Add_1"], {2: "m.embeddings.LayerNorm.bias"})
    tag_proto(model)
    assert [t["hierarchy.module"] for t in tags_of(model)][1:] == ["m.encoder.layer.1.output.LayerNorm"] * 2


def test_a_scope_naming_a_known_child_of_its_caller_is_that_child_even_when_it_reads_a_shared_module():
    model = chain_model(["/decoder/shared/Add", "/decoder/shared/Add_1"], {0: "shared.bias", 1: "decoder.shared.bias"})
    tag_proto(model)
    assert [t["hierarchy.module"] for t in tags_of(model)] == ["decoder.shared", "decoder.shared"]


def test_a_name_borrowed_from_another_tensor_defers_to_the_output_name():
    model = chain_model(["/enc/a/Add_output_0", ""])
    model.graph.node[0].output[0] = "/enc/b/Reshape_output_0"
    model.graph.node[1].input[0] = "/enc/b/Reshape_output_0"
    tag_proto(model)
    assert tags_of(model)[0]["hierarchy.module"] == "enc.b"


def test_second_call_suffix_on_a_parameterless_module_merges_with_the_first_call():
    model = chain_model(["/enc/act/Relu", "/enc/act_1/Relu"])
    tag_proto(model)
    assert [t["hierarchy.module"] for t in tags_of(model)] == ["enc.act", "enc.act"]


def _with_scopes(model: onnx.ModelProto, texts: list[str], classes: list[str] | None = None) -> onnx.ModelProto:
    for node, text in zip(model.graph.node, texts, strict=True):
        node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=text)
        if classes is not None:
            node.metadata_props.add(key="pkg.torch.onnx.class_hierarchy", value=classes[0])
    return model


def test_nodes_sharing_a_scopes_head_are_resolved_by_their_own_last_item():
    """The metadata source resolves once per module head; a last item that is no plain string
    (here a quoted item that parses to one more list element) is parsed in full, not assumed."""
    classes = ["['m.Model', 'm.Encoder', 'm.Block', 'aten.relu.default']"]
    texts = [
        "['', 'enc', 'enc.a', 'relu']",
        "['', 'enc', 'enc.a', 'relu_1']",
        "['', 'enc', 'enc.a', 'x', \"y\"]",  # the others' head, then two items: its module is 'x'
        "['', 'enc', 'enc.a', 'relu_3']",
    ]
    model = _with_scopes(chain_model([""] * 4), texts, classes)
    tag_proto(model)
    assert [t["hierarchy.module"] for t in tags_of(model)] == ["enc.a", "enc.a", "x", "enc.a"]
    assert {t["hierarchy.source"] for t in tags_of(model)} == {"metadata"}
    assert tags_of(model)[0]["hierarchy.tag"] == "/Model/Encoder/Block"


def test_classes_are_learnt_from_a_later_node_when_the_first_of_a_module_has_none():
    model = _with_scopes(chain_model([""] * 2), ["['', 'enc', 'relu']", "['', 'enc', 'relu_1']"])
    model.graph.node[1].metadata_props.add(key="pkg.torch.onnx.class_hierarchy", value="['m.Model', 'm.Encoder', 'aten.relu']")
    tag_proto(model)
    assert [t["hierarchy.tag"] for t in tags_of(model)] == ["/Model/Encoder", "/Model/Encoder"]


def test_a_partly_tagged_model_is_written_like_a_fresh_one():
    """The writer's two paths (append to untagged nodes in one pass, update tagged ones in place)
    give the same bytes as tagging from scratch."""
    fresh = chain_model(["/enc/a/Relu", "/enc/b/Relu", "/enc/c/Relu"])
    partly = onnx.ModelProto()
    partly.CopyFrom(fresh)
    tag_proto(fresh)
    partly.graph.node[1].CopyFrom(fresh.graph.node[1])  # one node tagged already
    tag_proto(partly)
    assert partly.SerializeToString() == fresh.SerializeToString()
