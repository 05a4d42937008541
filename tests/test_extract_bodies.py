"""`tagger extract` on modules that live inside control-flow bodies (issue 12, failure 3).

Two real merged decoders, every node inside the two branches of one `If` on `use_cache_branch`:
optimum's own T5 `decoder_model_merged.onnx` (`data/optimum/`, `data/make_optimum_fixtures.py`) and
a tiny GPT-2 merged here as optimum merges: two TorchScript exports of one model, without and with
a KV cache, as the else and then branch, their weights moved into the main graph. A module is cut
out of the branch it lives in; every file passes the full checker, loads in onnxruntime and
reproduces the full model's own values.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from tagger import extract, extract_all
from tagger.errors import InputError
from tests.test_extract import load, props, run_cli

REPO_ROOT = Path(__file__).resolve().parents[1]
T5_MERGED = REPO_ROOT / "data" / "optimum" / "t5-decoder_model_merged.onnx"
LAYERS = 2


def _branch(model: onnx.ModelProto, attribute: str) -> onnx.GraphProto:
    node = model.graph.node[0]
    return next(a.g for a in node.attribute if a.name == attribute)


def _gpt2_exports(directory: Path) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """TorchScript exports of one tiny GPT-2 LM: a first step without past and a step with past."""
    import torch
    import transformers as tf
    from transformers import DynamicCache

    from bench.cases import _quiet

    class Step(torch.nn.Module):
        """(ids, mask, k0, v0, k1, v1) -> (logits, present k0, v0, k1, v1); no past tensors: the first step."""

        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, *past):
            cache = DynamicCache()
            for i in range(0, len(past), 2):
                cache.update(past[i], past[i + 1], i // 2)
            out = self.m(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True)
            return (out.logits, *(t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)))

    torch.manual_seed(0)
    config = tf.GPT2Config(n_embd=32, n_layer=LAYERS, n_head=2, vocab_size=50, n_positions=32, bos_token_id=0, eos_token_id=0)
    with _quiet():
        step = Step(tf.GPT2LMHeadModel(config)).eval()
    with torch.no_grad():
        for parameter in step.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    past_names = [f"past_key_values.{layer}.{kind}" for layer in range(LAYERS) for kind in ("key", "value")]
    outputs = ["logits", *(name.replace("past_key_values", "present") for name in past_names)]
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total"}, "logits": {0: "batch", 1: "seq"}}
    axes |= {name: {0: "batch", 2: "total"} for name in outputs[1:]}
    ids = torch.randint(0, 50, (1, 3))
    past = tuple(torch.randn(1, 2, 3, 16) for _ in past_names)
    exports = []
    for file, args, names in (
        ("no_past.onnx", (ids, torch.ones(1, 3, dtype=torch.long)), ["input_ids", "attention_mask"]),
        ("with_past.onnx", (ids[:, :1], torch.ones(1, 4, dtype=torch.long), *past), ["input_ids", "attention_mask", *past_names]),
    ):
        path = directory / file
        with _quiet():
            torch.onnx.export(step, args, str(path), input_names=names, output_names=outputs, dynamo=False,
                              dynamic_axes=axes | {name: {0: "batch", 2: "past"} for name in past_names})  # fmt: skip
        exports.append(onnx.load(path))
    return exports[0], exports[1]


def merge_decoders(no_past: onnx.ModelProto, with_past: onnx.ModelProto) -> onnx.ModelProto:
    """One model as optimum's `merge_decoders` writes it: an `If` on a bool `use_cache_branch`
    input, then = with past, else = no past; initializers of both in the main graph (equal ones
    shared, a name whose content differs renamed in the no-past branch); branches without inputs."""
    shared = {t.name: t for t in with_past.graph.initializer}
    renamed: dict[str, str] = {}
    extra: list[onnx.TensorProto] = []
    for tensor in no_past.graph.initializer:
        if tensor.name in shared and shared[tensor.name].SerializeToString() != tensor.SerializeToString():
            copy = onnx.TensorProto()
            copy.CopyFrom(tensor)
            copy.name = renamed[tensor.name] = f"{tensor.name}__no_past"
            extra.append(copy)
        elif tensor.name not in shared:
            extra.append(tensor)

    def branch(model: onnx.ModelProto, name: str) -> onnx.GraphProto:
        nodes = []
        for node in model.graph.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.input[:] = [renamed.get(n, n) for n in node.input] if model is no_past else node.input
            nodes.append(copy)
        return helper.make_graph(nodes, name, [], list(model.graph.output), value_info=list(model.graph.value_info))

    flag = helper.make_tensor_value_info("use_cache_branch", TensorProto.BOOL, [1])
    node = helper.make_node("If", ["use_cache_branch"], [o.name for o in with_past.graph.output], name="optimum::if",
                            then_branch=branch(with_past, "with_past"), else_branch=branch(no_past, "no_past"))  # fmt: skip
    graph = helper.make_graph([node], "merged", [*with_past.graph.input, flag], list(with_past.graph.output),
                              initializer=[*with_past.graph.initializer, *extra])  # fmt: skip
    merged = helper.make_model(graph, opset_imports=list(with_past.opset_import), ir_version=with_past.ir_version)
    onnx.checker.check_model(merged, full_check=True)
    return merged


@pytest.fixture(scope="module")
def gpt2_merged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("gpt2-merged")
    path = directory / "decoder_model_merged.onnx"
    onnx.save(merge_decoders(*_gpt2_exports(directory)), path)
    return path


def ort_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _checked_and_run(path: Path) -> None:
    """The file passes the full checker and onnxruntime loads it."""
    onnx.checker.check_model(str(path), full_check=True)
    ort_session(path)


# --------------------------------------------------------------------------------------------
# one module, from each branch


def _realistic_feeds(take_past: bool) -> dict[str, np.ndarray]:
    """Inputs a generation loop feeds: with past, one new token after two cached ones; else three tokens."""
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(0, 50, (1, 1 if take_past else 3)), "attention_mask": np.ones((1, 3), np.int64)}
    for layer in range(LAYERS):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{layer}.{kind}"] = rng.standard_normal((1, 2, 2, 16)).astype(np.float32)
    feeds["use_cache_branch"] = np.array([take_past])
    return feeds


def _run_exposing(path: Path, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """Run the model at `path` with `names` added as graph outputs (their types left to onnxruntime)."""
    model = onnx.load(path)
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names if name not in present)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    wanted = [i.name for i in session.get_inputs()]
    return dict(zip(names, session.run(names, {name: feeds[name] for name in wanted}), strict=True))


def test_body_models_compute_what_the_if_computes(gpt2_merged, tmp_path):
    """The premise of body verification: the branch made a model, fed the outer values, gives the
    full model's outputs when the condition takes that branch."""
    full = ort_session(gpt2_merged)
    for branch, take in (("then", True), ("else", False)):
        report = extract(gpt2_merged, module="", branch=branch, output=tmp_path / f"{branch}.onnx")
        _checked_and_run(Path(report.output))
        feeds = _realistic_feeds(take)
        body = ort_session(Path(report.output))
        names = [o.name for o in full.get_outputs()]
        assert sorted(o.name for o in body.get_outputs()) == sorted(names)
        got = body.run(names, {i.name: feeds[i.name] for i in body.get_inputs()})
        for a, b in zip(got, full.run(names, feeds), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("branch", ["then", "else"])
def test_gpt2_block_is_cut_from_the_chosen_branch_verbatim_with_its_outer_inputs(gpt2_merged, branch, tmp_path):
    output = tmp_path / f"h0.{branch}.onnx"
    report = extract(gpt2_merged, module="m.transformer.h.0", branch=branch, output=output)
    assert report.branch == f"If 'optimum::if'/{branch}_branch"
    _checked_and_run(output)
    source_nodes = {node.name: node.SerializeToString() for node in _branch(load(gpt2_merged), f"{branch}_branch").node}
    extracted = load(output)
    assert all(props(node)["hierarchy.module"].startswith("m.transformer.h.0") for node in extracted.graph.node)
    for node in extracted.graph.node:  # the source is untagged: tagged in memory, else verbatim
        del node.metadata_props[:]
        assert source_nodes[node.name] == node.SerializeToString()
    inputs = [spec.name for spec in report.inputs]
    if branch == "then":
        assert any(name.startswith("past_key_values.0.") for name in inputs)  # an outer-scope graph input
    else:
        assert not any(name.startswith("past_key_values") for name in inputs)
    assert "m.transformer.h.0.attn.c_attn.weight" in {t.name for t in extracted.graph.initializer}  # a main-graph weight


@pytest.mark.parametrize("branch", ["then", "else"])
def test_gpt2_block_reproduces_the_branch_values_on_generation_inputs(gpt2_merged, branch, tmp_path):
    """The extracted block, fed the values its inputs take inside the branch, computes the values
    its outputs take there (the branch's values from the branch made a model, proven equal to the
    If's by the test above), on the inputs of a real generation step."""
    whole = extract(gpt2_merged, module="", branch=branch, output=tmp_path / "branch.onnx")
    block = extract(gpt2_merged, module="m.transformer.h.0", branch=branch, output=tmp_path / "h0.onnx")
    names = [spec.name for spec in (*block.inputs, *block.outputs)]
    values = _run_exposing(Path(whole.output), _realistic_feeds(branch == "then"), names)
    got = ort_session(Path(block.output)).run(None, {spec.name: values[spec.name] for spec in block.inputs})
    for spec, value in zip(block.outputs, got, strict=True):
        np.testing.assert_array_equal(value, values[spec.name])


def test_verify_on_default_inputs_passes_for_the_no_past_branch(gpt2_merged, tmp_path):
    report = extract(gpt2_merged, module="m.transformer.h.1", branch="else", output=tmp_path / "h1.onnx", verify=True)
    assert report.verification.passed and report.verification.exact == report.verification.compared == len(report.outputs)


def test_t5_merged_decoder_block_is_cut_from_each_branch(tmp_path):
    for branch in ("then_branch", "else_branch"):
        report = extract(T5_MERGED, module="decoder.block.0", branch=branch, output=tmp_path / f"{branch}.onnx", verify=True)
        assert report.verification.passed and report.verification.exact == report.verification.compared > 0
        _checked_and_run(Path(report.output))
        modules = [props(node)["hierarchy.module"] for node in load(report.output).graph.node]
        assert report.nodes == sum(module.startswith("decoder.block.0") for module in modules)


def test_default_output_names_the_branch(tmp_path):
    source = tmp_path / "merged.onnx"
    source.write_bytes(T5_MERGED.read_bytes())
    report = extract(source, module="decoder.final_layer_norm", branch="else")
    assert Path(report.output).name == "merged.decoder.final_layer_norm.else_branch.onnx"
    assert source.read_bytes() == T5_MERGED.read_bytes()


# --------------------------------------------------------------------------------------------
# every module at a depth


@pytest.mark.parametrize("depth", [2, 3])
def test_extract_all_writes_every_body_module_of_both_branches(depth, tmp_path):
    result = extract_all(T5_MERGED, depth, tmp_path / "out", verify=True)
    assert result.failures == {}
    index = json.loads(Path(result.index).read_text())
    entries = {(e["module"], e["branch"]): e for e in index["modules"]}
    modules = {module for module, _ in entries}
    assert ("decoder.block" in modules) if depth == 2 else ({"decoder.block.0", "decoder.block.1"} <= modules)
    for module in modules:  # T5's decoder has every module in both branches
        assert {branch for m, branch in entries if m == module} == {"If 'optimum::if'/then_branch", "If 'optimum::if'/else_branch"}
    for report in result.reports:
        assert report.verification.passed
        assert Path(report.output).name.endswith(f".{report.branch.split('/')[-1]}.onnx")
        _checked_and_run(Path(report.output))


def test_extract_all_on_the_gpt2_merged_decoder_verifies_each_layer_of_each_branch(gpt2_merged, tmp_path):
    """Sizes of a generation step (two cached tokens, three in all): the with-past branch runs."""
    result = extract_all(gpt2_merged, 4, tmp_path / "out", verify=True, dim={"past": 2, "total": 3})
    assert result.failures == {}
    written = {(r.module, r.branch.split("/")[-1]) for r in result.reports}
    for layer in range(LAYERS):
        assert {(f"m.transformer.h.{layer}", "then_branch"), (f"m.transformer.h.{layer}", "else_branch")} <= written
    for report in result.reports:
        assert report.verification.passed and report.verification.exact == report.verification.compared > 0
        _checked_and_run(Path(report.output))


def test_verify_of_a_branch_finds_sizes_that_run_and_refused_sizes_are_one_line_saying_how(gpt2_merged, tmp_path):
    """The default sizes (all 1) give a mask of length 1 after one cached token: onnxruntime refuses
    the with-past branch, and the mask's size raised by one runs (`tagger.inputs.feeds`). Sizes given
    that disagree are refused: the error says which sizes were used and how to pass others."""
    output = tmp_path / "h0.onnx"
    default = run_cli("extract", gpt2_merged, "--module", "m.transformer.h.0", "--branch", "then", "--verify", "--output", output)
    assert default.returncode == 0 and "verify passed" in default.stdout, default.stderr
    refused = run_cli("extract", gpt2_merged, "--module", "m.transformer.h.0", "--branch", "then", "--verify",
                      "--dim", "past=2", "--dim", "total=1", "--output", output)  # fmt: skip
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "--dim NAME=VALUE" in refused.stderr and "past=2" in refused.stderr
    sized = run_cli("extract", gpt2_merged, "--module", "m.transformer.h.0", "--branch", "then", "--verify",
                    "--dim", "past=2", "--dim", "total=3", "--output", output)  # fmt: skip
    assert sized.returncode == 0, sized.stderr
    assert "in If 'optimum::if'/then_branch" in sized.stdout and "verify passed" in sized.stdout


# --------------------------------------------------------------------------------------------
# errors name the branch


def test_a_module_in_both_branches_without_branch_is_one_error_naming_them():
    with pytest.raises(InputError) as caught:
        extract(T5_MERGED, module="decoder.block.0")
    message = str(caught.value)
    assert "If 'optimum::if'/then_branch" in message and "If 'optimum::if'/else_branch" in message
    assert "branch then" in message and "branch else" in message and "--" not in message  # the library names its parameter


def test_cli_errors_name_the_branch_and_exit_2(tmp_path):
    both = run_cli("extract", T5_MERGED, "--module", "decoder.block.0", "--output", tmp_path / "x.onnx")
    unknown = run_cli("extract", T5_MERGED, "--module", "decoder.block.0", "--branch", "body", "--output", tmp_path / "x.onnx")
    misspelt = run_cli("extract", T5_MERGED, "--module", "decoder.blok.0")
    for result in (both, unknown, misspelt):
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--branch then" in both.stderr and "--branch else" in both.stderr and "no body named 'body'" in unknown.stderr
    assert "decoder.block" in misspelt.stderr  # nearby modules are looked up in the bodies too
    assert not (tmp_path / "x.onnx").exists()


def test_cli_extract_all_at_depth_2_on_the_merged_decoder(tmp_path):
    result = run_cli("extract", T5_MERGED, "--all", "--depth", "2", "--out_dir", tmp_path / "d2", "--verify")
    assert result.returncode == 0, result.stderr
    # decoder.block and decoder.final_layer_norm in each branch; the tied embedding is `shared` (depth 1)
    assert "4 modules extracted, verify passed 4 of 4" in result.stdout
    deepest = run_cli("extract", T5_MERGED, "--all", "--depth", "12", "--out_dir", tmp_path / "d12")
    assert deepest.returncode == 2 and "the deepest module path has 7 components" in deepest.stderr


# --------------------------------------------------------------------------------------------
# Loop bodies


def _loop_model() -> onnx.ModelProto:
    """A Loop whose body holds modules `rnn.cell` and `rnn.out` and reads `x` from the main graph."""
    body = helper.make_graph(
        [
            helper.make_node("Add", ["acc", "x"], ["cell_sum"], name="/rnn/cell/Add"),
            helper.make_node("Tanh", ["cell_sum"], ["cell_out"], name="/rnn/cell/Tanh"),
            helper.make_node("Relu", ["cell_out"], ["acc_next"], name="/rnn/out/Relu"),
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="/rnn/out/Identity"),
        ],
        "loop_body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_next", TensorProto.FLOAT, [4])],
    )  # fmt: skip
    nodes = [
        helper.make_node("Constant", [], ["trips"], name="/Constant", value=helper.make_tensor("t", TensorProto.INT64, [], [3])),
        helper.make_node("Constant", [], ["go"], name="/Constant_1", value=helper.make_tensor("g", TensorProto.BOOL, [], [True])),
        helper.make_node("Loop", ["trips", "go", "x"], ["y"], name="/rnn/Loop", body=body),
    ]
    graph = helper.make_graph(nodes, "loop", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_module_in_a_loop_body_is_cut_with_its_outer_reads_and_not_claimed_verified(tmp_path):
    source = tmp_path / "loop.onnx"
    onnx.save(_loop_model(), source)
    report = extract(source, module="rnn.cell", output=tmp_path / "cell.onnx", verify=True)
    assert report.branch == "Loop '/rnn/Loop'/body"
    assert [s.name for s in report.inputs] == ["acc", "x"] and [s.name for s in report.outputs] == ["cell_out"]
    _checked_and_run(Path(report.output))
    feeds = {"acc": np.arange(4, dtype=np.float32), "x": np.ones(4, np.float32)}
    (got,) = ort_session(Path(report.output)).run(None, feeds)
    np.testing.assert_allclose(got, np.tanh(feeds["acc"] + feeds["x"]), rtol=1e-6)
    assert not report.verification.passed and "takes new inputs every iteration" in report.verification.failures[0]
