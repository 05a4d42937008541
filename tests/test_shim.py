"""`shim.export` on real exports of the tiny bench models (both torch exporters), no mocks.

Each (arch, exporter) is exported once per module with the shim and once with plain
`torch.onnx.export` (`bench.cases.export`) into separate directories; tests read the files.
Hand-built graphs cover what the tiny models lack (If bodies referencing outer tensors).
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

import shim
from bench import cases, fixtures
from shim.rename import scope_names
from shim.scopes import scope_of_path
from tagger import tag_proto

ARCHS = cases.ARCHS  # bert, albert (TorchScript leaves Identity_* unscoped), vit, resnet, gpt2
KEYS = [(arch, exporter) for arch in ARCHS for exporter in cases.EXPORTERS]
DYNAMO_ARCHS = [arch for arch in ARCHS if (arch, "dynamo") in cases.SUPPORTED]
NAME_SCOPES = "pkg.torch.onnx.name_scopes"
MODULE_KEY = "hierarchy.module"


def key_id(key: tuple[str, str]) -> str:
    return "-".join(key)


@dataclass(frozen=True)
class Exported:
    """One shim export and the plain export of the same model."""

    path: Path
    result: shim.ExportResult
    model: onnx.ModelProto
    """The shim's file, structure only."""
    plain: Path


@contextlib.contextmanager
def quiet():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Exported]:
    """(arch, exporter) -> `Exported`, each built on first use and kept for the module."""
    shim_dir = tmp_path_factory.mktemp("shim")
    plain_dir = tmp_path_factory.mktemp("plain")
    built: dict[tuple[str, str], Exported] = {}

    def get(arch: str, exporter: str) -> Exported:
        if (arch, exporter) not in built:
            directory = shim_dir / f"{arch}-{exporter}"
            directory.mkdir()
            model, inputs = cases.build_model(arch)
            with quiet():
                result = shim.export(
                    model,
                    inputs,
                    directory / "model.onnx",
                    input_names=list(cases.INPUT_NAMES[arch]),
                    output_names=list(cases.OUTPUT_NAMES),
                    dynamo=exporter == "dynamo",
                )
            proto = onnx.load(result.path, load_external_data=False)
            built[arch, exporter] = Exported(result.path, result, proto, cases.export(arch, exporter, plain_dir))
        return built[arch, exporter]

    return get


def run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def props(node: onnx.NodeProto) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


def dynamo_module(node: onnx.NodeProto) -> str | None:
    text = props(node).get(NAME_SCOPES)
    if text is None:
        return None
    scopes = ast.literal_eval(text)
    return scopes[-2] if len(scopes) >= 2 else ""


def intermediate_tensors(graph: onnx.GraphProto) -> list[str]:
    protected = {v.name for v in (*graph.input, *graph.output)} | {t.name for t in graph.initializer}
    return [name for node in graph.node for name in node.output if name and name not in protected]


# --------------------------------------------------------------------------------------------
# real exports


@pytest.mark.parametrize("key", KEYS, ids=key_id)
def test_outputs_are_bit_identical_to_plain_export(key, exported):
    arch, exporter = key
    export = exported(arch, exporter)
    feeds = cases.sample_inputs(arch)
    ours, plain = run(export.path, feeds), run(export.plain, feeds)
    assert len(ours) == len(plain)
    for a, b in zip(ours, plain, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)


@pytest.mark.parametrize("key", KEYS, ids=key_id)
def test_every_node_and_intermediate_tensor_is_scoped(key, exported):
    model = exported(*key).model
    names = [node.name for node in model.graph.node]
    assert all(name.startswith("/") for name in names), [n for n in names if not n.startswith("/")][:5]
    assert len(set(names)) == len(names)
    tensors = intermediate_tensors(model.graph)
    assert all(name.startswith("/") for name in tensors), [t for t in tensors if not t.startswith("/")][:5]
    assert len(set(tensors)) == len(tensors)


@pytest.mark.parametrize("key", KEYS, ids=key_id)
def test_export_passes_the_onnx_checker(key, exported):
    onnx.checker.check_model(str(exported(*key).path), full_check=True)


@pytest.mark.parametrize("arch", DYNAMO_ARCHS)
def test_dynamo_names_are_module_scope_plus_fx_name(arch, exported):
    model = exported(arch, "dynamo").model
    for node in model.graph.node:
        text = props(node).get(NAME_SCOPES)
        if text is not None:
            scopes = ast.literal_eval(text)
            scope = scope_of_path(scopes[-2] if len(scopes) >= 2 else "")
            assert node.name.startswith(f"{scope}/{scopes[-1]}"), (node.name, scopes)
            assert node.name.count("/") == scope.count("/") + 1


@pytest.mark.parametrize("key", KEYS, ids=key_id)
def test_module_map_lists_named_modules_in_order(key, exported):
    arch, _ = key
    export = exported(*key)
    entries = [p.value for p in export.model.metadata_props if p.key == "hierarchy.modules"]
    assert len(entries) == 1
    classes = json.loads(entries[0])
    expected = cases.module_classes(arch)
    assert list(classes) == list(expected) and classes == expected
    assert export.result.modules == len(expected)


@pytest.mark.parametrize("key", KEYS, ids=key_id)
def test_retag_tags_every_node(key, exported):
    model = exported(*key).model
    assert all(MODULE_KEY in props(node) for node in model.graph.node)


@pytest.mark.parametrize("arch", DYNAMO_ARCHS)
def test_dynamo_tags_equal_exporter_metadata(arch, exported):
    model = exported(arch, "dynamo").model
    pairs = [(dynamo_module(node), props(node)[MODULE_KEY]) for node in model.graph.node]
    with_metadata = [(truth, tag) for truth, tag in pairs if truth is not None]
    assert len(with_metadata) >= 0.9 * len(pairs)
    assert all(truth == tag for truth, tag in with_metadata)


@pytest.mark.parametrize("arch", DYNAMO_ARCHS)
def test_exporter_metadata_and_structure_are_untouched(arch, exported):
    export = exported(arch, "dynamo")
    plain = onnx.load(export.plain, load_external_data=False)
    ours = export.model.graph.node
    assert [n.op_type for n in ours] == [n.op_type for n in plain.graph.node]
    for a, b in zip(ours, plain.graph.node, strict=True):
        assert [(p.key, p.value) for p in a.metadata_props if not p.key.startswith("hierarchy.")] == [
            (p.key, p.value) for p in b.metadata_props
        ]
        assert a.attribute == b.attribute
    assert [t.name for t in export.model.graph.initializer] == [t.name for t in plain.graph.initializer]


@pytest.mark.parametrize("arch", DYNAMO_ARCHS)
def test_tagger_recovers_scopes_from_names_after_onnxslim(arch, exported):
    """onnxslim drops every node's metadata; the scoped names carry the modules through it."""
    import onnxslim

    export = exported(arch, "dynamo")
    truth = cases.truth_of_export(export.model, "dynamo", cases.module_paths(arch))
    with quiet():
        slim = onnxslim.slim(onnx.load(export.path))
    for node in slim.graph.node:
        del node.metadata_props[:]  # whatever survived, names alone must decide
    carried = cases.carry_truth(export.model, truth, slim)
    tag_proto(slim)
    correct = sum(props(slim.graph.node[i]).get(MODULE_KEY) == module for i, module in carried.items())
    assert len(carried) >= 0.6 * len(slim.graph.node)
    assert correct / len(carried) >= 0.99


def test_external_data_is_left_as_torch_wrote_it(exported):
    export = exported("bert", "dynamo")
    data, plain_data = export.path.with_name("model.onnx.data"), export.plain.with_name("model.onnx.data")
    assert data.read_bytes() == plain_data.read_bytes()
    assert sorted(p.name for p in export.path.parent.iterdir()) == ["model.onnx", "model.onnx.data"]  # no temp files
    locations = {
        entry.value
        for tensor in export.model.graph.initializer
        if tensor.data_location == TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    assert locations == {"model.onnx.data"}
    assert run(export.path, cases.sample_inputs("bert"))[0].shape == (1, cases.SEQ_LEN, 32)


def test_result_summary_is_one_line(exported):
    result = exported("bert", "dynamo").result
    assert result.exporter == "dynamo" and result.program is not None
    assert result.nodes == result.renamed_nodes == len(exported("bert", "dynamo").model.graph.node)
    assert result.renamed_tensors > 0 and result.seconds >= result.torch_seconds > 0
    assert "\n" not in str(result) and "dynamo export of Wrapper" in str(result)
    assert exported("bert", "torchscript").result.program is None


def test_retag_false_scopes_names_without_tags(tmp_path):
    model, inputs = cases.build_model("bert")
    with quiet():
        result = shim.export(model, inputs, tmp_path / "m.onnx", dynamo=False, retag=False)
    proto = onnx.load(result.path)
    assert result.report is None
    assert not any(p.key.startswith("hierarchy.") for node in proto.graph.node for p in node.metadata_props)
    assert all(node.name.startswith("/") for node in proto.graph.node)
    assert any(p.key == "hierarchy.modules" for p in proto.metadata_props)


# --------------------------------------------------------------------------------------------
# arguments pass through


class KeywordNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)
        self.blocks = torch.nn.ModuleList([torch.nn.Linear(4, 4) for _ in range(2)])

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        h = self.proj(x) * scale
        for block in self.blocks:
            h = torch.relu(block(h))
        return h


@pytest.mark.parametrize("exporter", cases.EXPORTERS)
def test_kwargs_and_dynamic_shapes_pass_through(exporter, tmp_path):
    torch.manual_seed(0)
    net = KeywordNet().eval()
    x, scale = torch.randn(2, 4), torch.tensor(0.5)
    if exporter == "dynamo":
        extra = {"dynamic_shapes": {"x": {0: torch.export.Dim("batch")}, "scale": None}}
    else:
        extra = {"input_names": ["x", "scale"], "dynamic_axes": {"x": {0: "batch"}}}
    with quiet():
        result = shim.export(net, (x,), tmp_path / "k.onnx", kwargs={"scale": scale}, dynamo=exporter == "dynamo", **extra)
    proto = onnx.load(result.path, load_external_data=False)
    assert any(node.name.startswith("/blocks.1/") for node in proto.graph.node)
    bigger = torch.randn(5, 4)
    (out,) = run(result.path, {"x": bigger.numpy(), "scale": scale.numpy()})
    np.testing.assert_allclose(out, net(bigger, scale=scale).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_unknown_torch_argument_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="bogus"):
        shim.export(KeywordNet(), (torch.randn(2, 4), torch.tensor(1.0)), tmp_path / "k.onnx", bogus=1)
    assert not (tmp_path / "k.onnx").exists()


def test_without_f_torch_program_is_returned_with_a_warning():
    with quiet(), pytest.warns(UserWarning, match="pass f"):
        result = shim.export(KeywordNet(), (torch.randn(2, 4), torch.tensor(1.0)))
    assert isinstance(result.program, torch.onnx.ONNXProgram) and result.path is None
    assert "\n" not in str(result)


# --------------------------------------------------------------------------------------------
# failures


class DataDependentBranch(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.nonzero(x).shape[0] > 2:  # torch.export cannot guard on a data-dependent size
            return x * 2
        return x - 1


class ReturnsObject(torch.nn.Module):
    def forward(self, x: torch.Tensor):
        return x, object()


@pytest.mark.parametrize(
    ("module", "exporter", "hint"),
    [(DataDependentBranch, "dynamo", "dynamo=False"), (ReturnsObject, "torchscript", "dynamo=True")],
    ids=["dynamo", "torchscript"],
)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_export_failure_is_one_short_error(module, exporter, hint, tmp_path, capsys):
    with pytest.raises(shim.ExportFailed) as info:
        shim.export(module().eval(), (torch.randn(3, 4),), tmp_path / "bad.onnx", dynamo=exporter == "dynamo")
    message = str(info.value)
    assert module.__name__ in message and f"the {exporter} exporter" in message and hint in message
    assert len(message) < 600 and "\n" not in message and "\x1b" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert isinstance(info.value, RuntimeError) and info.value.original is not None
    assert "def forward" not in capsys.readouterr().err  # torch.export's partial-graph print is held back
    if exporter == "dynamo":
        assert "def forward" in info.value.output


# --------------------------------------------------------------------------------------------
# hand-built graphs and helpers


def with_scopes(node: onnx.NodeProto, path: str | None, fx: str) -> onnx.NodeProto:
    if path is not None:
        parts = path.split(".") if path else []
        items = [""] + [".".join(parts[: i + 1]) for i in range(len(parts))] + [fx]
        entry = node.metadata_props.add()
        entry.key, entry.value = NAME_SCOPES, str(items)
    return node


def if_model() -> onnx.ModelProto:
    """relu (enc.layers.0) -> t0; an If (enc) whose bodies read the outer t0; Identity without metadata."""
    then_body = helper.make_graph(
        [with_scopes(helper.make_node("Add", ["t0", "t0"], ["a"], name="node_add"), None, "")],
        "then",
        [],
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4])],
    )
    else_body = helper.make_graph(
        [with_scopes(helper.make_node("Neg", ["t0"], ["b"], name="node_neg"), "enc.head", "neg")],
        "else",
        [],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [4])],
    )
    nodes = [
        with_scopes(helper.make_node("Relu", ["x"], ["t0"], name="node_relu"), "enc.layers.0", "relu"),
        with_scopes(helper.make_node("ReduceSum", ["t0"], ["s"], name="node_sum", keepdims=0), "enc.layers.0", "relu"),
        with_scopes(helper.make_node("Greater", ["s", "zero"], ["cond"], name="node_gt"), "", "gt"),
        with_scopes(
            helper.make_node("If", ["cond"], ["r"], name="node_if", then_branch=then_body, else_branch=else_body), "enc", "if"
        ),
        helper.make_node("Identity", ["r"], ["y"], name="node_Identity_9"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [onnx.numpy_helper.from_array(np.float32(0.0), "zero")],
        value_info=[helper.make_tensor_value_info("t0", TensorProto.FLOAT, [4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_scope_of_path_keeps_indices_on_their_container():
    assert scope_of_path("") == ""
    assert scope_of_path("m.encoder.layer.0.attention.self") == "/m/encoder/layer.0/attention/self"
    assert scope_of_path("stages.0.layers.1.layer.0") == "/stages.0/layers.1/layer.0"
    assert scope_of_path("0.conv") == "/0/conv"
    assert scope_of_path("blocks.0.1") == "/blocks.0.1"


def test_subgraph_references_are_renamed_consistently():
    model = if_model()
    x = np.array([1.0, -2.0, 3.0, -4.0], dtype=np.float32)
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    result = scope_names(model, "dynamo")
    onnx.checker.check_model(model, full_check=True)
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert np.array_equal(before[0], after[0])

    main = model.graph
    bodies = {attr.name: attr.g for attr in main.node[3].attribute}
    then_body, else_body = bodies["then_branch"], bodies["else_branch"]
    names = ["/enc/layers.0/relu", "/enc/layers.0/relu_1", "/gt", "/enc/if", "/enc/Identity"]  # Identity: its producer's
    assert [n.name for n in main.node] == names
    assert list(main.node[0].output) == ["/enc/layers.0/t0"]
    assert list(then_body.node[0].input) == ["/enc/layers.0/t0", "/enc/layers.0/t0"]  # outer reference
    assert then_body.node[0].name == "/enc/Add"  # no metadata: the owner's scope, op type
    assert list(else_body.node[0].input) == ["/enc/layers.0/t0"] and else_body.node[0].name == "/enc/head/neg"
    assert list(then_body.node[0].output) == ["a"]  # body outputs keep their names
    assert [v.name for v in main.value_info] == ["/enc/layers.0/t0"]
    assert list(main.node[4].output) == ["y"] and "zero" in main.node[2].input
    assert (result.nodes, result.renamed_nodes, result.renamed_tensors) == (7, 7, 4)


def test_torchscript_keeps_scoped_names_and_scopes_leftovers_by_consumer():
    nodes = [
        helper.make_node("Identity", ["w"], ["onnx::MatMul_7"], name="Identity_3"),
        helper.make_node("MatMul", ["x", "onnx::MatMul_7"], ["/enc/layer.1/q/MatMul_output_0"], name="/enc/layer.1/q/MatMul"),
        helper.make_node("Relu", ["/enc/layer.1/q/MatMul_output_0"], ["y"], name="/enc/Relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "ts",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [onnx.numpy_helper.from_array(np.ones((2, 2), dtype=np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    scope_names(model, "torchscript")
    assert [n.name for n in model.graph.node] == ["/enc/layer.1/q/Identity_3", "/enc/layer.1/q/MatMul", "/enc/Relu"]
    assert list(model.graph.node[1].input) == ["x", "/enc/layer.1/q/onnx::MatMul_7"]
    assert list(model.graph.node[0].input) == ["w"]  # initializers keep their names


def test_fixtures_cli_exports_both_exporters(tmp_path):
    with quiet():
        fixtures.main(str(tmp_path), archs="resnet")
    assert (tmp_path / "resnet-dynamo" / "model.onnx.data").exists()
    for exporter in cases.EXPORTERS:
        model = onnx.load(tmp_path / f"resnet-{exporter}" / "model.onnx", load_external_data=False)
        assert all(node.name.startswith("/") for node in model.graph.node)
