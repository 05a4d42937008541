"""The facts `tagger.infer` rests on, each pinned on a hand-built graph (onnx.helper).

Evidence in these graphs is only parameter names (as after a strip or a graphsurgeon round trip):
a node that consumes `enc.a.bias` is direct evidence for module `enc.a`; everything else is inferred.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tagger import tag_proto
from tagger.pipeline.tagging import tag_model
from tests.graphs import tags_of


def _model(nodes, params=(), anonymous=(), shapes=None, value_info=None, outputs=("y",), opset=17) -> onnx.ModelProto:
    """A model from `(op, inputs, outputs, attrs)` tuples. `params` are parameter names (evidence),
    `anonymous` unnamed weights (`val_N`, rank 2); `shapes` are INT64 Reshape targets by name."""
    inits = [numpy_helper.from_array(np.full((4,), 0.5, dtype=np.float32), name) for name in params]
    inits += [numpy_helper.from_array(np.full((4, 4), 0.5, dtype=np.float32), name) for name in anonymous]
    inits += [numpy_helper.from_array(np.array(v, dtype=np.int64), name) for name, v in (shapes or {}).items()]
    inits.append(numpy_helper.from_array(np.float32(2.0), "two"))
    made = [helper.make_node(op, list(i), list(o), **(a or {})) for op, i, o, a in nodes]
    graph = helper.make_graph(
        made,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        inits,
        value_info=value_info or [],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _modules(model: onnx.ModelProto) -> list[str]:
    tag_proto(model)
    return [t["hierarchy.module"] for t in tags_of(model)]


def test_nesting_a_node_between_two_children_ran_in_their_parent_and_that_is_certain():
    model = _model(
        [
            ("Add", ["x", "enc.a.bias"], ["a"], None),
            ("Relu", ["a"], ["r"], None),
            ("Add", ["r", "enc.b.bias"], ["y"], None),
        ],
        params=["enc.a.bias", "enc.b.bias"],
    )
    result = tag_model(model)
    assert result.assignments[1].module == "enc"
    assert result.bounds[1].bound == "enc" and result.bounds[1].certain


def test_nesting_a_choice_deeper_than_the_bound_is_not_certain():
    model = _model(
        [
            ("Add", ["x", "enc.a.lin.bias"], ["a"], None),
            ("Relu", ["a"], ["r"], None),
            ("Add", ["r", "enc.b.bias"], ["y"], None),
        ],
        params=["enc.a.lin.bias", "enc.b.bias"],
    )
    result = tag_model(model)
    assert result.bounds[1].bound == "enc"
    assert result.assignments[1].module == "enc.a" and not result.bounds[1].certain


def test_a_constant_used_by_a_choice_is_no_more_certain_than_that_choice():
    """A Constant lives where its users are; when their tag is a choice deeper than the bound, the
    constant's is the same choice, with the same bound - not a certain tag."""
    model = _model(
        [
            ("Add", ["x", "enc.a.lin.bias"], ["a"], None),
            ("Constant", [], ["shape"], {"value": numpy_helper.from_array(np.array([8, 4], dtype=np.int64))}),
            ("Reshape", ["a", "shape"], ["r"], None),
            ("Add", ["r", "enc.b.bias"], ["y"], None),
        ],
        params=["enc.a.lin.bias", "enc.b.bias"],
    )
    result = tag_model(model)
    assert result.assignments[2].module == "enc.a" and not result.bounds[2].certain
    assert result.assignments[1].module == "enc.a"
    assert result.bounds[1] == result.bounds[2]


def _rms_norm(residual: bool) -> onnx.ModelProto:
    """embed -> decomposed RMSNorm (Pow, ReduceMean, Add, Sqrt, Reciprocal, Mul(x, .), Mul(weight))
    -> a Linear's bias; with `residual`, the norm's input is also added to the Linear's output."""
    nodes = [
        ("Add", ["x", "embed.bias"], ["e"], None),
        ("Pow", ["e", "two"], ["p"], None),
        ("ReduceMean", ["p"], ["m"], {"axes": [-1]}),
        ("Add", ["m", "two"], ["v"], None),
        ("Sqrt", ["v"], ["s"], None),
        ("Reciprocal", ["s"], ["r"], None),
        ("Mul", ["e", "r"], ["n"], None),
        ("Mul", ["n", "layer.norm.weight"], ["o"], None),
        ("Add", ["o", "layer.proj.bias"], ["q"], None),
        ("Add", ["q", "e" if residual else "two"], ["y"], None),
    ]
    return _model(nodes, params=["embed.bias", "layer.norm.weight", "layer.proj.bias"])


def test_a_fork_converging_into_a_leafs_parameter_use_is_that_leaf():
    modules = _modules(_rms_norm(residual=True))
    assert modules[1:7] == ["layer.norm"] * 6


def test_a_diamond_on_another_leafs_whole_output_is_not_claimed_by_the_next_leaf():
    """An activation between two Linears has the same shape as a norm; the ops may belong to the
    first leaf, the caller, or a module in between: never to the second leaf."""
    modules = _modules(_rms_norm(residual=False))
    assert "layer.norm" not in modules[1:7]
    assert all(m == "" for m in modules[1:7])  # the only certain module: embed and layer meet at the root


def test_a_node_combining_two_modules_results_runs_in_their_common_caller():
    model = _model(
        [
            ("Add", ["x", "enc.a.bias"], ["a"], None),
            ("Add", ["x", "enc.b.bias"], ["b"], None),
            ("Mul", ["a", "b"], ["c"], None),
            ("Add", ["c", "enc.c.bias"], ["y"], None),
        ],
        params=["enc.a.bias", "enc.b.bias", "enc.c.bias"],
    )
    assert _modules(model)[2] == "enc"


def test_a_value_passed_from_one_module_to_another_belongs_to_neither():
    model = _model(
        [
            ("Add", ["x", "enc.a.bias"], ["a"], None),
            ("Relu", ["a"], ["r"], None),
            ("Add", ["r", "dec.b.bias"], ["y"], None),
        ],
        params=["enc.a.bias", "dec.b.bias"],
    )
    result = tag_model(model)
    assert result.assignments[1].module not in ("enc.a", "dec.b")
    assert result.bounds[1].bound == ""


def test_a_matmul_on_an_unnamed_weight_feeding_a_bias_add_is_that_linear():
    model = _model(
        [
            ("Add", ["x", "enc.a.bias"], ["a"], None),
            ("MatMul", ["a", "val_7"], ["h"], None),
            ("Add", ["h", "enc.q.bias"], ["y"], None),
        ],
        params=["enc.a.bias", "enc.q.bias"],
        anonymous=["val_7"],
    )
    assert _modules(model)[1] == "enc.q"


def _gemm(restore_shape: list[int], flat_from: list[int] | None = None, recorded: bool = False) -> onnx.ModelProto:
    """norm -> flatten -> Gemm (attn.q) -> reshape to `restore_shape` -> attn.out; `flat_from`: the
    flattened value's recorded shape; `recorded`: the reshape's output shape is recorded too."""
    nodes = [
        ("Add", ["x", "attn.norm.bias"], ["a"], None),
        ("Reshape", ["a", "flat"], ["f"], None),
        ("Gemm", ["f", "val_1", "attn.q.bias"], ["g"], None),
        ("Reshape", ["g", "restore"], ["r"], None),
        ("Add", ["r", "attn.out.bias"], ["y"], None),
    ]
    info = [helper.make_tensor_value_info("a", TensorProto.FLOAT, flat_from or [1, 8, 4])]
    info += [helper.make_tensor_value_info("r", TensorProto.FLOAT, restore_shape)] if recorded else []
    return _model(
        nodes, ["attn.norm.bias", "attn.q.bias", "attn.out.bias"], ["val_1"], {"flat": [-1, 4], "restore": restore_shape}, info
    )


def test_reshapes_wrapping_a_gemm_belong_to_its_linear():
    assert _modules(_gemm([1, 8, 4]))[1:4] == ["attn.q"] * 3


def test_a_reshape_after_a_gemm_that_splits_further_is_the_callers():
    """A tool merged the Linear's restore with the caller's split into heads: the merged node
    computes the caller's value."""
    modules = _modules(_gemm([1, 8, 2, 2]))
    assert modules[1:3] == ["attn.q", "attn.q"] and modules[3] == "attn"


def test_a_constant_lives_where_its_users_meet():
    model = _model(
        [
            ("Constant", [], ["k"], {"value": numpy_helper.from_array(np.float32(1.0))}),
            ("Add", ["x", "enc.a.bias"], ["a"], None),
            ("Mul", ["a", "k"], ["a2"], None),
            ("Add", ["a2", "enc.b.bias"], ["b"], None),
            ("Mul", ["b", "k"], ["y"], None),
            ("Add", ["y", "enc.c.bias"], ["z"], None),
        ],
        params=["enc.a.bias", "enc.b.bias", "enc.c.bias"],
        outputs=("z",),
    )
    assert _modules(model)[0] == "enc"


def _chains(order: list[int]) -> onnx.ModelProto:
    """Two independent chains (enc.* and dec.*) joined at the end, in the node order given."""
    chain = [
        ("Add", ["x", "enc.a.bias"], ["e0"], None),
        ("Relu", ["e0"], ["e1"], None),
        ("Relu", ["e1"], ["e2"], None),
        ("Relu", ["e2"], ["e3"], None),
        ("Add", ["e3", "enc.b.bias"], ["e4"], None),
        ("Add", ["x", "dec.a.bias"], ["d0"], None),
        ("Relu", ["d0"], ["d1"], None),
        ("Relu", ["d1"], ["d2"], None),
        ("Relu", ["d2"], ["d3"], None),
        ("Add", ["d3", "dec.b.bias"], ["d4"], None),
        ("Add", ["e4", "d4"], ["y"], None),
    ]
    return _model([chain[i] for i in order], params=["enc.a.bias", "enc.b.bias", "dec.a.bias", "dec.b.bias"])


def test_in_execution_order_chains_take_their_modules():
    modules = _modules(_chains(list(range(11))))
    assert modules[1:4] == ["enc"] * 3 and modules[6:9] == ["dec"] * 3


def _by_output(model: onnx.ModelProto) -> dict[str, str]:
    modules = _modules(model)
    return {node.output[0]: module for node, module in zip(model.graph.node, modules, strict=True)}


def test_a_reordered_graph_is_detected_and_tagged_from_dataflow_alone():
    """A tool interleaved the chains (a valid topological order): the order says nothing, and
    dataflow keeps every tag in its branch."""
    tags = _by_output(_chains([5, 0, 6, 1, 7, 2, 8, 3, 9, 4, 10]))
    assert [tags[f"d{i}"] for i in (1, 2, 3)] == ["dec"] * 3
    assert [tags[f"e{i}"] for i in (1, 2, 3)] == ["enc"] * 3


def test_a_chain_moved_between_another_modules_nodes_is_not_tagged_with_it():
    """A tool moved the `dec` chain between two `enc` nodes: order alone would say `enc`."""
    tags = _by_output(_chains([5, 0, 6, 7, 8, 1, 2, 3, 4, 9, 10]))
    assert not any(tags[f"d{i}"].startswith("enc") for i in (1, 2, 3))
    assert [tags[f"e{i}"] for i in (1, 2, 3)] == ["enc"] * 3


def test_report_json_lists_each_inherited_tag_with_its_bound_and_certain_lists_only_certain(tmp_path):
    import json
    import subprocess
    import sys

    model = _model(
        [
            ("Add", ["x", "enc.a.lin.bias"], ["a"], None),
            ("Relu", ["a"], ["r"], None),  # a choice: enc.a, inside the certain bound enc
            ("Add", ["r", "enc.b.bias"], ["b"], None),
            ("Mul", ["r", "b"], ["c"], None),  # combines two modules' results: certain
            ("Add", ["c", "enc.c.bias"], ["y"], None),
        ],
        params=["enc.a.lin.bias", "enc.b.bias", "enc.c.bias"],
    )
    path = tmp_path / "m.onnx"
    onnx.save(model, path)

    def report(*flags):
        done = subprocess.run([sys.executable, "-m", "tagger", "report", path, "--json", *flags], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    full = report()
    by_position = {r["node"]["position"]: r for r in full["inferred"]}
    assert by_position[1] == {**by_position[1], "module": "enc.a", "bound": "enc", "certain": False}
    assert by_position[3] == {**by_position[3], "module": "enc", "certain": True}
    assert full["inherited_certain"] == 1
    assert [r["node"]["position"] for r in report("--certain")["inferred"]] == [3]
    assert {p.key for node in onnx.load(path).graph.node for p in node.metadata_props} == set()  # report writes nothing


def test_a_flatten_before_a_gemm_with_no_restore_after_is_the_callers():
    """A classifier `Sequential(Flatten, Linear)`: the Flatten is not the Linear's."""
    nodes = [
        ("Add", ["x", "head.norm.bias"], ["a"], None),
        ("Reshape", ["a", "flat"], ["f"], None),
        ("Gemm", ["f", "val_1", "head.fc.bias"], ["y"], None),
    ]
    modules = _modules(_model(nodes, ["head.norm.bias", "head.fc.bias"], ["val_1"], {"flat": [-1, 4]}))
    assert modules[1] == "head"


def test_a_node_folding_the_next_modules_op_belongs_to_their_caller():
    """onnxscript's BatchNorm folding names the new bias after the conv weight (`…weight_bias`):
    the node computes the conv's and the norm's ops."""
    nodes = [("Add", ["x", "block.conv.weight"], ["a"], None), ("Add", ["a", "block.conv.weight_bias"], ["y"], None)]
    model = _model(nodes, params=["block.conv.weight", "block.conv.weight_bias"])
    model.graph.node[1].input[:] = ["x", "block.conv.weight", "block.conv.weight_bias"]
    model.graph.node[1].op_type = "Sum"
    assert _modules(model)[1] == "block"


def test_a_folded_convs_weight_and_bias_name_the_caller_after_a_quantizer_split_its_node():
    """onnxruntime's quantizer moves the folded conv's weight into a `ConvInteger` (as
    `…weight_quantized`, with its `…weight_scale` read by the rescale) and its bias into an `Add`.
    The `…weight_bias` beside the weight still shows the fold, and the weight is the fold's too
    (the conv's scaled by the norm's): every node of the split is the two modules' caller
    (before: the product and its rescale were stated in the conv, 77.6% of a noised dynamo
    MobileNetV2 after `quantize_dynamic`)."""
    nodes = [
        ("Mul", ["x", "block.conv.weight_quantized"], ["q"], None),
        ("Mul", ["q", "block.conv.weight_scale"], ["s"], None),
        ("Add", ["s", "block.conv.weight_bias"], ["y"], None),
    ]
    params = ["block.conv.weight_quantized", "block.conv.weight_scale", "block.conv.weight_bias"]
    assert _modules(_model(nodes, params=params)) == ["block", "block", "block"]


def test_a_computation_on_constants_used_by_a_leaf_is_made_by_its_caller():
    """Ids built from constants and fed to an embedding's Gather: the embedding only looks them up."""
    nodes = [
        ("Constant", [], ["k"], {"value": numpy_helper.from_array(np.array([1, 4], dtype=np.int64))}),
        ("ConstantOfShape", ["k"], ["ids"], {"value": numpy_helper.from_array(np.array([0], dtype=np.int64))}),
        ("Add", ["x", "emb.norm.bias"], ["a"], None),
        ("Gather", ["emb.table.weight", "ids"], ["g"], None),
        ("Add", ["a", "g"], ["y"], None),
    ]
    model = _model(nodes, params=["emb.norm.bias"])
    model.graph.initializer.append(numpy_helper.from_array(np.zeros((2, 4), dtype=np.float32), "emb.table.weight"))
    modules = _modules(model)
    assert modules[1] == "emb" and modules[0] == "emb"


def test_a_module_in_a_list_is_called_by_the_lists_parent():
    """After the last layer of a `ModuleList`, its ops (the MLP whose weights are unnamed) still
    run in that layer: the layer's caller is the model, not the list."""
    nodes = [
        ("Add", ["x", "layers.0.norm.bias"], ["a"], None),
        ("MatMul", ["a", "val_1"], ["h"], None),
        ("Relu", ["h"], ["r"], None),
        ("MatMul", ["r", "val_2"], ["o"], None),
        ("Add", ["o", "a"], ["s"], None),
        ("Add", ["s", "final.bias"], ["y"], None),
    ]
    modules = _modules(_model(nodes, ["layers.0.norm.bias", "layers.1.norm.bias", "final.bias"], ["val_1", "val_2"]))
    assert modules[1:4] == ["layers.0"] * 3


def _blocks(norm_inside: bool = True) -> onnx.ModelProto:
    """Two residual blocks of a module list: each adds its input (the value its first child read)
    to its last child's output; with `norm_inside`, the block's own norm follows the Add (BERT's
    `attention.output`), else the Add's result leaves the block (a post-LN layer's or ResNet's)."""
    nodes = [
        ("Add", ["x", "pre.bias"], ["p"], None),
        ("Relu", ["p"], ["r0"], None),
        ("Add", ["r0", "blocks.0.a.bias"], ["a0"], None),
        ("Add", ["a0", "blocks.0.b.bias"], ["b0"], None),
        ("Add", ["b0", "r0"], ["j0"], None),  # blocks.0's residual
        ("Add", ["j0", "blocks.0.norm.bias" if norm_inside else "two"], ["s0"], None),
        ("Add", ["s0", "blocks.1.a.bias"], ["a1"], None),
        ("Add", ["a1", "blocks.1.b.bias"], ["b1"], None),
        ("Add", ["b1", "s0"], ["j1"], None),  # blocks.1's residual
        ("Add", ["j1", "blocks.1.norm.bias" if norm_inside else "two"], ["s1"], None),
        ("Add", ["s1", "post.bias"], ["y"], None),
    ]
    params = ["pre.bias", "blocks.0.a.bias", "blocks.0.b.bias", "blocks.1.a.bias", "blocks.1.b.bias", "post.bias"]
    if norm_inside:
        params += ["blocks.0.norm.bias", "blocks.1.norm.bias"]
    return _model(nodes, params=params)


def test_a_join_followed_by_its_blocks_own_node_runs_in_that_block():
    """BERT's `attention.output`: the residual Add sits between the block's child `b` and its own
    norm, which uses the sum: by nesting it runs in `blocks.0`, certainly."""
    result = tag_model(_blocks())
    assert result.assignments[4].module == "blocks.0"
    assert result.bounds[4].bound == "blocks.0" and result.bounds[4].certain


def test_a_join_of_values_from_different_modules_is_refined_to_the_module_holding_both():
    """The second block's input is the first block's output, read by `blocks.1.a`: rule 3's
    common caller of the producers is refined to `blocks.1`, which holds both."""
    modules = _modules(_blocks())
    assert modules[4] == "blocks.0" and modules[8] == "blocks.1"


def test_a_join_ending_a_list_entry_is_that_entrys_as_a_choice():
    """ResNet's block-end residual: the Add's result leaves `blocks.0` for `blocks.1`, and a
    list's caller only hands the running value from entry to entry, so the join of the block's
    input with its last child's output is the block's last op - a choice bounded by the list's
    caller. The last block's join, followed by a module outside the list, stays at its bound."""
    result = tag_model(_blocks(norm_inside=False))
    assert result.assignments[4].module == "blocks.0" and not result.bounds[4].certain
    assert result.assignments[8].module not in ("blocks.1", "blocks.1.b")


def test_a_post_ln_join_whose_result_leaves_the_attention_stays_at_its_bound():
    """A post-LN layer adds the residual after an attention that read the same input: the Add
    may be the attention's or the layer's; with nothing after it inside the attention (the next
    tagged node is the layer's feed-forward), only the bound, the layer, is sure."""
    nodes = [
        ("Add", ["x", "pre.bias"], ["r"], None),
        ("Add", ["r", "layer.attn.q.bias"], ["q"], None),
        ("Add", ["q", "layer.attn.out.bias"], ["o"], None),
        ("Add", ["o", "r"], ["j"], None),  # the layer's residual
        ("Relu", ["j"], ["n"], None),
        ("Add", ["n", "layer.ffn.bias"], ["y"], None),
    ]
    modules = _modules(_model(nodes, params=["pre.bias", "layer.attn.q.bias", "layer.attn.out.bias", "layer.ffn.bias"]))
    assert modules[3] == "layer"


def test_a_node_adding_an_unnamed_weight_to_a_modules_result_is_not_carried_into_that_module():
    """A class token (a parameter folded into an unnamed initializer) is prepended to a patch
    embedding's result: the node adds data of a module the file does not name, so it stays at
    its certain bound; the Relu before it only carries the result on and goes to the caller."""
    nodes = [
        ("Add", ["x", "emb.patch.proj.bias"], ["a"], None),
        ("Relu", ["a"], ["r"], None),
        ("Concat", ["val_1", "r"], ["c"], {"axis": 0}),
        ("Add", ["c", "emb.position"], ["y"], None),
    ]
    modules = _modules(_model(nodes, params=["emb.patch.proj.bias", "emb.position"], anonymous=["val_1"]))
    assert modules[1] == "emb.patch" and modules[2] == "emb"


def test_an_output_head_on_an_unnamed_weight_after_the_last_named_module_is_not_put_in_its_caller():
    """`lm_head` (tied or transposed weight, named nowhere) runs after the model's final norm: nothing
    after it says the norm's caller is still running, so it stays at its bound (the root), never in
    `model` (a wrong branch); a plain reshape there is still the caller's own op."""
    head = _model(
        [
            ("Add", ["x", "model.layer.bias"], ["h"], None),
            ("Mul", ["h", "model.norm.weight"], ["n"], None),
            ("MatMul", ["n", "val_7"], ["y"], None),
        ],
        params=["model.layer.bias", "model.norm.weight"],
        anonymous=["val_7"],
    )
    assert _modules(head)[2] == ""
    view = _model(
        [
            ("Add", ["x", "model.layer.bias"], ["h"], None),
            ("Mul", ["h", "model.norm.weight"], ["n"], None),
            ("Reshape", ["n", "target"], ["y"], None),
        ],
        params=["model.layer.bias", "model.norm.weight"],
        shapes={"target": [8, 4]},
    )
    assert _modules(view)[2] == "model"


def test_a_node_made_of_graph_inputs_alone_sitting_in_one_block_but_used_by_two_is_not_that_blocks():
    """A mask built from a graph input depends on nothing of the stretch it sits in: a tool may
    have moved it there (onnxruntime's optimizer moves GPT-2's into the first block). Used by the
    first block and the second, it is certainly in neither alone."""
    model = _model(
        [
            ("Add", ["x", "blk.0.a.bias"], ["h0"], None),
            ("Neg", ["x"], ["mask"], None),
            ("Mul", ["mask", "blk.0.b.bias"], ["h1"], None),
            ("Add", ["h0", "h1"], ["h2"], None),
            ("Add", ["h2", "blk.1.a.bias"], ["h3"], None),
            ("Mul", ["mask", "blk.1.b.bias"], ["m1"], None),
            ("Add", ["h3", "m1"], ["y"], None),
        ],
        params=["blk.0.a.bias", "blk.0.b.bias", "blk.1.a.bias", "blk.1.b.bias"],
    )
    result = tag_model(model)
    assert result.bounds[1].bound in ("", "blk")
    assert not result.assignments[1].module.startswith("blk.0")


def test_a_matmul_feeding_a_fused_residual_norm_is_not_that_norms():
    """onnxruntime fuses the residual Add and the next norm into one node reading the norm's weight;
    the projection before it (an o_proj on an unnamed weight) is not the norm's, as it is a bias
    Add's: the fused node also reads a value computed elsewhere (the residual)."""
    model = _model(
        [
            ("Add", ["x", "blk.a.bias"], ["r"], None),
            ("Mul", ["r", "blk.b.weight"], ["n"], None),
            ("MatMul", ["n", "val_0"], ["mm"], None),
            ("Sum", ["mm", "r", "blk.norm.weight"], ["y"], None),
        ],
        params=["blk.a.bias", "blk.b.weight", "blk.norm.weight"],
        anonymous=["val_0"],
    )
    assert _modules(model)[2] != "blk.norm"


def test_a_product_feeding_a_norm_op_is_not_that_norms():
    """Swinv2's patch merging runs its bias-free `reduction` Linear, then its norm: a MatMul on an
    unnamed weight straight into the LayerNormalization that applies the norm's parameters. A norm
    op normalizes its input first, so no product runs before it in its leaf: the MatMul is another
    leaf's (before: stated in the norm). A bias Add after the product is the Linear's own."""
    nodes = [
        ("Add", ["x", "enc.blk.out.bias"], ["h"], None),
        ("MatMul", ["h", "val_0"], ["mm"], None),
        ("LayerNormalization", ["mm", "enc.down.norm.weight", "enc.down.norm.bias"], ["y"], {"axis": -1}),
    ]
    params = ["enc.blk.out.bias", "enc.down.norm.weight", "enc.down.norm.bias"]
    assert not _modules(_model(nodes, params=params, anonymous=["val_0"]))[1].startswith("enc.down.norm")
    nodes[2] = ("Add", ["mm", "enc.down.reduction.bias"], ["y"], None)
    params[1:] = ["enc.down.reduction.bias"]
    assert _modules(_model(nodes, params=params, anonymous=["val_0"]))[1] == "enc.down.reduction"


def test_a_product_feeding_another_product_is_not_that_products_leaf():
    """SwiftFormer's depthwise conv, its BatchNorm folded in by the TorchScript exporter (weights
    unnamed), runs straight into the pointwise conv, whose weights keep their names. A leaf
    applies its weight once: the first conv is another leaf's, not the pointwise conv's (before:
    stated in it)."""
    nodes = [
        ("Add", ["x", "blk.norm.bias"], ["h"], None),
        ("Conv", ["h", "val_0"], ["dw"], None),
        ("Conv", ["dw", "blk.local.pw.weight", "blk.local.pw.bias"], ["pw"], None),
        ("Relu", ["pw"], ["y"], None),
    ]
    model = _model(nodes, params=["blk.norm.bias", "blk.local.pw.weight", "blk.local.pw.bias"], anonymous=["val_0"])
    assert _modules(model)[1] != "blk.local.pw"


def test_a_quantized_product_converging_into_a_fused_residual_norm_is_not_that_norms():
    """After onnxruntime's optimizer and `quantize_dynamic`, a ViT's `o_proj` is a fork from its
    input's DynamicQuantizeLinear (the product and its scale) converging into the next norm,
    fused with the residual sum and the projection's bias. The fork converges into a norm op, but
    a norm normalizes its input first: the product is another leaf's (before: the o_proj's and
    fc2's four nodes stated in the following norm, 16 of 139 nodes of a DeiT)."""
    nodes = [
        ("Add", ["x", "blk.attn.v.bias"], ["a"], None),
        ("DynamicQuantizeLinear", ["a"], ["q", "s", "z"], None),
        ("MatMulInteger", ["q", "val_0", "z"], ["mi"], None),
        ("Cast", ["mi"], ["mf"], {"to": TensorProto.FLOAT}),
        ("Mul", ["s", "val_1"], ["sc"], None),
        ("Mul", ["mf", "sc"], ["o"], None),
    ]
    norm = ["blk.ln.weight", "blk.ln.bias", "blk.attn.o.bias"]
    model = _model(nodes, params=["blk.attn.v.bias", *norm], anonymous=["val_0", "val_1"])
    model.graph.node.append(_contrib("SkipLayerNormalization", ["o", "x", *norm], ["y"]))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    for i in range(1, 6):
        assert _modules(model)[i] != "blk.ln", i


def test_a_quantize_dequantize_pair_writing_a_graph_output_is_its_producers():
    """A static QDQ quantizer puts Q -> DQ on the model's output and gives the DQ that output's
    name: the pair stands for the tensor it quantizes, the producer's."""
    scale = numpy_helper.from_array(np.float32(0.1), "y_scale")
    zero = numpy_helper.from_array(np.uint8(128), "y_zero_point")
    model = _model(
        [
            ("Add", ["x", "enc.a.bias"], ["a"], None),
            ("Relu", ["a"], ["r"], None),
            ("Add", ["r", "enc.b.bias"], ["b"], None),
            ("QuantizeLinear", ["b", "y_scale", "y_zero_point"], ["q"], None),
            ("DequantizeLinear", ["q", "y_scale", "y_zero_point"], ["y"], None),
        ],
        params=["enc.a.bias", "enc.b.bias"],
    )
    model.graph.initializer.extend([scale, zero])
    assert _modules(model)[3:] == ["enc.b", "enc.b"]


def test_one_flatten_read_by_the_gemms_of_several_linears_is_their_callers():
    """onnxslim merges the equal flattens before q, k and v into one node: it flattens for each."""
    nodes = [
        ("Add", ["x", "attn.norm.bias"], ["a"], None),
        ("Reshape", ["a", "flat"], ["f"], None),
        ("Gemm", ["f", "val_1", "attn.q.bias"], ["gq"], None),
        ("Gemm", ["f", "val_2", "attn.k.bias"], ["gk"], None),
        ("Reshape", ["gq", "restore"], ["rq"], None),
        ("Reshape", ["gk", "restore"], ["rk"], None),
        ("Add", ["rq", "rk"], ["y"], None),
    ]
    info = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 8, 4])]
    params = ["attn.norm.bias", "attn.q.bias", "attn.k.bias"]
    model = _model(nodes, params, ["val_1", "val_2"], {"flat": [-1, 4], "restore": [1, 8, 4]}, info)
    assert _modules(model)[1] == "attn"


def test_a_norm_whose_weight_a_tool_removed_is_not_put_in_the_linear_after_it():
    """onnxslim removes a multiplication by an all-ones weight (a fresh RMSNorm's): the norm's
    diamond then flows straight into the next Linear's MatMul, which runs no reduction itself."""
    nodes = [
        ("Add", ["x", "embed.bias"], ["e"], None),
        ("Add", ["e", "x"], ["h"], None),
        ("Pow", ["h", "two"], ["p"], None),
        ("ReduceMean", ["p"], ["m"], {"axes": [-1]}),
        ("Add", ["m", "two"], ["v"], None),
        ("Sqrt", ["v"], ["s"], None),
        ("Reciprocal", ["s"], ["r"], None),
        ("Mul", ["h", "r"], ["n"], None),
        ("MatMul", ["n", "head.weight"], ["y"], None),
    ]
    model = _model(nodes, params=["embed.bias"])
    weight = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "head.weight")
    model.graph.initializer.append(weight)
    assert "head" not in _modules(model)[2:8]


def test_in_a_reordered_graph_a_node_with_tagged_producers_only_is_bounded_by_nothing():
    """Without the order, a node's certain bound is the common module of its tagged producers and
    consumers; a node read by nothing tagged may run anywhere after its producer, not inside it."""
    model = _chains([5, 0, 6, 1, 7, 2, 8, 3, 9, 4, 10])
    model.graph.node.append(helper.make_node("Relu", ["e4"], ["t"]))
    model.graph.output.append(helper.make_tensor_value_info("t", TensorProto.FLOAT, None))
    result = tag_model(model)
    assert result.bounds[11].bound not in ("enc.b", "enc")


def test_a_diamond_into_the_flatten_before_a_linears_gemm_is_not_that_linears():
    """nn.MultiheadAttention applies `out_proj`'s weights itself: the attention core converges into
    the flatten before the Gemm that reads them, and is still not `out_proj`'s."""
    nodes = [
        ("Add", ["x", "embed.bias"], ["e"], None),
        ("Add", ["e", "x"], ["h"], None),
        ("Pow", ["h", "two"], ["p"], None),
        ("ReduceMean", ["p"], ["m"], {"axes": [-1]}),
        ("Mul", ["h", "m"], ["n"], None),
        ("Reshape", ["n", "flat"], ["f"], None),
        ("Gemm", ["f", "attn.out_proj.weight", "attn.out_proj.bias"], ["g"], None),
        ("Reshape", ["g", "restore"], ["y"], None),
    ]
    info = [helper.make_tensor_value_info("n", TensorProto.FLOAT, [1, 8, 4])]
    model = _model(nodes, ["embed.bias", "attn.out_proj.bias"], (), {"flat": [-1, 4], "restore": [1, 8, 4]}, info)
    weight = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "attn.out_proj.weight")
    model.graph.initializer.append(weight)
    assert "attn.out_proj" not in _modules(model)[2:5]


def test_a_node_touching_nothing_tagged_is_not_placed_by_its_position():
    """onnxslim moves a mask chain (it reads only a graph input) in among the embeddings' nodes;
    read by nothing tagged either (a fresh export names almost nothing), its position is all
    that would place it, and a tool chose that position."""
    model = _model(
        [
            ("Add", ["x", "emb.a.bias"], ["a"], None),
            ("Relu", ["a"], ["a1"], None),
            ("Relu", ["a1"], ["a2"], None),
            ("Relu", ["a2"], ["a3"], None),
            ("Neg", ["x"], ["n"], None),
            ("Relu", ["n"], ["n1"], None),
            ("Relu", ["n1"], ["z"], None),
            ("Mul", ["a3", "emb.a.weight"], ["y"], None),
        ],
        params=["emb.a.bias", "emb.a.weight"],
        outputs=("y", "z"),
    )
    result = tag_model(model)
    assert result.assignments[2].module == "emb.a"  # the order holds: the chain's own nodes keep it
    assert [result.bounds[i].bound for i in (4, 5, 6)] == ["", "", ""]


def test_multihead_attention_applies_its_out_proj_and_in_proj_itself():
    """`nn.MultiheadAttention` passes `out_proj.weight` to `F.multi_head_attention_forward`: the
    Gemm reading it is the attention's (out_proj never runs), and the MatMul on the unnamed packed
    `in_proj_weight` before the attention's own `in_proj_bias` Add is the attention's too."""
    model = _model(
        [
            ("MatMul", ["x", "val_0"], ["q"], None),
            ("Add", ["q", "enc.attn.in_proj_bias"], ["a"], None),
            ("Softmax", ["a"], ["s"], None),
            ("Gemm", ["s", "enc.attn.out_proj.weight", "enc.attn.out_proj.bias"], ["o"], None),
            ("Add", ["o", "enc.norm.bias"], ["y"], None),
        ],
        params=["enc.attn.in_proj_bias", "enc.attn.out_proj.bias", "enc.norm.bias"],
        anonymous=["val_0", "enc.attn.out_proj.weight"],
    )
    assert _modules(model)[:4] == ["enc.attn"] * 4


def test_a_join_of_a_model_argument_with_a_modules_result_is_not_put_in_that_module():
    """A post-LN layer adds its input (here the model's argument `x`) to its attention's output
    before its norm: the join reads data from outside the attention, so rule 4 does not put it in
    the attention; it stays at its certain bound, the layer."""
    model = _model(
        [
            ("Add", ["x", "layer.attn.q.bias"], ["a"], None),
            ("Relu", ["a"], ["r"], None),
            ("Add", ["r", "layer.attn.o.bias"], ["o"], None),
            ("Add", ["x", "o"], ["res"], None),
            ("Mul", ["res", "layer.norm.weight"], ["y"], None),
        ],
        params=["layer.attn.q.bias", "layer.attn.o.bias", "layer.norm.weight"],
    )
    assert _modules(model)[3] == "layer"


def _contrib(op, inputs, outputs):
    return helper.make_node(op, inputs, outputs, domain="com.microsoft")


def test_a_fused_bias_activation_is_the_linears_callers():
    """onnxruntime's BiasGelu adds a Linear's bias and applies the activation its caller calls:
    the node writes the activation's value, so it is the caller's, not the Linear's."""
    model = _model([("MatMul", ["x", "val_0"], ["h"], None), ("Add", ["g", "ffn.out.bias"], ["y"], None)],
                   params=["ffn.up.bias", "ffn.out.bias"], anonymous=["val_0"])  # fmt: skip
    model.graph.node.insert(1, _contrib("BiasGelu", ["h", "ffn.up.bias"], ["g"]))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert _modules(model)[1] == "ffn"


def test_a_fused_residual_norm_handing_on_the_previous_blocks_sum_is_their_callers():
    """In a pre-norm model onnxruntime fuses block 0's residual Add with block 1's norm; the node
    reads the norm's weight but also writes block 0's sum (its 4th output, read by the next
    join): it belongs to both blocks' caller. A post-norm block's fused norm (no sum handed on,
    the residual added by a caller of the norm) stays the norm's."""
    first, second = "enc.first", "enc.second"
    model = _model(
        [
            ("Add", ["x", f"{first}.attn.bias"], ["a"], None),
            ("Add", ["a", f"{first}.mlp.bias"], ["m"], None),
            ("Add", ["n1", f"{second}.attn.bias"], ["b"], None),
            ("Add", ["b", "s"], ["r"], None),
            ("Mul", ["r", f"{second}.out.weight"], ["y"], None),
        ],
        params=[f"{first}.attn.bias", f"{first}.mlp.bias", f"{second}.ln.weight", f"{second}.attn.bias", f"{second}.out.weight"],
    )
    model.graph.node.insert(2, _contrib("SkipLayerNormalization", ["m", "x", f"{second}.ln.weight"], ["n1", "", "", "s"]))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert _modules(model)[2] == "enc"
    post_norm = _model(
        [("Add", ["x", "attn.q.bias"], ["q"], None), ("Add", ["q", "attn.out.dense.bias"], ["a"], None),
         ("Mul", ["n", "next.weight"], ["y"], None)],
        params=["attn.q.bias", "attn.out.dense.bias", "attn.out.ln.weight", "next.weight"],
    )  # fmt: skip
    post_norm.graph.node.insert(2, _contrib("SkipLayerNormalization", ["a", "x", "attn.out.ln.weight"], ["n"]))
    post_norm.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert _modules(post_norm)[2] == "attn.out.ln"


def test_a_matrix_product_on_a_modules_output_feeding_a_sibling_is_not_put_in_that_module():
    """A Linear on an unnamed weight reading the encoder's result (made by the encoder itself,
    after its children), placed before the decoder's first named op (a tool hoisting the
    cross-attention's k/v projections): its weight is a leaf of its own, which nothing shows
    inside the encoder: it stays at its bound. (On a leaf's result it is the leaf's caller's, as a
    layer's MLP after its norm: `test_a_module_in_a_list_is_called_by_the_lists_parent`.)"""
    model = _model(
        [
            ("Add", ["x", "enc.a.bias"], ["e"], None),
            ("Add", ["e", "enc.b.bias"], ["e2"], None),
            ("Add", ["e", "e2"], ["eo"], None),
            ("MatMul", ["eo", "val_0"], ["k"], None),
            ("Add", ["x", "dec.a.bias"], ["d"], None),
            ("Add", ["d", "k"], ["y"], None),
        ],
        params=["enc.a.bias", "enc.b.bias", "dec.a.bias"],
        anonymous=["val_0"],
    )
    tagged = _modules(model)
    assert tagged[2] == "enc" and tagged[3] == ""


def test_the_indices_an_embedding_looks_up_are_its_callers():
    """`F.embedding(input, self.weight)` is an Embedding's only op: position ids built from
    constants and looked up by it are made by its caller and passed in."""
    positions = numpy_helper.from_array(np.arange(8, dtype=np.int64), "p")
    model = _model(
        [
            ("Add", ["x", "emb.norm.bias"], ["a"], None),
            ("Constant", [], ["ids"], {"value": positions}),
            ("Gather", ["emb.pos.weight", "ids"], ["g"], None),
            ("Add", ["a", "g"], ["y"], None),
        ],
        params=["emb.norm.bias"],
    )
    model.graph.initializer.append(numpy_helper.from_array(np.ones((8, 4), dtype=np.float32), "emb.pos.weight"))
    assert _modules(model)[1:3] == ["emb", "emb.pos"]


def test_position_ids_built_by_a_fork_of_the_mask_are_not_the_position_embeddings():
    """MPNet builds its position ids from the padding mask, `(cumsum(mask) * mask) + pad`, in its
    embeddings' forward: a fork of the mask converging into the position embedding's lookup. An
    Embedding's forward is the lookup alone, so the fork is not the leaf's (before: stated in
    `position_embeddings`, 6 nodes of every stripped MPNet row, a family no benchmark had)."""
    nodes = [
        ("Add", ["x", "emb.norm.bias"], ["a"], None),
        ("Cast", ["ids"], ["mask"], {"to": TensorProto.INT64}),
        ("CumSum", ["mask", "axis"], ["c"], None),
        ("Mul", ["c", "mask"], ["m"], None),
        ("Add", ["m", "pad"], ["positions"], None),
        ("Gather", ["emb.pos.weight", "positions"], ["g"], None),
        ("Add", ["a", "g"], ["y"], None),
    ]
    model = _model(nodes, params=["emb.norm.bias"], shapes={"axis": 1, "pad": [1]})
    model.graph.input.append(helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 8]))
    model.graph.initializer.append(numpy_helper.from_array(np.ones((10, 4), dtype=np.float32), "emb.pos.weight"))
    result = tag_model(model)
    assert result.assignments[5].module == "emb.pos"
    for i in range(1, 5):
        assert result.assignments[i].module != "emb.pos", i


def test_a_value_computed_from_constants_is_no_certain_tag_of_its_users_module():
    """Funnel's encoder builds the relative position embeddings from constants and hands them to
    each block's attention: the computation ran in the encoder, though only the attention reads
    it. A value computed from constants may have been made by any module above its users and
    passed in, so their module is a choice (a literal `Constant` stays where its users meet)."""
    table = numpy_helper.from_array(np.arange(4, dtype=np.float32), "table_value")
    nodes = [
        ("Add", ["x", "enc.embed.bias"], ["e"], None),
        ("Constant", [], ["t"], {"value": table}),
        ("Sin", ["t"], ["s"], None),  # computed from constants: the encoder's
        ("Add", ["e", "enc.block.attn.q.bias"], ["q"], None),
        ("Mul", ["q", "s"], ["p"], None),
        ("Add", ["p", "enc.block.attn.o.bias"], ["y"], None),
    ]
    params = ["enc.embed.bias", "enc.block.attn.q.bias", "enc.block.attn.o.bias"]
    result = tag_model(_model(nodes, params=params))
    assert result.assignments[4].module == "enc.block.attn"
    sin = result.assignments[2]
    assert not (sin.module.startswith("enc.block") and result.bounds[2].certain)


def test_a_value_computed_from_constants_before_another_module_ran_is_made_above_it():
    """Funnel's encoder builds the second block's position inputs before the first block runs. A
    value made inside its users' module lies in the same call as its reader, with everything
    between them: a named node of another module between it and its first reader (fact A, in
    the exporter's order) shows it was made above both - a module list runs no op, so by the
    list's caller. With nothing named in between, its users' module stays the choice."""
    table = numpy_helper.from_array(np.arange(4, dtype=np.float32), "table_value")
    nodes = [
        ("Add", ["x", "enc.embed.bias"], ["e"], None),
        ("Constant", [], ["t"], {"value": table}),
        ("Sin", ["t"], ["s"], None),  # the encoder's, for block 1 only
        ("Add", ["e", "enc.blocks.0.attn.q.bias"], ["q0"], None),
        ("Add", ["q0", "enc.blocks.0.attn.o.bias"], ["h"], None),
        ("Add", ["h", "enc.blocks.1.attn.q.bias"], ["q1"], None),
        ("Mul", ["q1", "s"], ["p"], None),
        ("Add", ["p", "enc.blocks.1.attn.o.bias"], ["y"], None),
    ]
    params = ["enc.embed.bias", "enc.blocks.0.attn.q.bias", "enc.blocks.0.attn.o.bias", "enc.blocks.1.attn.q.bias",
              "enc.blocks.1.attn.o.bias"]  # fmt: skip
    result = tag_model(_model(nodes, params=params))
    assert result.assignments[6].module == "enc.blocks.1.attn"
    assert result.assignments[2].module == "enc"
    assert result.assignments[1].module == "enc"
    nothing_between = nodes[:2] + nodes[3:5] + nodes[2:3] + nodes[5:]  # the Sin right before block 1
    assert tag_model(_model(nothing_between, params=params)).assignments[4].module == "enc.blocks.1.attn"


def test_a_node_made_of_graph_inputs_alone_is_no_certain_tag():
    """A mask built from the model's arguments depends on nothing that ran before it: a tool may
    have moved it anywhere, so its position bounds nothing - its tag is a choice, bounded by the root."""
    model = _model(
        [
            ("Add", ["x", "enc.a.bias"], ["a"], None),
            ("Relu", ["x"], ["mask"], None),
            ("Add", ["a", "mask"], ["m"], None),
            ("Add", ["m", "enc.b.bias"], ["y"], None),
        ],
        params=["enc.a.bias", "enc.b.bias"],
    )
    result = tag_model(model)
    assert result.bounds[1].bound == "" and not result.bounds[1].certain


def test_a_join_reading_a_value_passed_on_by_an_untagged_op_is_held_where_that_value_was():
    """ConvNeXt's layer: its own scale parameter, a permute back, then the residual join with the
    layer's input. The permute holds what the scale made, so the join holds both inputs in
    `blocks.0` and ends that list entry; the permute between is the layer's too."""
    nodes = [
        ("Add", ["x", "pre.bias"], ["r0"], None),
        ("Add", ["r0", "blocks.0.a.bias"], ["a0"], None),
        ("Mul", ["a0", "blocks.0.scale"], ["s0"], None),
        ("Transpose", ["s0"], ["t0"], None),
        ("Add", ["r0", "t0"], ["j0"], None),  # blocks.0's residual
        ("Add", ["j0", "blocks.1.a.bias"], ["a1"], None),
        ("Mul", ["a1", "blocks.1.scale"], ["y"], None),
    ]
    params = ["pre.bias", "blocks.0.a.bias", "blocks.0.scale", "blocks.1.a.bias", "blocks.1.scale"]
    modules = _modules(_model(nodes, params=params))
    assert modules[3] == "blocks.0" and modules[4] == "blocks.0"


def test_work_after_a_list_entrys_own_last_op_bound_for_a_module_after_the_list_is_not_that_entrys():
    """Swin's stage: the last block ends with its residual join (its own op), then the stage's
    patch merging reshapes and slices that output before its norm. A list's caller takes the
    running value on after an entry, so that chain is not put in the block."""
    nodes = [
        ("Add", ["x", "pre.bias"], ["r"], None),
        ("Add", ["r", "stage.blocks.0.a.bias"], ["a"], None),
        ("Relu", ["a"], ["h"], None),
        ("Add", ["h", "stage.blocks.0.b.bias"], ["b"], None),
        ("Add", ["b", "h"], ["j"], None),  # the block's residual: its own last op
        ("Reshape", ["j", "shape"], ["v"], None),
        ("Relu", ["v"], ["w"], None),
        ("Add", ["w", "stage.merge.norm.bias"], ["y"], None),
    ]
    params = ["pre.bias", "stage.blocks.0.a.bias", "stage.blocks.0.b.bias", "stage.merge.norm.bias"]
    modules = _modules(_model(nodes, params=params, shapes={"shape": [1, 8, 4]}))
    assert modules[4] == "stage.blocks.0"
    assert modules[5] == modules[6] == "stage"


def test_a_node_reading_a_value_already_handed_out_of_its_producers_caller_is_left_at_its_bound():
    """Rule 4 does not put a node in its producer's caller when that value is already read by a
    module outside the caller: the caller returned it, and the node may run after the return
    (BertModel takes the shape of the embeddings' output to build the mask of a dynamic-shape
    TorchScript export; filed under `embeddings`, 23% of its nodes were wrong)."""
    model = _model(
        [
            ("Add", ["x", "m.emb.norm.bias"], ["h"], None),  # the embeddings' last leaf: its output is returned
            ("Shape", ["h"], ["s"], None),  # the caller's mask plumbing on the returned value
            ("Cast", ["s"], ["c"], {"to": TensorProto.FLOAT}),
            ("Add", ["h", "m.enc.q.bias"], ["q"], None),  # the encoder reads it
            ("Mul", ["q", "c"], ["m1"], None),
            ("Add", ["m1", "m.enc.o.bias"], ["y"], None),
        ],
        params=["m.emb.norm.bias", "m.enc.q.bias", "m.enc.o.bias"],
    )
    modules = _modules(model)
    assert modules[1] == modules[2] == "m"  # the bound (was m.emb, a wrong branch)
    without_hand_off = _model(
        [
            ("Add", ["x", "m.emb.norm.bias"], ["h"], None),
            ("Relu", ["h"], ["r"], None),  # the embeddings' own trailing op: nothing outside reads `h`
            ("Add", ["r", "m.enc.q.bias"], ["q"], None),
            ("Add", ["q", "m.enc.o.bias"], ["y"], None),
        ],
        params=["m.emb.norm.bias", "m.enc.q.bias", "m.enc.o.bias"],
    )
    assert _modules(without_hand_off)[1] == "m.emb"  # still chosen: the caller may still be running


def test_a_node_reading_a_value_a_later_module_joins_is_left_at_its_bound():
    """A value joined with the output of a module that ran after its producer, outside the
    producer's caller, has left that caller: while a module runs only its own subtree does, so it
    had returned before. A node reading the value may run after the return (EfficientNet's
    squeeze-and-excitation pools its block's activation, which its excitation scales after the
    reduce conv ran: the pooling was filed under the depthwise conv block, a wrong branch)."""
    nodes = [
        ("Add", ["x", "m.blk.dw.conv.bias"], ["h"], None),  # the depthwise conv (leaf of m.blk.dw)
        ("Sigmoid", ["h"], ["s"], None),  # its caller's activation
        ("Mul", ["h", "s"], ["a"], None),
        ("ReduceMean", ["a"], ["p"], {"keepdims": 1}),  # the squeeze: the caller's or after it?
        ("Add", ["p", "m.blk.se.reduce.bias"], ["r"], None),
        ("Sigmoid", ["r"], ["g"], None),
        ("Mul", ["a", "g"], ["z"], None),  # the excitation joins the activation after the reduce ran
        ("Add", ["z", "m.blk.proj.bias"], ["y"], None),
    ]
    params = ["m.blk.dw.conv.bias", "m.blk.se.reduce.bias", "m.blk.proj.bias"]
    modules = _modules(_model(nodes, params=params))
    assert modules[1] == modules[2] == "m.blk.dw"  # chosen: nothing says the block returned before them
    assert modules[3] == "m.blk"  # the bound (was m.blk.dw, a wrong branch)
    unjoined = [*nodes[:6], ("Mul", ["p", "g"], ["z"], None), nodes[7]]  # nothing joins `a` later
    assert _modules(_model(unjoined, params=params))[3] == "m.blk.dw"  # still chosen


def test_work_behind_an_unnamed_leafs_matrix_product_is_not_carried_into_the_first_modules_caller():
    """A fresh export names only the embedding and the pooler (every bias and norm weight merged):
    between them run the encoder's Linears on unnamed weights. A node behind such a product reads
    that leaf's output, not the embedding's, and the leaf may run anywhere inside the bound: the
    body stays at its bound (the model), never in `model.emb` (a wrong branch). Before the first
    product the Relu prepares that unnamed leaf's input: where it runs nothing says either (the
    embedding's caller, or a module around the product), so it stays at its bound too."""
    model = _model(
        [
            ("Add", ["x", "model.emb.word.bias"], ["e"], None),
            ("Relu", ["e"], ["r"], None),
            ("MatMul", ["r", "val_1"], ["h"], None),
            ("Relu", ["h"], ["h2"], None),
            ("MatMul", ["h2", "val_2"], ["h3"], None),
            ("Relu", ["h3"], ["h4"], None),
            ("Add", ["h4", "model.pooler.dense.bias"], ["y"], None),
        ],
        params=["model.emb.word.bias", "model.pooler.dense.bias"],
        anonymous=["val_1", "val_2"],
    )
    tagged = _modules(model)
    assert tagged[1] == "model"
    assert tagged[3:6] == ["model"] * 3


def test_a_mask_prepared_for_an_unnamed_leafs_work_is_not_put_in_the_next_named_module():
    """A mask built from a model argument feeds the body's attention, whose products run on
    unnamed weights, and only through them reaches the pooler (the next named module): it
    prepares the unnamed leaves' input, not the pooler's, and stays at its bound."""
    model = _model(
        [
            ("Add", ["x", "model.emb.word.bias"], ["e"], None),
            ("Cast", ["x"], ["mask"], {"to": TensorProto.FLOAT}),
            ("MatMul", ["e", "val_1"], ["h"], None),
            ("Add", ["h", "mask"], ["s"], None),
            ("MatMul", ["s", "val_2"], ["h2"], None),
            ("Relu", ["h2"], ["h3"], None),
            ("Add", ["h3", "model.pooler.dense.bias"], ["y"], None),
        ],
        params=["model.emb.word.bias", "model.pooler.dense.bias"],
        anonymous=["val_1", "val_2"],
    )
    tagged = _modules(model)
    assert tagged[1] == "model" and tagged[3] == "model"


def _zipped_lists() -> onnx.ModelProto:
    """An encoder running two module lists in step (PoolFormer's patch embeddings and blocks):
    each patch embedding's named projection, then its block's norm on a weight the file does not
    name (a fresh export's merged norm weight), a Relu, the block's named Linear."""
    nodes, params = [], []
    value = "x"
    for stage in (0, 1):
        nodes += [
            ("Add", [value, f"enc.patch.{stage}.proj.bias"], [f"p{stage}"], None),
            ("Mul", [f"p{stage}", f"val_{stage}"], [f"n{stage}"], None),
            ("Relu", [f"n{stage}"], [f"r{stage}"], None),
            ("Add", [f"r{stage}", f"enc.block.{stage}.fc.bias"], [f"b{stage}"], None),
        ]
        params += [f"enc.patch.{stage}.proj.bias", f"enc.block.{stage}.fc.bias"]
        value = f"b{stage}"
    nodes.append(("Relu", [value], ["y"], None))
    return _model(nodes, params=params, anonymous=["val_0", "val_1"])


def test_work_behind_an_unnamed_leaf_after_one_lists_entry_bound_for_another_lists_entry_is_not_the_first_entrys():
    """After a list entry's named leaf, what follows up to the next entry is that entry's or the
    next one's: the list's caller only hands the value on. When the value goes into an entry of
    another list (PoolFormer's encoder zips its patch embeddings with its blocks), the next
    module is that other entry, and the Relu behind its unnamed norm reads that norm's output:
    it stays at its bound (before: in the patch embedding, 21% of a fresh PoolFormer after a
    strip and `quantize_static`)."""
    modules = _modules(_zipped_lists())
    assert modules[0] == "enc.patch.0.proj" and modules[3] == "enc.block.0.fc"
    assert modules[2] == modules[6] == "enc"


def _interleaved(first: list, second: list) -> list:
    """Two independent chains' nodes taken in turns: a valid topological order in which almost
    no node follows one it reads (the order says nothing: `Graph.ordered`)."""
    return [node for pair in zip(first, second, strict=True) for node in pair]


def _beside(length: int) -> list:
    """An independent chain of `length` nodes in module `side`, from `x` to `s`."""
    chain = [("Add", ["x", "side.a.bias"], ["s0"], None)]
    chain += [("Relu", [f"s{k}"], [f"s{k + 1}"], None) for k in range(length - 2)]
    return chain + [("Add", [f"s{length - 2}", "side.b.bias"], ["s"], None)]


def test_in_a_file_whose_order_says_nothing_work_after_a_list_entry_behind_an_unnamed_leaf_is_not_that_entrys():
    """After a list entry's named leaf the list's caller hands the value to the next entry, so
    rule 4 may keep what follows in the entry; that rests on the order (the next entry's first
    tagged node comes next). In a file whose order says nothing, a node behind an unnamed leaf
    on the entry's output is left at its bound (PVT's first block attention, read by its
    encoder's own norm, went to the patch embedding before it)."""
    body = [
        ("Add", ["x", "enc.patch.0.proj.bias"], ["p"], None),
        ("MatMul", ["p", "val_1"], ["h"], None),
        ("Relu", ["h"], ["h2"], None),
        ("Add", ["h2", "enc.cls"], ["c"], None),
    ]
    nodes = _interleaved(body, _beside(4)) + [("Add", ["c", "s"], ["y"], None)]
    params = ["enc.patch.0.proj.bias", "enc.patch.1.proj.bias", "enc.cls", "side.a.bias", "side.b.bias"]
    modules = _by_output(_model(nodes, params=params, anonymous=["val_1"]))
    assert modules["p"] == "enc.patch.0.proj" and modules["c"] == "enc"
    assert modules["h2"] == "enc"


def _sizes_handed_on() -> onnx.ModelProto:
    """A patch embedding returning its output and the height it read; the next block's
    attention reshapes its query with that height and its own sizes."""
    nodes = [
        ("Add", ["x", "enc.patch.proj.bias"], ["p"], None),
        ("Add", ["p", "enc.patch.pos"], ["e"], None),  # the patch embedding's own op
        ("Shape", ["e"], ["s"], None),
        ("Gather", ["s", "one"], ["h"], None),  # the height it returns with `e`
        ("MatMul", ["e", "val_1"], ["q"], None),  # the attention's query, on an unnamed weight
        ("Shape", ["p"], ["sq"], None),
        ("Gather", ["sq", "zero"], ["b"], None),
        ("Unsqueeze", ["b", "axes"], ["ub"], None),
        ("Unsqueeze", ["h", "axes"], ["uh"], None),
        ("Concat", ["ub", "uh", "minus"], ["shape"], {"axis": 0}),
        ("Reshape", ["q", "shape"], ["r"], None),
        ("Add", ["r", "enc.block.attn.out.bias"], ["y"], None),
    ]
    params = ["enc.patch.proj.bias", "enc.patch.pos", "enc.block.attn.out.bias"]
    return _model(nodes, params=params, anonymous=["val_1"], shapes={"one": 1, "zero": 0, "axes": [0], "minus": [-1]})


def test_a_join_of_sizes_a_module_returned_is_no_certain_tag_of_that_module():
    """PVT's patch embedding reads its output's height and returns it; its block's attention,
    on unnamed (fresh, merged) weights, reshapes its query with that height and its own sizes.
    The join of those sizes reads values of the patch embedding and of its projection, but
    sizes are handed on like any returned value: rule 3 does not state the patch embedding
    (before: stated, and fact A then bounded the whole attention in it, 28 nodes of a fresh
    PVT TorchScript export with dynamic shapes)."""
    result = tag_model(_sizes_handed_on())
    assert result.assignments[1].module == "enc.patch" and result.assignments[11].module == "enc.block.attn.out"
    for i in range(4, 11):
        assert not (result.assignments[i].module.startswith("enc.patch") and result.bounds[i].certain), i


def test_in_a_re_sorted_file_a_join_of_sizes_is_no_context_for_a_certain_bound():
    """Where the order says nothing, a bound rests on the nearest tagged producers and consumers.
    A join of sizes placed as a choice would be such a consumer, and the size reads before it
    would be stated in its module: the join is left to rules 4-6 there (before: Swin's first
    block's reads of the sizes its embeddings returned, stated in the embeddings after
    `quantize_static`, 11 nodes)."""
    model = _sizes_handed_on()
    model.producer_name = "onnx.quantize"
    result = tag_model(model)
    for i in range(2, 11):
        assert not (result.assignments[i].module.startswith("enc.patch") and result.bounds[i].certain), i


def _value_reshaped_with_sizes(consumer: str, positions: bool = False) -> onnx.ModelProto:
    """An embedding returning its norm's output and the height its projection's output has; the
    module at `consumer` reads the norm's output reshaped with that height (with `positions`, a
    product with positions computed from the height instead: data, not a size)."""
    nodes = [
        ("Add", ["x", "emb.proj.bias"], ["p"], None),
        ("Shape", ["p"], ["s"], None),
        ("Gather", ["s", "one"], ["h"], None),
        ("Add", ["p", "emb.norm.bias"], ["n"], None),
        ("Unsqueeze", ["h", "axes"], ["uh"], None),
        ("Concat", ["uh", "rest"], ["shape"], {"axis": 0}),
        ("Reshape", ["n", "shape"], ["r"], None),
        ("Relu", ["r"], ["q"], None),
        ("Add", ["q", f"{consumer}.bias"], ["y"], None),
    ]
    if positions:
        nodes[4:7] = [("Range", ["zero", "h", "one"], ["pos"], None), ("Mul", ["n", "pos"], ["r"], None)]
    shapes = {"one": 1, "zero": 0, "axes": [0], "rest": [-1, 4]}
    return _model(nodes, params=["emb.proj.bias", "emb.norm.bias", f"{consumer}.bias"], shapes=shapes)


def test_a_value_joined_with_sizes_out_of_their_module_is_no_certain_tag():
    """Swinv2's embeddings return their output with the height and width its projection's output
    has; the first block reshapes one with the other to pad it into windows. Rule 3 puts that
    join in the embeddings (their common ancestor), but sizes are handed on like the value, and
    the join may as well run where its consumers are (a PVT patch embedding's last op is such a
    join, in it): the tag stays, as a choice, and so does every tag that rested on it (before:
    98 nodes of a Swinv2 TorchScript dynamic-shape export stated in the embeddings)."""
    result = tag_model(_value_reshaped_with_sizes("enc.block.attn.q"))
    assert [result.assignments[i].module for i in (6, 7)] == ["emb", "emb"]
    for i in range(4, 8):
        assert not result.bounds[i].certain, i
    assert result.bounds[2].certain  # between the projection and the norm: fact A
    inside = tag_model(_value_reshaped_with_sizes("emb.out"))  # consumed inside the embedding: rule 3 holds
    assert inside.assignments[6].module == "emb" and inside.bounds[6].certain
    data = tag_model(_value_reshaped_with_sizes("enc.block.attn.q", positions=True))  # positions are no size
    assert data.assignments[5].module == "emb" and data.bounds[5].certain


def _mask_model(cast_at: int) -> onnx.ModelProto:
    """Two list entries reading one mask built from a second graph input; the Cast that builds it
    is put at position `cast_at` (1: before the list, as exported; 2: inside entry 0, as a tool
    re-sorting the graph leaves it)."""
    nodes = [
        ("Add", ["x", "m.emb.bias"], ["e"]),
        ("Add", ["e", "m.enc.layer.0.q.bias"], ["q0"]),
        ("Add", ["c", "m.enc.layer.0.attn.bias"], ["k0"]),
        ("Mul", ["q0", "k0"], ["h0"]),
        ("Add", ["h0", "m.enc.layer.1.q.bias"], ["q1"]),
        ("Add", ["c", "m.enc.layer.1.attn.bias"], ["k1"]),
        ("Mul", ["q1", "k1"], ["y"]),
    ]
    nodes.insert(cast_at, ("Cast", ["mask"], ["c"]))
    params = ["m.emb.bias", "m.enc.layer.0.q.bias", "m.enc.layer.0.attn.bias", "m.enc.layer.1.q.bias", "m.enc.layer.1.attn.bias"]
    graph = helper.make_graph(
        [helper.make_node(op, i, o, **({"to": TensorProto.FLOAT} if op == "Cast" else {})) for op, i, o in nodes],
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in ("x", "mask")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [numpy_helper.from_array(np.full((4,), 0.5, dtype=np.float32), name) for name in params],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_mask_shared_by_list_entries_that_a_tool_moved_into_one_entry_goes_to_the_model_holding_everything():
    """A value made of graph inputs alone that two entries read exists before both: whichever
    module received the inputs built it (BertModel's mask). Moved into entry 0 (onnxruntime's
    optimizer on a dynamic-shape BERT), neither its position nor its consumers say which: it is
    put, as a choice, in the model holding every tagged node, which the graph inputs enter."""
    moved = _mask_model(cast_at=2)
    tag_proto(moved)
    assert tags_of(moved)[2]["hierarchy.module"] == "m"  # was m.enc: a wrong branch for BertModel's mask
    as_exported = _mask_model(cast_at=1)
    tag_proto(as_exported)
    assert tags_of(as_exported)[1]["hierarchy.module"] == "m"  # its position between m.emb and m.enc places it


def test_rules_table_runs_every_rule_module_once_with_steps_of_its_kind():
    """`tagger.infer.RULES` is what orders the run: every module of the package that holds a rule
    (`STEPS`) is in it once, and a certain rule only decides or sweeps, a choice only chooses."""
    import importlib
    import pkgutil

    import tagger.infer as infer

    with_steps = {
        info.name
        for info in pkgutil.iter_modules(infer.__path__)
        if hasattr(importlib.import_module(f"tagger.infer.{info.name}"), "STEPS")
    }
    listed = [module for _, module, _ in infer.RULES]
    assert sorted(listed) == sorted(with_steps) and len(set(listed)) == len(listed)
    assert [kind for kind, _ in infer._steps()] == [kind for _, _, kind in infer.RULES]


def test_work_behind_an_unnamed_norm_with_nothing_named_after_is_not_carried_into_the_named_modules_caller():
    """A fresh export merges every norm weight, so the embeddings' norm applies a weight the file
    does not name (fact B: it is a leaf's work, which may run anywhere in the bound). After it
    nothing is named: nothing says the embeddings still run, so the shape and mask work on the
    norm's output (BertModel's, in a dynamic-shape export) is not filed under them."""
    model = _model(
        [
            ("Add", ["x", "model.emb.word.bias"], ["e"], None),
            ("LayerNormalization", ["e", "val_1"], ["n"], None),
            ("Shape", ["n"], ["s"], None),
            ("Cast", ["s"], ["c"], {"to": TensorProto.FLOAT}),
            ("Mul", ["n", "c"], ["y"], None),
        ],
        params=["model.emb.word.bias"],
        anonymous=["val_1"],
    )
    tagged = _modules(model)
    assert "model.emb" not in tagged[2:4], tagged


def test_a_fused_residual_norm_that_inference_placed_holds_the_sum_and_its_readers():
    """A fresh model's norm weights are merged (`merged_parameters`): no parameter names the fused
    norm after the last layer, and inference places it with the layer that added the residual.
    It also computes the final norm, whose value the graph returns: it takes the root, which
    holds both (an inferred tag inside the layer would name the wrong branch for the norm)."""
    model = _model(
        [
            ("Add", ["x", "layers.0.fc.bias"], ["h0"], None),
            ("Add", ["h0", "layers.1.attn.bias"], ["r1"], None),
            ("Add", ["r1", "layers.1.fc.bias"], ["h1"], None),
        ],
        params=["layers.0.fc.bias", "layers.1.attn.bias", "layers.1.fc.bias"],
        anonymous=["val_0"],
    )
    model.graph.node.append(_contrib("SkipLayerNormalization", ["h1", "r1", "val_0"], ["y"]))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert _modules(model) == ["layers.0.fc", "layers.1.attn", "layers.1.fc", ""]


def test_a_fused_residual_norm_whose_result_nothing_reads_takes_the_adders_caller():
    """A builder's final norm whose result is read by nothing (a tiny onnxruntime-genai Phi-3):
    the norm it computes is the adder's or a later module's, and both lie in the adder's caller,
    past the module list."""
    model = _model(
        [
            ("Add", ["x", "m.layers.0.fc.bias"], ["h0"], None),
            ("Add", ["h0", "m.layers.1.attn.bias"], ["r1"], None),
            ("Mul", ["r1", "m.layers.1.norm.weight"], ["n1"], None),
            ("Add", ["n1", "m.layers.1.fc.bias"], ["y"], None),
        ],
        params=["m.layers.0.fc.bias", "m.layers.1.attn.bias", "m.layers.1.norm.weight", "m.layers.1.fc.bias"],
        anonymous=["val_0"],
    )
    model.graph.node.append(_contrib("SkipLayerNormalization", ["y", "r1", "val_0"], ["dead"]))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert _modules(model)[4] == "m"


def test_a_node_a_tool_made_is_not_placed_by_where_its_sort_put_it():
    """onnxruntime appends the norm it fuses and sorts again: the attention's nodes that do not
    depend on it move ahead of it, so it sits inside the attention's stretch. An op no exporter
    writes (no ONNX schema) is bounded by its producers and consumers alone."""
    nodes = [
        ("Add", ["x", "embed.bias"], ["e"], None),
        ("Add", ["x", "layer.attn.scale"], ["s"], None),  # the attention's own, independent of the norm
        ("SimplifiedLayerNormalization", ["e", "val_1"], ["n"], None),
        ("MatMul", ["n", "layer.attn.q.weight"], ["q"], None),
        ("Add", ["q", "s"], ["y"], None),
    ]
    result = tag_model(_model(nodes, ["embed.bias", "layer.attn.scale", "layer.attn.q.weight"], ["val_1"]))
    assert result.bounds[2].bound == ""
    assert not (result.bounds[2].certain and result.assignments[2].module.startswith("layer.attn"))


def test_a_reshape_reading_its_inputs_shape_is_no_fork_into_the_next_leaf():
    """`x.flatten(2).transpose(1, 2)` with dynamic shapes reads x twice (its shape and its data)
    before the next norm: that is no computation forking from x and converging into the norm."""
    nodes = [
        ("MatMul", ["x", "patch.proj.weight"], ["t"], None),
        ("Shape", ["t"], ["s"], None),
        ("Reshape", ["t", "s"], ["r"], None),
        ("Transpose", ["r"], ["tr"], {"perm": [0, 2, 1]}),
        ("LayerNormalization", ["tr", "norm.weight", "norm.bias"], ["y"], None),
        ("Shape", ["t"], ["s2"], None),  # the patches' size, read further on
    ]
    result = tag_model(_model(nodes, ["patch.proj.weight", "norm.weight", "norm.bias"], outputs=("y", "s2")))
    for k in (1, 2, 3):
        assert not (result.bounds[k].certain and result.assignments[k].module == "norm")


def test_one_flatten_read_by_a_gemm_the_file_does_not_name_is_not_the_named_ones():
    """onnxslim's merged flatten also feeds Linears whose weights it fused into unnamed ones: which
    module flattens for all of them is not known from the one that is named."""
    nodes = [
        ("Add", ["x", "enc.norm.bias"], ["a"], None),
        ("Reshape", ["a", "flat"], ["f"], None),
        ("Gemm", ["f", "val_1", "val_2"], ["g1"], None),
        ("Gemm", ["f", "val_3", "enc.attn.v.bias"], ["g2"], None),
        ("Reshape", ["g2", "restore"], ["r2"], None),
        ("Add", ["g1", "r2"], ["y"], None),
    ]
    info = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 8, 4])]
    shapes = {"flat": [-1, 4], "restore": [1, 8, 4]}
    result = tag_model(_model(nodes, ["enc.norm.bias", "enc.attn.v.bias"], ["val_1", "val_2", "val_3"], shapes, info))
    assert not (result.bounds[1].certain and result.assignments[1].module == "enc.attn.v")


def test_a_split_into_heads_after_a_chain_of_gemms_is_the_callers():
    """A tool drops the restore and flatten between two Linears (Gemm -> Gemm in 2-D): the last
    Linear's reshape is compared with the rank flattened before the first."""
    nodes = [
        ("Add", ["x", "enc.norm.bias"], ["a"], None),
        ("Reshape", ["a", "flat"], ["f"], None),
        ("Gemm", ["f", "val_1", "enc.bottleneck.bias"], ["g1"], None),
        ("Gemm", ["g1", "val_2", "enc.attn.q.bias"], ["g2"], None),
        ("Reshape", ["g2", "heads"], ["h"], None),
        ("Add", ["h", "enc.attn.out.bias"], ["y"], None),
    ]
    info = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 8, 4])]
    params = ["enc.norm.bias", "enc.bottleneck.bias", "enc.attn.q.bias", "enc.attn.out.bias"]
    model = _model(nodes, params, ["val_1", "val_2"], {"flat": [-1, 4], "heads": [1, 8, 2, 2]}, info)
    assert _modules(model)[4] == "enc.attn"


def test_a_restore_merged_with_a_reshape_further_up_is_not_put_in_the_linears_caller():
    """Swinv2's block reverses its windows after its attention's output module returned: onnxslim
    and onnx-simplifier merge the output Linear's restore with that reshape, which ran two callers
    up (before: stated in `attention.output`, the Linear's caller)."""
    nodes = [
        ("Add", ["x", "blk.attn.self.bias"], ["a"], None),
        ("Reshape", ["a", "flat"], ["f"], None),
        ("Gemm", ["f", "val_1", "blk.attn.output.dense.bias"], ["g"], None),
        ("Reshape", ["g", "windows"], ["w"], None),
        ("Add", ["w", "blk.norm.bias"], ["y"], None),
    ]
    info = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 8, 4])]
    params = ["blk.attn.self.bias", "blk.attn.output.dense.bias", "blk.norm.bias"]
    model = _model(nodes, params, ["val_1"], {"flat": [-1, 4], "windows": [1, 2, 4, 4]}, info)
    assert _modules(model)[3] == "blk"


@pytest.mark.parametrize(
    ("restore", "why"),
    [([4, 8, 1], "ConvBERT's attention views its kernel layer's output as kernels"), ([1, 8, 2, 2], "a split into heads")],
)
def test_a_restore_giving_the_value_another_shape_is_not_put_in_the_linear(restore, why):
    """A restore gives back the leading dimensions its flatten read; a higher rank or other
    recorded leading dimensions are a caller's reshape a tool merged into it (onnx-simplifier),
    which caller the file does not say (before: stated in the Linear, or in its caller)."""
    result = tag_model(_gemm(restore, recorded=True))
    assert result.assignments[3].module != "attn.q", why
    assert result.bounds[3].bound == "attn", why  # certain only as far as the Linear's and the next module's caller


def test_a_restore_giving_back_the_recorded_leading_dimensions_is_the_linears():
    assert _modules(_gemm([1, 8, 6], recorded=True))[1:4] == ["attn.q"] * 3  # the last: the Linear's features


def test_a_split_into_heads_after_2d_work_on_one_flatten_is_the_callers():
    """onnx-simplifier flattens once and runs the next ops in 2-D (MobileBERT's bottleneck, its
    NoNorm's scale and shift, the query): the rank is read back through them (before: the split
    into heads, merged with the query's restore, stated in the query)."""
    nodes = [
        ("Add", ["x", "enc.norm.bias"], ["a"], None),
        ("Reshape", ["a", "flat"], ["f"], None),
        ("Gemm", ["f", "val_1", "enc.bottleneck.bias"], ["g1"], None),
        ("Mul", ["g1", "enc.nonorm.weight"], ["m"], None),
        ("Add", ["m", "enc.nonorm.bias"], ["n"], None),
        ("Gemm", ["n", "val_2", "enc.attn.q.bias"], ["g2"], None),
        ("Reshape", ["g2", "heads"], ["h"], None),
        ("Add", ["h", "enc.attn.out.bias"], ["y"], None),
    ]
    info = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 8, 4])]
    params = ["enc.norm.bias", "enc.bottleneck.bias", "enc.nonorm.weight", "enc.nonorm.bias", "enc.attn.q.bias"]
    model = _model(nodes, [*params, "enc.attn.out.bias"], ["val_1", "val_2"], {"flat": [-1, 4], "heads": [1, 8, 2, 2]}, info)
    assert _modules(model)[6] == "enc.attn"


def test_the_rank_a_linear_flattened_is_read_through_a_norm_before_it():
    """onnxruntime's output records no shapes: the flattened value's rank is its norm's input's."""
    for restore, expected in (([1, 8, 4], "attn.q"), ([1, 8, 2, 2], "attn")):
        nodes = [
            ("Add", ["x", "attn.in.bias"], ["a"], None),
            ("LayerNormalization", ["a", "val_9", "val_8"], ["n"], None),
            ("Reshape", ["n", "flat"], ["f"], None),
            ("Gemm", ["f", "val_1", "attn.q.bias"], ["g"], None),
            ("Reshape", ["g", "restore"], ["r"], None),
            ("Add", ["r", "attn.out.bias"], ["y"], None),
        ]
        info = [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 8, 4])]
        params = ["attn.in.bias", "attn.q.bias", "attn.out.bias"]
        model = _model(nodes, params, ["val_1", "val_8", "val_9"], {"flat": [-1, 4], "restore": restore}, info)
        result = tag_model(model)
        assert result.assignments[4].module == expected and result.bounds[4].certain


def test_a_shape_read_of_a_modules_output_is_not_carried_into_its_caller():
    """ALBERT builds its mask from the shape of its embeddings' output: a shape is read wherever
    the value is held, so it does not say that the embeddings are still running."""
    nodes = [
        ("Add", ["x", "emb.norm.bias"], ["e"], None),
        ("Shape", ["e"], ["s"], None),
        ("Gather", ["s", "index"], ["g"], {"axis": 0}),
        ("Cast", ["g"], ["c"], {"to": TensorProto.FLOAT}),
        ("MatMul", ["e", "val_1"], ["a"], None),  # the encoder's first Linear: a fresh export names none
        ("Mul", ["c", "enc.attn.scale"], ["m"], None),
        ("Add", ["a", "m"], ["y"], None),
    ]
    model = _model(nodes, ["emb.norm.bias", "enc.attn.scale"], ["val_1"], shapes={"index": 1})
    assert "emb" not in _modules(model)[1:4]


def test_a_shape_taken_to_reshape_the_same_value_goes_with_the_reshape():
    """`x.flatten(2)` with dynamic shapes: the shape of x is taken in the statement that reshapes
    x, inside the module that does it, even where the next named module is its caller's."""
    nodes = [
        ("MatMul", ["x", "emb.patch.proj.weight"], ["t"], None),
        ("Shape", ["t"], ["s"], None),
        ("Concat", ["s", "tail"], ["sh"], {"axis": 0}),
        ("Reshape", ["t", "sh"], ["r"], None),
        ("Add", ["r", "emb.cls"], ["y"], None),
    ]
    model = _model(nodes, ["emb.patch.proj.weight", "emb.cls"], shapes={"tail": [-1]})
    assert _modules(model)[1:4] == ["emb.patch"] * 3


def _two_layers_reading_one_weight(fresh: bool = True) -> onnx.ModelProto:
    """Two list entries whose equal weights the exporter kept once, named after the first
    (`copy.deepcopy` clones of a fresh layer): each reads `enc.layers.0.lin.weight`. `fresh`: the
    file also shows its untrained init, a zero bias of every entry merged into one constant
    (`enc.layers.0.lin.bias`, read by both); without it the weights look trained."""
    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32), "enc.layers.0.lin.weight")
    bias = np.zeros(4, np.float32) if fresh else np.random.default_rng(1).normal(size=4).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "enc.layers.0.lin.weight"], ["a"]),
        helper.make_node("Add", ["a", "enc.layers.0.lin.bias"], ["a2"]),
        helper.make_node("MatMul", ["a2", "enc.layers.0.lin.weight"], ["b"]),
        helper.make_node("Add", ["b", "enc.layers.0.lin.bias"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [weight, numpy_helper.from_array(bias, "enc.layers.0.lin.bias")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_clones_merged_into_the_first_entrys_names_are_told_apart_by_the_module_tree():
    tree = dict.fromkeys(["", "enc", "enc.layers", "enc.layers.0", "enc.layers.0.lin", "enc.layers.1", "enc.layers.1.lin"])
    result = tag_model(_two_layers_reading_one_weight(), tree=tree)
    assert [result.assignments[i].module for i in (0, 2)] == ["enc.layers.0.lin", "enc.layers.1.lin"]


def test_a_tree_whose_list_holds_one_entry_says_a_weight_read_twice_is_one_module_called_again():
    """ALBERT's shared layer reads its weights once per call: a list of one entry in the tree is
    one module, and its name stands for every read."""
    one_entry = dict.fromkeys(["", "enc", "enc.layers", "enc.layers.0", "enc.layers.0.lin"])
    result = tag_model(_two_layers_reading_one_weight(), tree=one_entry)
    assert [result.assignments[i].module for i in (0, 2)] == ["enc.layers.0.lin"] * 2


def test_without_a_tree_an_untrained_list_entrys_weight_read_again_names_the_outermost_list():
    """Without the tree, in an untrained file a second read is a clone's (`enc.layers.1.lin`) or the
    same module called again (`enc.layers.0.lin`): the first read keeps the entry, later ones name
    the list holding both, `enc.layers` - shallow for either truth, wrong for neither."""
    result = tag_model(_two_layers_reading_one_weight())
    assert [result.assignments[i].module for i in (0, 2)] == ["enc.layers.0.lin", "enc.layers"]
    assert result.assignments[2].source == "initializer"


def test_without_a_tree_a_trained_list_entrys_weight_read_again_is_one_module_called_again():
    """Trained entries never stay byte-equal, so in a file without a merged constant a weight read
    twice is ALBERT's shared layer called twice: its name stands for every read."""
    result = tag_model(_two_layers_reading_one_weight(fresh=False))
    assert [result.assignments[i].module for i in (0, 2)] == ["enc.layers.0.lin"] * 2


def test_a_shape_read_after_the_last_named_module_is_not_carried_into_its_caller():
    """ALBERT's mask built from its embeddings' output shape in a fresh export that names nothing
    after the embeddings: no later name says the embeddings still run."""
    nodes = [
        ("Add", ["x", "emb.norm.bias"], ["e"], None),
        ("Shape", ["e"], ["s"], None),
        ("Gather", ["s", "index"], ["g"], {"axis": 0}),
        ("Cast", ["g"], ["c"], {"to": TensorProto.FLOAT}),
        ("MatMul", ["e", "val_1"], ["a"], None),
        ("Mul", ["a", "c"], ["y"], None),
    ]
    model = _model(nodes, ["emb.norm.bias"], ["val_1"], shapes={"index": 1})
    assert "emb" not in _modules(model)[1:4]


def test_a_value_reaching_a_module_only_through_a_join_is_not_prepared_by_that_module():
    """BERT's self-attention reshapes its context to a shape taken from the embeddings' output; the
    output Linear reads the reshaped context. The shape meets the context in the untagged
    reshape (a join of two modules' values): it is that join's input, not one the output prepares."""
    nodes = [
        ("Add", ["x", "emb.bias"], ["e"], None),
        ("Add", ["e", "attn.self.bias"], ["c"], None),
        ("Shape", ["e"], ["s"], None),
        ("Reshape", ["c", "s"], ["r"], None),
        ("MatMul", ["r", "attn.out.dense.weight"], ["y"], None),
    ]
    model = _model(nodes, ["emb.bias", "attn.self.bias", "attn.out.dense.weight"])
    assert _modules(model)[2] != "attn.out"


def test_a_parameter_name_nothing_reads_leaves_the_clones_alone():
    """An initializer named like a parameter that no node reads (a graph output named like one, a
    tool's leftover) is no read of any entry."""
    model = _two_layers_reading_one_weight()
    model.graph.initializer.append(numpy_helper.from_array(np.ones(3, dtype=np.float32), "enc.head.unused.weight"))
    tree = dict.fromkeys(["", "enc", "enc.layers", "enc.layers.0", "enc.layers.0.lin", "enc.layers.1", "enc.layers.1.lin"])
    result = tag_model(model, tree=tree)
    assert [result.assignments[i].module for i in (0, 2)] == ["enc.layers.0.lin", "enc.layers.1.lin"]


def test_a_mask_gathered_at_indices_built_from_a_shape_is_not_carried_into_the_shapes_module():
    """CLIP's text model gathers its mask at positions computed from the embeddings' output shape:
    the mask is the model's argument, the embeddings give it only a shape."""
    nodes = [
        ("Add", ["x", "emb.norm.bias"], ["e"], None),
        ("Shape", ["e"], ["s"], None),
        ("Gather", ["s", "index"], ["g"], {"axis": 0}),
        ("Flatten", ["x"], ["f"], None),
        ("Gather", ["f", "g"], ["m"], {"axis": 0}),
        ("MatMul", ["e", "val_1"], ["a"], None),
        ("Mul", ["a", "m"], ["y"], None),
    ]
    model = _model(nodes, ["emb.norm.bias"], ["val_1"], shapes={"index": 1})
    assert _modules(model)[4] != "emb"


def test_a_node_between_one_list_entrys_last_leaf_and_the_next_entry_is_not_carried_into_the_first():
    """nn.TransformerEncoderLayer ends with its norm2; what reads it before the next layer's
    attention runs after the entry returned (the list's caller hands the value on): it is not
    the first entry's."""
    nodes = [
        ("Add", ["x", "enc.layers.0.lin.bias"], ["a"], None),
        ("Add", ["a", "enc.layers.0.norm2.bias"], ["n"], None),
        ("Transpose", ["n"], ["t"], {"perm": [1, 0, 2]}),
        ("Add", ["t", "enc.layers.1.attn.scale"], ["s"], None),
        ("Add", ["s", "enc.layers.1.attn.out.bias"], ["y"], None),
    ]
    params = ["enc.layers.0.lin.bias", "enc.layers.0.norm2.bias", "enc.layers.1.attn.scale", "enc.layers.1.attn.out.bias"]
    assert _modules(_model(nodes, params))[2] != "enc.layers.0"


def test_a_quantizers_fork_joined_before_an_activation_module_is_not_that_modules():
    """onnxruntime's dynamic quantizer computes a Linear as a fork from its quantized input (the
    integer product and the product of the scales) joined before what reads the result. When that
    reader is an activation module's ReLU, the fork converges into a leaf without parameters:
    fact B (a leaf owns what converges into its parameter uses) says nothing, and the product is
    not the activation's (T5's DenseReluDense.wi, tagged `act` before)."""
    weight_q = numpy_helper.from_array(np.ones((4, 4), np.uint8), "val_1_quantized")
    scale = numpy_helper.from_array(np.float32(0.1), "val_1_scale")
    norm = numpy_helper.from_array(np.ones(4, np.float32), "blk.norm.weight")
    bias = numpy_helper.from_array(np.zeros(4, np.float32), "blk.out.bias")
    nodes = [
        helper.make_node("Mul", ["x", "blk.norm.weight"], ["n"], name="/blk/norm/Mul"),
        helper.make_node("DynamicQuantizeLinear", ["n"], ["q", "s", "z"], name="n_QuantizeLinear"),
        helper.make_node("Mul", ["s", "val_1_scale"], ["ws"], name="lin_quant_scales_mul"),
        helper.make_node("MatMulInteger", ["q", "val_1_quantized", "z"], ["mi"], name="lin_quant"),
        helper.make_node("Cast", ["mi"], ["c"], to=TensorProto.FLOAT, name="lin_cast"),
        helper.make_node("Mul", ["c", "ws"], ["lin"], name="lin_output_scale_mul"),
        helper.make_node("Relu", ["lin"], ["r"], name="/blk/act/Relu"),
        helper.make_node("Add", ["r", "blk.out.bias"], ["y"], name="/blk/out/Add"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [weight_q, scale, norm, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    modules = _modules(model)
    assert modules[6] == "blk.act"
    assert "blk.act" not in modules[1:6], modules


def test_a_product_on_a_leafs_result_read_by_a_sibling_is_not_carried_into_the_leafs_caller():
    """A bias-free Linear on the encoder's final norm output (T5's cross-attention k/v, which
    onnxslim hoists next to the encoder): its weight is a leaf's of its own (fact B), so the
    result going to the decoder says nothing of the encoder still running; only a next tagged
    node inside the encoder would."""
    nodes = [
        ("Add", ["x", "enc.layer.bias"], ["e"], None),
        ("Mul", ["e", "enc.final_norm.weight"], ["n"], None),
        ("MatMul", ["n", "val_1"], ["k"], None),
        ("Add", ["x", "dec.embed.bias"], ["d"], None),
        ("Mul", ["d", "k"], ["m"], None),
        ("Add", ["m", "dec.out.bias"], ["y"], None),
    ]
    model = _model(nodes, params=["enc.layer.bias", "enc.final_norm.weight", "dec.embed.bias", "dec.out.bias"], anonymous=["val_1"])
    modules = _modules(model)
    assert modules[1] == "enc.final_norm" and modules[3] == "dec.embed"
    assert not modules[2].startswith("enc"), modules


def test_indices_passed_into_a_lookup_are_its_callers_by_choice_not_certain():
    """A constant read only as an embedding's indices is made by the embedding's caller, or by any
    module above it that passes it down (SqueezeBERT's model builds the zero token-type ids its
    embeddings hand to the lookup): the caller is a choice, bounded by the root alone."""
    ids = numpy_helper.from_array(np.zeros((1, 8), dtype=np.int64))
    nodes = [
        ("Constant", [], ["ids"], {"value": ids}),
        ("Gather", ["m.emb.tok.weight", "ids"], ["e"], None),
        ("Add", ["x", "e"], ["h"], None),
        ("Add", ["h", "m.emb.norm.bias"], ["y"], None),
    ]
    model = _model(nodes, params=["m.emb.norm.bias"])
    model.graph.initializer.append(numpy_helper.from_array(np.ones((4, 4), dtype=np.float32), "m.emb.tok.weight"))
    result = tag_model(model)
    assert result.assignments[0].module == "m.emb"  # the lookup's caller, as before
    assert result.bounds[0].bound == "" and not result.bounds[0].certain  # was certain, bound m.emb


def test_a_fork_before_another_leafs_unnamed_product_is_not_claimed_by_the_leaf_after_it():
    """LeViT's attention (a fork: q, k, v of one value) runs before its projection, a Linear on an
    unnamed weight and a BatchNorm named in the file. A leaf applies one weight, so the Linear's
    MatMul is a leaf of its own (fact B), and the fork converging into it is not the BatchNorm's work."""
    nodes = [
        ("Add", ["x", "emb.bias"], ["e0"], None),
        ("Relu", ["e0"], ["e"], None),
        ("Mul", ["e", "two"], ["a"], None),
        ("Mul", ["e", "a"], ["b"], None),
        ("MatMul", ["b", "val_1"], ["m"], None),
        ("Reshape", ["m", "flat"], ["r"], None),
        ("BatchNormalization", ["r", "blk.proj.bn.weight", "blk.proj.bn.bias", "blk.proj.bn.mean", "blk.proj.bn.var"], ["y"], None),
    ]
    bn = ["blk.proj.bn.weight", "blk.proj.bn.bias", "blk.proj.bn.mean", "blk.proj.bn.var"]
    model = _model(nodes, params=["emb.bias", *bn], anonymous=["val_1"], shapes={"flat": [8, 4]})
    result = tag_model(model)
    for i in (2, 3):
        assert result.assignments[i].module != "blk.proj.bn"
        assert result.bounds[i].bound != "blk.proj.bn"


@pytest.mark.parametrize("copied", [False, True])
def test_a_node_whose_result_first_meets_an_unnamed_weight_is_not_kept_with_the_module_before(copied):
    """PoolFormer: a patch embedding's Conv, then the next block's GroupNorm, whose scale the
    exporter folded into an unnamed initializer. That the result goes no further than the patch
    embedding's caller says nothing: it first enters an op applying a weight of a module the file
    does not name, which may run anywhere in the bound. The Relu stays at its certain bound.
    TorchScript's export of a fresh init reads such a (deduplicated) weight through an Identity."""
    scale = ("Identity", ["val_1"], ["s"], None)
    nodes = [
        *([scale] if copied else []),
        ("Add", ["x", "enc.pe.proj.bias"], ["a"], None),
        ("Relu", ["a"], ["r"], None),
        ("Mul", ["r", "s" if copied else "val_1"], ["m"], None),
        ("Add", ["m", "enc.blk.fc.bias"], ["y"], None),
    ]
    result = tag_model(_model(nodes, params=["enc.pe.proj.bias", "enc.blk.fc.bias"], anonymous=["val_1"]))
    relu = 2 if copied else 1
    assert result.assignments[relu].module == "enc"
    assert result.bounds[relu].certain


def test_a_computation_on_constants_feeding_a_chosen_value_is_no_more_certain_than_it():
    """ConvBERT's model expands the token-type ids it hands its embeddings: the expand, passed into
    the lookup, is the embeddings' by choice (any module above may have made it), and the
    constants that build its shape are as uncertain, even where their tag already stood."""
    ids = numpy_helper.from_array(np.zeros((1, 8), dtype=np.int64))
    dims = numpy_helper.from_array(np.array([1, 8], dtype=np.int64))
    nodes = [
        ("Constant", [], ["ids"], {"value": ids}),
        ("Constant", [], ["dims"], {"value": dims}),
        ("Mul", ["dims", "dims"], ["shape"], None),
        ("Expand", ["ids", "shape"], ["tt"], None),
        ("Gather", ["emb.tt.weight", "tt"], ["g"], None),
        ("Add", ["g", "enc.bias"], ["y"], None),
    ]
    result = tag_model(_model(nodes, params=["emb.tt.weight", "enc.bias"]))
    assert result.assignments[3].module == "emb" and not result.bounds[3].certain
    assert result.assignments[2].module == "emb" and not result.bounds[2].certain


def test_a_chain_after_a_leafs_join_is_not_that_leafs_own_join():
    """A quantizer hoists the dequantized weight and bias of a Conv (tagged by their names) to the
    top; the Conv joins them, so it is the leaf's. What follows carries the Conv's producers on,
    but joins none of the leaf's branches: a Relu after it, or the pooling minus its input (two
    paths of one value) are no proof of the leaf (PoolFormer after `quantize_static`)."""
    nodes = [
        ("Mul", ["enc.conv.weight", "two"], ["w"], None),
        ("Mul", ["enc.conv.bias", "two"], ["b"], None),
        ("Conv", ["x", "w", "b"], ["c"], None),
        ("Relu", ["c"], ["r"], None),
        ("Neg", ["r"], ["n"], None),
        ("Sub", ["n", "r"], ["s"], None),
        ("Add", ["s", "blk.fc.bias"], ["y"], None),
    ]
    result = tag_model(_model(nodes, params=["enc.conv.weight", "enc.conv.bias", "blk.fc.bias"]))
    assert result.assignments[2].module == "enc.conv"
    for i in (3, 5):
        assert not (result.assignments[i].module == "enc.conv" and result.bounds[i].certain)


def test_a_file_a_quantizer_sorted_breadth_first_is_not_placed_by_its_order():
    """onnxruntime's quantization tools sort every graph breadth-first before saving (stamped
    `producer_name` `onnx.quantize`): a value the model computes once and hands to two layers
    (a mask) lands beside whatever has its depth, inside the first layer's stretch. Its bound
    rests on its producers and consumers alone, not on that place (before: stated as certain
    in the first layer's attention, DistilBERT's dynamic-shape mask after `quantize_static`)."""
    nodes = [
        ("Add", ["x", "embed.bias"], ["e"], None),
        ("Add", ["e", "layers.0.attn.a"], ["a"], None),
        ("Neg", ["e"], ["m"], None),  # the model's, read by both layers
        ("Mul", ["a", "m"], ["b"], None),
        ("Add", ["b", "layers.0.attn.c"], ["o"], None),
        ("Add", ["o", "layers.1.attn.a"], ["p"], None),
        ("Mul", ["p", "m"], ["q"], None),
        ("Add", ["q", "layers.1.attn.c"], ["y"], None),
    ]
    params = ["embed.bias", "layers.0.attn.a", "layers.0.attn.c", "layers.1.attn.a", "layers.1.attn.c"]
    exported = tag_model(_model(nodes, params))
    assert (exported.bounds[2].bound, exported.bounds[2].certain) == ("layers.0.attn", True)  # fact A, in an exporter's order
    quantized = _model(nodes, params)
    quantized.producer_name = "onnx.quantize"
    result = tag_model(quantized)
    assert not result.bounds[2].bound.startswith("layers.0")
    assert not (result.bounds[2].certain and result.assignments[2].module.startswith("layers.0"))


def test_in_a_re_sorted_file_a_join_is_put_in_a_module_only_when_its_result_stays_there():
    """Rule 4a puts a join in the deepest module holding its values while that module is still
    running: the next tagged node is inside it, or the join ends a list entry before the next
    entry's first tagged node. In a file sorted breadth-first neither says anything; where the
    join's result goes does. Two reads of a layer's output shape, joined into the shape of the
    next layer's reshape, are not that layer's norm's (before: DistilBERT TorchScript dynamic
    after `quantize_static`, the next layer's reshape shapes and their constants in the norm)."""
    nodes = [
        ("Add", ["x", "embed.bias"], ["e"], None),
        ("Add", ["e", "layers.0.norm.b"], ["n"], None),
        ("Shape", ["n"], ["s1"], None),
        ("Shape", ["n"], ["s2"], None),
        ("Concat", ["s1", "s2"], ["c"], {"axis": 0}),
        ("Add", ["n", "layers.1.attn.a"], ["p"], None),
        ("Reshape", ["p", "c"], ["r"], None),
        ("Add", ["r", "layers.1.attn.c"], ["y"], None),
    ]
    params = ["embed.bias", "layers.0.norm.b", "layers.1.attn.a", "layers.1.attn.c"]
    exported = tag_model(_model(nodes, params))
    assert exported.assignments[4].module == "layers.0.norm"  # in an exporter's order: the end of entry 0
    quantized = _model(nodes, params)
    quantized.producer_name = "onnx.quantize"
    assert tag_model(quantized).assignments[4].module != "layers.0.norm"


def test_an_identity_of_a_parameter_whose_output_names_none_is_another_parameters_copy():
    """TorchScript keeps one initializer for equal tensors, named after the first parameter, and
    writes each other one as an `Identity` of it named after that other parameter. With the names
    stripped, the copy names no parameter: it is another module's (Marian's decoder position
    table, equal to the encoder's), so neither it nor its readers are the named table's (before:
    a fresh Marian after a strip and `quantize_dynamic`, 554 nodes of its decoder and encoder
    attention stated in the encoder's position table)."""
    nodes = [
        ("Add", ["x", "enc.layer.bias"], ["h"], None),
        ("Identity", ["enc.pos.weight"], ["t1"], None),  # the decoder's table, its name stripped
        ("Add", ["h", "t1"], ["d"], None),
        ("Add", ["d", "dec.layer.bias"], ["y"], None),
    ]
    model = _model(nodes, params=["enc.layer.bias", "dec.layer.bias"])
    table = np.arange(4, dtype=np.float32)  # a sinusoidal table: equal in both, constant in neither
    model.graph.initializer.append(numpy_helper.from_array(table, "enc.pos.weight"))
    result = tag_model(model)
    assert result.assignments[1].module != "enc.pos"
    assert not (result.assignments[2].module.startswith("enc") and result.bounds[2].certain)


def test_a_join_reached_through_another_leafs_product_is_not_the_leafs_own_join():
    """Fact B: one call of a leaf applies its own weights only. A fresh decoder quantized by
    `quantize_dynamic` reads the embedding's quantized rows twice: dequantized into the residual,
    and straight into the first layer's projections on unnamed weights; the residual Add after
    the whole attention joins two values whose only tagged producers are the embedding's, but
    one of them came through other leaves' products: not the embedding's own join (before: a
    fresh OLMo-2 after a strip and `quantize_dynamic`, the first layer stated in the embedding)."""
    nodes = [
        ("Mul", ["x", "emb.scale"], ["rows"], None),  # the embedding's output (its quantized rows)
        ("Add", ["rows", "emb.bias"], ["dq"], None),  # the same rows dequantized with its parameters
        ("MatMul", ["rows", "val_1"], ["q"], None),  # a projection on an unnamed weight
        ("Relu", ["q"], ["r"], None),
        ("Add", ["dq", "r"], ["y"], None),  # the residual join
    ]
    result = tag_model(_model(nodes, params=["emb.scale", "emb.bias"], anonymous=["val_1"]))
    assert result.assignments[1].module == "emb"
    for i in (2, 3, 4):
        assert not (result.assignments[i].module == "emb" and result.bounds[i].certain), i


def test_a_fused_residual_norm_named_by_its_bias_alone_is_not_put_in_the_linears_caller():
    """onnxruntime's SkipLayerNormalization with an `AddBias` adds fc2's bias, the residual and
    normalizes. In a pre-norm model the layer adds the residual and the norm is the next one
    (SigLIP's `post_layernorm`); with the norm's weight and bias merged (a fresh init: read by every
    norm) only fc2's bias is named, which does not say where the sum and the norm ran (before:
    stated in `layers.1.mlp`, the Linear's caller, which is right for a post-norm block only:
    BERT's output, nn.TransformerEncoderLayer)."""
    norm = ["enc.layers.0.ln.weight", "enc.layers.0.ln.bias"]
    model = _model(
        [("MatMul", ["x", "val_0"], ["a"], None), ("MatMul", ["n0", "val_1"], ["f"], None)],
        params=[*norm, "enc.layers.0.mlp.fc2.bias", "enc.layers.1.mlp.fc2.bias"],
        anonymous=["val_0", "val_1"],
    )
    model.graph.node.insert(1, _contrib("SkipLayerNormalization", ["a", "x", *norm, "enc.layers.0.mlp.fc2.bias"], ["n0"]))
    model.graph.node.append(_contrib("SkipLayerNormalization", ["f", "n0", *norm, "enc.layers.1.mlp.fc2.bias"], ["y"]))
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    modules = _modules(model)
    assert modules[1] not in ("enc.layers.0.mlp", "enc.layers.0.mlp.fc2") and modules[3] != "enc.layers.1.mlp", modules


def test_a_product_feeding_an_activation_module_is_not_put_in_it():
    """A bias-free Linear (LLaMA's `gate_proj`) feeds its caller's activation module, a leaf that
    applies no parameter: fact B (a leaf owns what converges into its parameter uses) says
    nothing there (before: the product, its metadata lost to a tool, stated in `mlp.act_fn`)."""
    model = _model(
        [
            ("Mul", ["x", "layers.0.norm.weight"], ["n"], None),
            ("MatMul", ["n", "val_0"], ["g"], None),
            ("Sigmoid", ["g"], ["s"], None),
            ("Mul", ["g", "s"], ["a"], None),
            ("MatMul", ["n", "val_1"], ["u"], None),
            ("Mul", ["a", "u"], ["y"], None),
        ],
        params=["layers.0.norm.weight"],
        anonymous=["val_0", "val_1"],
    )
    act = "/layers.0/mlp/act_fn/"
    names = ["", "", f"{act}Sigmoid", f"{act}Mul", "", "/layers.0/mlp/Mul"]
    for node, name in zip(model.graph.node, names, strict=True):
        node.name = name
    modules = _modules(model)
    assert modules[1] != "layers.0.mlp.act_fn" and modules[1] in ("", "layers.0", "layers.0.mlp"), modules
