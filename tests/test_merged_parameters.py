"""Parameters torch's exporters merged because they were equal name no reader for sure.

With transformers' init untouched (`bench.cases` init `fresh`), every zero bias and every
all-ones norm weight is equal, and both exporters keep one initializer for them, named after
whichever parameter came first. The tests prove that precondition on real exports, then that
tagging such a file after real tools names no wrong module, and pin the value rule on small
graphs: a constant read twice is no evidence, a varying one (a shared or tied parameter) is.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench import cases, metrics
from tagger import tag_proto
from tagger.pipeline.tagging import tag_model

FRESH_ROWS = [
    (arch, exporter, degradation)
    for arch in ("bert", "albert", "vit", "gpt2")
    for exporter, degradation in (
        ("dynamo", "strip_all"),
        ("dynamo", "onnxslim"),
        ("dynamo", "gs_roundtrip"),
        ("torchscript", "strip_all"),
        ("torchscript", "onnxslim"),
    )
]


@pytest.fixture(scope="module")
def fresh_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fresh")


def _most_read_parameter(model: onnx.ModelProto) -> tuple[str, int]:
    initializers = {t.name for t in model.graph.initializer}
    reads = Counter(name for node in model.graph.node for name in node.input if name in initializers and "." in name)
    return reads.most_common(1)[0]


@pytest.mark.parametrize("exporter", cases.EXPORTERS)
def test_both_exporters_merge_the_equal_parameters_of_a_fresh_model(exporter, fresh_dir):
    path = cases.export("bert", exporter, fresh_dir, init="fresh")
    name, reads = _most_read_parameter(onnx.load(path, load_external_data=False))
    assert reads >= 5, f"{name} is read {reads} times: the exporter no longer merges equal initializers"


@pytest.mark.parametrize("row", FRESH_ROWS, ids="-".join)
def test_a_fresh_export_after_real_tools_is_tagged_without_wrong_modules(row, fresh_dir):
    case = cases.make_case(*row, fresh_dir, init="fresh")
    model = onnx.load(case.path, load_external_data=False)
    evidenced = metrics.evidenced_modules(model, cases.module_paths(case.arch))
    tag_proto(model, str(case.path))
    scored = metrics.measure(metrics.node_modules(model), case.truth, evidenced)
    assert scored.wrong <= 0.01, f"{scored.graded - scored.sound_count} of {scored.graded} nodes tagged with a wrong module"


def _two_readers(values: np.ndarray, name: str = "layers.0.q.bias", repeated: bool = False) -> onnx.ModelProto:
    """x -> Add(x, p) -> MatMul(., W1) -> Add(., p) -> MatMul(., W2): `p` read twice, with the work
    of a Linear of another module between the reads. `repeated`: W2 is W1, so the two reads are
    two calls of one unit that reads every weight as often (ALBERT's shared layer)."""
    w1 = numpy_helper.from_array(np.eye(4, dtype=np.float32), "layers.0.k.weight")
    w2 = numpy_helper.from_array(np.eye(4, dtype=np.float32) * 2, "layers.1.v.weight")
    p = numpy_helper.from_array(values.astype(np.float32), name)
    second = "layers.0.k.weight" if repeated else "layers.1.v.weight"
    nodes = [
        helper.make_node("Add", ["x", name], ["a"]),
        helper.make_node("MatMul", ["a", "layers.0.k.weight"], ["b"]),
        helper.make_node("Add", ["b", name], ["c"]),
        helper.make_node("MatMul", ["c", second], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [w1, p] if repeated else [w1, w2, p],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _decided(model: onnx.ModelProto, base_dir: Path | None = None) -> list[tuple[str, str]]:
    result = tag_model(model, base_dir=base_dir)
    return [(a.module, a.source) for a in result.assignments]


def test_a_constant_read_by_two_modules_names_neither():
    decided = _decided(_two_readers(np.zeros(4)))
    assert decided[0][1] != "initializer" and decided[2][1] != "initializer"
    assert decided[1] == ("layers.0.k", "initializer") and decided[3] == ("layers.1.v", "initializer")


def test_a_varying_parameter_of_a_unit_called_twice_keeps_its_name():
    """ALBERT's shared layer: every weight of the unit is read once per call."""
    decided = _decided(_two_readers(np.arange(4), repeated=True))
    assert decided[0] == ("layers.0.q", "initializer") and decided[2] == ("layers.0.q", "initializer")


def test_a_varying_parameter_read_around_another_modules_single_use_names_neither_reader():
    """A tied weight (BART's embedding read at the start of the encoder and of the decoder): its
    name is right for one reader only, and which one the file does not say."""
    decided = _decided(_two_readers(np.arange(4)))
    assert decided[0][1] != "initializer" and decided[2][1] != "initializer"


def test_a_constant_read_once_keeps_its_name():
    model = _two_readers(np.zeros(4))
    model.graph.node[2].input[1] = "other"
    model.graph.initializer.append(numpy_helper.from_array(np.ones(4, dtype=np.float32), "other"))
    assert _decided(model)[0] == ("layers.0.q", "initializer")


@pytest.mark.parametrize(("values", "named"), [(np.zeros(4), False), (np.arange(4), True)])
def test_values_in_external_data_are_read_from_the_models_directory(tmp_path, values, named):
    model = _two_readers(values, repeated=True)
    path = tmp_path / "m.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="m.onnx.data", size_threshold=0)
    loaded = onnx.load(path, load_external_data=False)
    assert loaded.graph.initializer[-1].data_location == TensorProto.EXTERNAL
    assert (_decided(loaded, tmp_path)[0] == ("layers.0.q", "initializer")) is named
    assert _decided(loaded, None)[0][1] != "initializer"  # values unknown: may be merged


def test_a_single_value_read_twice_keeps_its_name():
    """A quantizer reuses a weight's scale (a scalar) for the tensor it quantizes with it."""
    decided = _decided(_two_readers(np.zeros(1), repeated=True))
    assert decided[0] == ("layers.0.q", "initializer") and decided[2] == ("layers.0.q", "initializer")


@pytest.mark.parametrize(("fill", "named"), [(True, False), (False, True)])
def test_a_checkpoint_value_filling_several_parameters_names_none_of_them(tmp_path, fill, named):
    """--weights: a fresh checkpoint holds the same zeros under many names; a fill identifies
    nothing (`tagger.transfer.content` never matches one), a varying value does."""
    from safetensors.numpy import save_file

    values = np.zeros((8, 8), np.float32) if fill else np.arange(64, dtype=np.float32).reshape(8, 8)
    other = values if fill else values + 100
    save_file({"blk.a.weight": values, "blk.b.weight": other}, str(tmp_path / "model.safetensors"))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "val_1"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(values, "val_1")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    tag_proto(model, weights=str(tmp_path / "model.safetensors"))
    decided = [(p.key, p.value) for p in model.graph.node[0].metadata_props]
    assert (("hierarchy.source", "initializer") in decided) is named
    assert (("hierarchy.module", "blk.a") in decided) is named


def _independent_reads(values: np.ndarray) -> onnx.ModelProto:
    """One embedding-like table read on two independent inputs (an encoder's and a decoder's ids),
    nothing named between them (a fresh dynamo export: matrices anonymous, the rest merged)."""
    table = numpy_helper.from_array(values.astype(np.float32).reshape(4, 4), "decoder.embed.weight")
    nodes = [
        helper.make_node("MatMul", ["x", "decoder.embed.weight"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("MatMul", ["x2", "decoder.embed.weight"], ["b"]),
        helper.make_node("Add", ["r", "b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "x2")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [table],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_varying_parameter_read_on_independent_inputs_names_neither_reader():
    decided = _decided(_independent_reads(np.arange(16)))
    assert decided[0][1] != "initializer" and decided[2][1] != "initializer"


def test_nodes_between_two_calls_of_one_unit_are_not_certainly_inside_it():
    """A unit called twice on its own result keeps its parameter's name, but the nodes between the
    two calls ran in neither call: their bound is not the unit."""
    p = numpy_helper.from_array(np.arange(4, dtype=np.float32), "blk.q.bias")
    nodes = [
        helper.make_node("Add", ["x", "blk.q.bias"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Add", ["r", "blk.q.bias"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [p],
    )
    result = tag_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert result.assignments[0].module == "blk.q" and result.assignments[2].module == "blk.q"
    assert result.bounds[1].bound != "blk.q"


def _lookup_and_head(tied: bool, table_name: str = "lm_head.weight") -> onnx.ModelProto:
    """ids -> Gather(table) -> Add(model.layers.0.bias) -> MatMul(., val_9): an embedding whose
    table may carry the head's name (as the dynamo exporter names a tied weight) and a head reading
    an unnamed matrix - the table transposed when `tied`, other values when not."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((10, 4)).astype(np.float32)
    head = table.T.copy() if tied else rng.standard_normal((4, 10)).astype(np.float32)
    inits = [
        numpy_helper.from_array(table, table_name),
        numpy_helper.from_array(head, "val_9"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "model.layers.0.bias"),
    ]
    nodes = [
        helper.make_node("Gather", [table_name, "ids"], ["e"]),
        helper.make_node("Add", ["e", "model.layers.0.bias"], ["h"]),
        helper.make_node("MatMul", ["h", "val_9"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 10])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("table_name", "widened"), [("lm_head.weight", ""), ("model.embed.weight", "model")])
def test_a_table_looked_up_and_read_transposed_by_a_head_places_the_lookup_above_both(table_name, widened):
    """A Linear never gathers its weight: a looked-up table whose transposed values an unnamed
    matrix of a MatMul holds is one parameter of an embedding and a head, named after either
    (dynamo: the head's; TorchScript: the embedding's). The lookup takes the common ancestor of the
    name and the next named module; an untied table keeps its name."""
    assert _decided(_lookup_and_head(tied=True, table_name=table_name))[0] == (widened, "initializer")
    assert _decided(_lookup_and_head(tied=False, table_name=table_name))[0] == (table_name.rpartition(".")[0], "initializer")


def test_a_dynamo_export_of_a_tied_lm_does_not_put_the_embedding_lookup_in_the_head(tmp_path):
    """GPT-2 with its head tied to the embedding, torch's default exporter: the one parameter is
    named `m.lm_head.weight`, the input `Gather` reads it and the head a folded transposed copy.
    With names and metadata gone, the lookup must not be tagged with the head."""
    import torch
    import transformers as tf

    class Logits(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.m(input_ids=input_ids, use_cache=False).logits

    torch.manual_seed(0)
    inner = tf.GPT2LMHeadModel(tf.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=64, n_positions=32)).eval()
    with torch.no_grad():
        for parameter in inner.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    with cases._quiet():
        torch.onnx.export(Logits(inner), (torch.randint(0, 64, (1, 6)),), str(tmp_path / "m.onnx"), dynamo=True)
    model = onnx.load(tmp_path / "m.onnx")
    (lookup,) = [n for n in model.graph.node if n.op_type == "Gather" and n.input[0].endswith("lm_head.weight")]
    truth = {p.key: p.value for p in lookup.metadata_props}["namespace"]
    assert "wte" in truth, f"the exporter no longer names the tied table after the head's module: {truth}"
    for node in model.graph.node:
        del node.metadata_props[:]
        node.name = ""
    tag_proto(model)
    tags = {p.key: p.value for p in lookup.metadata_props}
    assert not tags["hierarchy.module"].endswith("lm_head"), tags


def _sliced_by_two_layers() -> onnx.ModelProto:
    """DeBERTa's encoder hands its relative table's weight to every layer, and each layer slices
    it by its own query's length (`Shape`), so in a dynamic-shape export the second slice depends
    on the first layer's result through that length only; everything between is a fresh init's
    merged constant (read as often as the table) or an unnamed matrix."""
    inits = [
        numpy_helper.from_array(np.arange(32, dtype=np.float32).reshape(8, 4), "enc.rel.weight"),
        numpy_helper.from_array(np.zeros(4, dtype=np.float32), "enc.bias"),
        numpy_helper.from_array(np.eye(4, dtype=np.float32), "val_0"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
    ]
    nodes = []
    for k, data in enumerate(("x", "h0")):
        nodes += [
            helper.make_node("Relu", [data], [f"q{k}"]),
            helper.make_node("Shape", [f"q{k}"], [f"n{k}"], start=1),
            helper.make_node("Slice", ["enc.rel.weight", "zero", f"n{k}", "zero"], [f"r{k}"]),
            helper.make_node("MatMul", [f"r{k}", "val_0"], [f"p{k}"]),
            helper.make_node("Add", [f"q{k}", f"p{k}"], [f"s{k}"]),
            helper.make_node("Add", [f"s{k}", "enc.bias"], ["h0" if k == 0 else "y"]),
        ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_parameter_two_layers_read_by_their_own_lengths_names_neither_reader():
    """A second call works on the first's values; depending on them through a length only is what
    a static export would have as constants: two independent reads (before: both slices stated in
    `enc.rel`, 22 nodes of a fresh DeBERTa with dynamic shapes)."""
    decided = _decided(_sliced_by_two_layers())
    slices = [decided[2], decided[8]]
    assert all(source != "initializer" and module != "enc.rel" for module, source in slices), slices
