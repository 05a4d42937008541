"""The piecewise serialiser writes exactly the bytes protobuf's `SerializeToString` writes: on
real exports before and after retag, on control flow, functions, sparse and training fields, and
on fields this onnx does not know (which must survive a retag byte for byte)."""

from __future__ import annotations

import io
import subprocess
import sys

import onnx
import pytest
from onnx import TensorProto, helper

import tagger.model.modelio
import tagger.model.serialize
from tagger import retag
from tagger.model.serialize import SMALL_GRAPH, plan_encoding
from tests.graphs import chain_model, function_model, if_model

FUTURE_FIELD = b"\xf8\x06\x2a"  # field 111, varint 42: a field no onnx version defines


def _joined(model: onnx.ModelProto) -> bytes:
    """Split however small the model (a real large model is split the same way)."""
    plan = plan_encoding(model, small_graph=0)
    stream = io.BytesIO()
    assert plan.write(stream) == plan.size
    return stream.getvalue()


def test_real_exports_serialise_identically_before_and_after_retag(case, tagged):
    source = onnx.load(case.path, load_external_data=False)
    assert _joined(source) == source.SerializeToString()
    output = onnx.load(tagged.path, load_external_data=False)
    assert _joined(output) == output.SerializeToString()


@pytest.mark.parametrize("build", [if_model, function_model, lambda: chain_model(["a", "b", "c"])])
def test_control_flow_and_functions_serialise_identically(build):
    model = build()
    assert len(plan_encoding(model, small_graph=0).pieces) > 3, "the model was not split into pieces"
    assert _joined(model) == model.SerializeToString()


def test_every_graph_and_model_field_serialises_identically():
    model = chain_model(["a", "b"])
    graph = model.graph
    graph.doc_string = "graph doc"
    graph.sparse_initializer.append(
        helper.make_sparse_tensor(
            helper.make_tensor("s", TensorProto.FLOAT, [2], [1.0, 2.0]),
            helper.make_tensor("s.i", TensorProto.INT64, [2], [0, 3]),
            [4],
        )
    )
    graph.quantization_annotation.add(tensor_name="a")
    graph.metadata_props.add(key="k", value="v")
    model.doc_string = "model doc"
    model.model_version = 7
    model.metadata_props.add(key="mk", value="mv")
    model.training_info.add().algorithm.CopyFrom(helper.make_graph([], "train", [], []))
    model.functions.extend(function_model().functions)
    assert _joined(model) == model.SerializeToString()


def test_a_name_that_is_not_utf8_serialises_identically():
    """upb keeps such a string as bytes and refuses to set it alone: the graph is encoded whole."""
    model = chain_model(["a", "b"])
    named = model.SerializeToString().replace(b"chain", b"\xf7hain")
    model = onnx.ModelProto.FromString(named)
    assert _joined(model) == model.SerializeToString() == named


def test_an_empty_model_serialises_to_nothing():
    assert _joined(onnx.ModelProto()) == b""


@pytest.mark.parametrize("where", ["model", "graph"])
def test_unknown_fields_survive_retag_byte_for_byte(where, tmp_path):
    model = chain_model(["a", "b", "c"])
    if where == "graph":
        graph = onnx.GraphProto.FromString(model.graph.SerializeToString() + FUTURE_FIELD)
        model.graph.CopyFrom(graph)
    else:
        model = onnx.ModelProto.FromString(model.SerializeToString() + FUTURE_FIELD)
    assert _joined(model) == model.SerializeToString()
    source, output = tmp_path / "in.onnx", tmp_path / "out.onnx"
    source.write_bytes(model.SerializeToString())
    retag(source, output)
    assert FUTURE_FIELD in output.read_bytes()


def test_a_structure_over_protobufs_limit_is_one_error_line_and_no_file(tmp_path, monkeypatch):
    """The limit is lowered so the test does not need 2 GB of memory; the CLI gets the same error."""
    source, output = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(chain_model(["a", "b", "c"]), source)
    monkeypatch.setattr(tagger.model.modelio, "PROTOBUF_LIMIT", 100)
    with pytest.raises(tagger.OutputError, match="over protobuf's 2 GB limit"):
        retag(source, output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.onnx"]


def test_a_large_model_is_written_in_pieces_with_the_same_bytes(tmp_path, monkeypatch):
    """Large in bytes, not in nodes: the threshold is lowered below this model's size."""
    model = chain_model([f"/layer.{i}/Relu" for i in range(2_000)])
    monkeypatch.setattr(tagger.model.serialize, "SMALL_GRAPH", model.ByteSize() // 2)
    assert plan_encoding(model).messages > 2_000
    source, output = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(model, source)
    retag(source, output)
    assert output.read_bytes() == onnx.load(output).SerializeToString()


def test_a_model_small_in_bytes_is_one_piece_however_many_nodes():
    model = chain_model([f"/layer.{i}/Relu" for i in range(20_000)])
    assert model.ByteSize() < SMALL_GRAPH
    assert len(plan_encoding(model).pieces) == 1
    assert plan_encoding(model, size_hint=SMALL_GRAPH).messages > 20_000, "a size hint over the limit splits it"


def test_the_cli_writes_the_same_bytes_as_onnx_save(tmp_path):
    """Nothing but the tags differs: a retag of a tagged file rewrites it with identical bytes."""
    source = tmp_path / "in.onnx"
    onnx.save(if_model(), source)
    first, second = tmp_path / "first.onnx", tmp_path / "second.onnx"
    for src, dst in ((source, first), (first, second)):
        command = [sys.executable, "-m", "tagger", "retag", str(src), "--output", str(dst)]
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert second.read_bytes() == first.read_bytes() == onnx.load(first).SerializeToString()
