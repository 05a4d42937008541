"""The files `tagger profile` writes for viewers, each checked against what its viewer reads:
Perfetto / chrome://tracing (Trace Event Format), speedscope (its published JSON schema, vendored
in tests/data/speedscope) and Model Explorer (its node data types and the ids its ONNX adapter
gives; those checks skip where `ai-edge-model-explorer` / `model-explorer-onnx` are absent)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from tagger import profile, retag
from tagger.model.index import build_index
from tagger.reporting.node_data import ExplorerId, explorer_ids, merge, node_data

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEEDSCOPE_SCHEMA = REPO_ROOT / "tests" / "data" / "speedscope" / "file-format-schema.json"


def _strict_json(path: Path):
    """JSON as a browser's `JSON.parse` reads it: NaN and Infinity are errors."""

    def refuse(constant: str):
        raise ValueError(f"{path.name}: {constant} is not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


@pytest.fixture(scope="module")
def written(built_cases, tmp_path_factory):
    """BERT (torchscript, no namespace of its own) retagged with `--namespace`, profiled at the
    default level with all three files."""
    directory = tmp_path_factory.mktemp("viewers")
    tagged = directory / "bert.onnx"
    retag(built_cases[("bert", "torchscript", "none")].path, output=tagged, namespace=True)
    files = {name: directory / f"{name}.json" for name in ("perfetto", "speedscope", "node_data")}
    return tagged, files, profile(tagged, runs=2, warmup=1, **files)


def test_the_perfetto_trace_has_the_fields_perfetto_requires_and_its_spans_nest(written):
    _, files, result = written
    assert result.perfetto == str(files["perfetto"])
    document = _strict_json(files["perfetto"])
    events = document["traceEvents"]
    assert document["displayTimeUnit"] in {"ms", "ns"}
    for event in events:
        assert event["ph"] in {"X", "M"} and isinstance(event["name"], str) and event["name"]
        assert isinstance(event["pid"], int) and isinstance(event["tid"], int)
        if event["ph"] == "M":
            assert event["name"] in {"process_name", "thread_name"} and isinstance(event["args"]["name"], str)
        else:
            assert isinstance(event["ts"], int | float) and isinstance(event["dur"], int | float) and event["dur"] >= 0
    complete = [e for e in events if e["ph"] == "X"]
    assert Counter(e["cat"] for e in complete)["kernel"] == 2 * len(result.nodes)
    for thread in {(e["pid"], e["tid"]) for e in complete}:  # X events on one thread nest: a stack, never a crossing
        stack: list[float] = []
        for event in sorted((e for e in complete if (e["pid"], e["tid"]) == thread), key=lambda e: (e["ts"], -e["dur"])):
            while stack and stack[-1] <= event["ts"]:
                stack.pop()
            end = event["ts"] + event["dur"]
            assert not stack or end <= stack[-1] + 1e-6, event
            stack.append(end)


def test_the_speedscope_file_validates_against_speedscopes_schema(written):
    import jsonschema

    _, files, _ = written
    schema = json.loads(SPEEDSCOPE_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    document = _strict_json(files["speedscope"])
    assert list(validator.iter_errors(document)) == []
    broken = json.loads(json.dumps(document))
    broken["profiles"][0]["events"][0]["type"] = "X"  # the schema is strict enough to refuse a bad event
    assert list(validator.iter_errors(broken))


def test_the_node_data_loads_as_model_explorers_node_data(written):
    dacite = pytest.importorskip("dacite")
    builder = pytest.importorskip("model_explorer.node_data_builder")
    _, files, result = written
    document = _strict_json(files["node_data"])
    loaded = dacite.from_dict(builder.ModelNodeData, {"graphsData": document}, config=dacite.Config(check_types=True))
    (graph,) = loaded.graphsData.values()
    assert sum(r.value for r in graph.results.values()) == pytest.approx(result.kernel_us, rel=1e-3)
    assert graph.gradient and graph.name.startswith("µs per run")


def _explorer_graphs(path: Path) -> dict:
    """Model Explorer's ONNX adapter's graphs: id -> {node id: node}."""
    adapter = pytest.importorskip("model_explorer_onnx.main")
    graphs = adapter.ONNXAdapter().convert(str(path), {})["graphs"]
    return {graph.id: {node.id: node for node in graph.nodes} for graph in graphs}


def _as_the_web_app_reads_it(document: dict, shown_graph: str) -> dict:
    """`getNodeDataProviderData` of Model Explorer's web app: a bare `{"results": ...}` is the
    graph on screen's, anything else is keyed by graph id."""
    if "results" in document and "results" not in document["results"]:
        return {shown_graph: document}
    return document


def test_every_node_data_key_is_a_node_model_explorers_onnx_adapter_draws(written):
    tagged, files, _ = written
    graphs = _explorer_graphs(tagged)
    data = _as_the_web_app_reads_it(_strict_json(files["node_data"]), next(iter(graphs)))
    assert set(data) <= set(graphs)
    for graph_id, entry in data.items():
        assert set(entry["results"]) <= set(graphs[graph_id]), set(entry["results"]) - set(graphs[graph_id])


def test_the_layer_view_sums_to_each_modules_total(written):
    """Model Explorer sums a layer's op nodes itself; with the file's namespaces written from the
    tags (`retag --namespace`), each layer's sum is the module's total."""
    tagged, files, result = written
    graphs = _explorer_graphs(tagged)
    ((graph_id, entry),) = _strict_json(files["node_data"]).items()
    nodes = graphs[graph_id]
    for module in (m for m in result.modules if m.tag):  # a module with own nodes has its tag, the layer's path
        layer = f"{graph_id}/{module.tag.strip('/')}".rstrip("/")
        inside = [v["value"] for n, v in entry["results"].items() if (nodes[n].namespace + "/").startswith(layer + "/")]
        assert sum(inside) == pytest.approx(module.total_us, abs=1e-3 * (len(inside) + 1)), module.module
    assert entry["modules"] == {m.module: pytest.approx(m.total_us, abs=1e-3) for m in result.modules}


def _graph_with_bodies() -> onnx.ModelProto:
    """A main graph with an unnamed node, two nodes sharing a name, an If and a Loop, each body
    with named nodes."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    branch = lambda label: helper.make_graph(  # noqa: E731
        [helper.make_node("Neg", ["a"], [f"b_{label}"], name="neg")],
        label,
        [],
        [helper.make_tensor_value_info(f"b_{label}", TensorProto.FLOAT, [2])],
    )
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep"),
            helper.make_node("Abs", ["v_in"], ["v_out"], name="abs"),
        ],
        "loop_body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [2]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [2]),
        ],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="relu"),
        helper.make_node("Sigmoid", ["a"], ["s"]),  # unnamed
        helper.make_node("Tanh", ["s"], ["t1"], name="twice"),
        helper.make_node("Tanh", ["t1"], ["t2"], name="twice"),
        helper.make_node("Constant", [], ["c"], name="flag", value=helper.make_tensor("c", TensorProto.BOOL, [], [True])),
        helper.make_node("If", ["c"], ["f"], name="choose", then_branch=branch("then"), else_branch=branch("else")),
        helper.make_node("Constant", [], ["n"], name="count", value=helper.make_tensor("n", TensorProto.INT64, [], [2])),
        helper.make_node("Loop", ["n", "c", "f"], ["looped"], name="repeat", body=body),
        helper.make_node("Add", ["looped", "t2"], ["y"], name="add"),
    ]
    graph = helper.make_graph(nodes, "", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_explorer_ids_follow_the_onnx_adapter_and_leave_out_renamed_nodes(tmp_path):
    model = _graph_with_bodies()
    named = onnx.ModelProto()
    named.CopyFrom(model)
    named.graph.name = "g"
    onnx.checker.check_model(named, full_check=True)  # valid, but for the main graph's name it leaves out
    index = build_index(model)
    ids = dict(zip(((index.graph_of[i], v.name, v.op_type) for i, v in enumerate(index.views)), explorer_ids(index), strict=True))
    main = ""  # the graph has no name: the adapter's id is the empty name
    assert ids[0, "relu", "Relu"] == ExplorerId(main, "relu")
    assert ids[0, "", "Sigmoid"] is None  # unnamed: the adapter names it
    assert ids[0, "twice", "Tanh"] is None  # shared: the adapter renames one of them
    assert ids[0, "choose", "If"] == ExplorerId(main, "choose")
    branches = {v for k, v in ids.items() if k[1] == "neg"}
    assert branches == {ExplorerId(main, "choose/then_branch/neg"), ExplorerId(main, "choose/else_branch/neg")}
    assert {v for k, v in ids.items() if k[1] in ("keep", "abs")} == {
        ExplorerId("repeat/body", "keep"),
        ExplorerId("repeat/body", "abs"),
    }
    path = tmp_path / "bodies.onnx"
    onnx.save(model, path)
    graphs = _explorer_graphs(path)  # the adapter itself, where it is installed
    for found in (i for i in ids.values() if i is not None):
        assert found.node in graphs[found.graph], found


def test_node_data_takes_a_value_per_node_with_a_label_and_module_values():
    one = node_data({"a": 1.5, "b": "int8"}, "g", modules={"m": 2.0}, label="error", gradient=None)
    assert one == {"g": {"name": "error", "results": {"a": {"value": 1.5}, "b": {"value": "int8"}}, "modules": {"m": 2.0}}}
    both = merge(one, node_data({"c": 3}, "h"))
    assert set(both) == {"g", "h"} and both["h"]["gradient"][0] == {"stop": 0, "bgColor": "#ffffff"}
    with pytest.raises(ValueError):
        node_data({"a": float("nan")}, "g")
    with pytest.raises(TypeError):
        node_data({"a": True}, "g")
    with pytest.raises(ValueError):
        merge(one, one)


def test_the_cli_writes_the_three_files_and_the_comparison(built_cases, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    files = [tmp_path / f"{name}.json" for name in ("p", "s", "n")]
    command = [sys.executable, "-m", "tagger", "profile", built_cases[("bert", "dynamo", "none")].path, "--runs", "1"]
    command += ["--perfetto", files[0], "--speedscope", files[1], "--node-data", files[2], "--compare-unoptimized"]
    done = subprocess.run(list(map(str, command)), capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert all(_strict_json(path) for path in files)
    assert "graph optimizations off vs all (ORT_ENABLE_ALL):" in done.stdout
    assert "node data: " in done.stdout


def test_node_data_of_a_merged_decoder_keys_the_if_branches_as_the_adapter_draws_them(pipeline_model, tmp_path):
    """optimum's merged decoder: every node sits in a branch of one If, which the adapter draws inside
    the main graph as `<If>/<branch>/<node>`; the If's own time (control-flow overhead) is on no node."""
    path = pipeline_model("merged_decoder")
    out = tmp_path / "merged.node-data.json"
    result = profile(path, runs=1, warmup=1, node_data=out)
    ((graph_id, entry),) = _strict_json(out).items()
    assert graph_id == onnx.load(path, load_external_data=False).graph.name
    assert all(key.startswith("optimum::if/then_branch/") or key.startswith("optimum::if/else_branch/") for key in entry["results"])
    held = sum(value["value"] for value in entry["results"].values())
    assert held == pytest.approx(result.kernel_us - result.control_flow_us - result.unmatched_us, rel=0.1)
    graphs = _explorer_graphs(path)
    assert set(entry["results"]) <= set(graphs[graph_id])
