"""Inputs that run: `profile` and `extract --verify` on real exports whose dynamic sizes are tied
to each other and to their weights, and one clear line when onnxruntime still refuses them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tagger import profile
from tagger.commands.extract import extract
from tagger.errors import InputError
from tagger.inputs.dim_settings import DimSettings, parse_dim_option
from tagger.inputs.feeds import make_feeds
from tests.graphs import chain_model

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "tagger", *map(str, args)], capture_output=True, text=True, env=env, check=False)


def structure(path: Path) -> onnx.ModelProto:
    return onnx.load(path, load_external_data=False)


def test_cached_decoder_mask_is_past_plus_sequence_long_and_runs(pipeline_model):
    """optimum names the mask `past_sequence_length + sequence_length`: the expression decides it."""
    path = pipeline_model("llama_with_past")
    feeds = make_feeds(structure(path))
    assert feeds["attention_mask"].shape[1] == feeds["past_key_values.0.key"].shape[2] + feeds["input_ids"].shape[1]
    assert feeds.dims["past_sequence_length + sequence_length"] == 2
    assert 0 <= feeds["input_ids"].min() and feeds["input_ids"].max() < 100  # inside the vocabulary (100 rows)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, dict(feeds))[0]
    assert logits.shape == (1, 1, 100) and np.isfinite(logits).all()


def test_named_dims_are_set_and_the_expression_follows(pipeline_model):
    feeds = make_feeds(structure(pipeline_model("llama_with_past")), parse_dim_option("past_sequence_length=5,sequence_length=3,2"))
    assert feeds["input_ids"].shape == (2, 3)
    assert feeds["attention_mask"].shape == (2, 8)
    assert feeds["past_key_values.1.value"].shape == (2, 4, 5, 16)


def test_vit_channels_come_from_the_patch_conv_and_the_image_size_from_the_position_table(pipeline_model):
    """3 channels: the patch conv's weight; 32 x 32: the only size whose 16 patches + [CLS] match
    the 17 rows of the position table (16 x 16 would pass the conv and fail the Add)."""
    path = pipeline_model("vit_dynamic")
    feeds = make_feeds(structure(path), DimSettings(default=1))
    assert feeds["pixel_values"].shape == (1, 3, 32, 32)
    assert feeds.dims == {"batch_size": 1, "num_channels": 3, "height": 32, "width": 32}
    given = make_feeds(structure(path), parse_dim_option("height=32,width=32,num_channels=3,batch_size=2"))
    assert given["pixel_values"].shape == (2, 3, 32, 32)


@pytest.mark.parametrize("name", ["llama_with_past", "vit_dynamic", "merged_decoder"])
def test_profile_runs_with_default_inputs(name, pipeline_model):
    result = profile(pipeline_model(name), runs=1, warmup=0)
    assert result.kernel_us > 0 and result.modules[0].nodes > 100


@pytest.mark.parametrize(("name", "module"), [("llama_with_past", "m.model.layers.0"), ("vit_dynamic", "m.layers.1")])
def test_extract_verify_runs_with_default_inputs(name, module, pipeline_model, tmp_path):
    report = extract(pipeline_model(name), module=module, output=tmp_path / "cut.onnx", verify=True)
    assert report.verification is not None and report.verification.passed, report.verification
    assert report.verification.compared == len(report.outputs) > 0


def test_extract_verify_takes_inputs_from_npz(pipeline_model, tmp_path):
    path = pipeline_model("llama_with_past")
    feeds = make_feeds(structure(path), parse_dim_option("past_sequence_length=3,sequence_length=2"))
    np.savez(tmp_path / "inputs.npz", **feeds.arrays)
    result = run_cli(
        "extract",
        path,
        "--module",
        "m.model.layers.1",
        "--output",
        tmp_path / "l1.onnx",
        "--verify",
        "--inputs",
        tmp_path / "inputs.npz",
    )
    assert result.returncode == 0, result.stderr
    assert "verify passed" in result.stdout
    np.savez(tmp_path / "partial.npz", input_ids=feeds["input_ids"])
    result = run_cli("extract", path, "--module", "m.model.layers.1", "--verify", "--inputs", tmp_path / "partial.npz")
    assert result.returncode == 2 and "lacks model inputs" in result.stderr


def _unrelated_mask(path: Path, tmp_path: Path) -> Path:
    """The cached decoder with its mask length named as nothing else is: the file no longer says
    that it is past + sequence long (as a hand-named export may not)."""
    model = onnx.load(path)
    mask = next(v for v in model.graph.input if v.name == "attention_mask")
    mask.type.tensor_type.shape.dim[1].dim_param = "total_sequence_length"
    target = tmp_path / "unrelated.onnx"
    onnx.save(model, target)
    return target


@pytest.mark.parametrize(
    "command", [["profile"], ["extract", "--module", "m.model.layers.0", "--verify"]], ids=["profile", "extract"]
)
def test_an_unrelated_mask_length_is_found_by_raising_it(command, pipeline_model, tmp_path):
    """Nothing ties the mask's `total_sequence_length` to the past and new tokens: 1 each is
    refused, and raising the mask's symbol by one (`tagger.inputs.feeds._other_sizes`) runs."""
    path = _unrelated_mask(pipeline_model("llama_with_past"), tmp_path)
    result = run_cli(command[0], path, *command[1:])
    assert result.returncode == 0, result.stderr
    if command[0] == "profile":
        from tagger import profile

        assert profile(path, runs=1, warmup=0).dims["total_sequence_length"] == 2


@pytest.mark.parametrize(
    "command", [["profile"], ["extract", "--module", "m.model.layers.0", "--verify"]], ids=["profile", "extract"]
)
def test_inputs_onnxruntime_refuses_exit_2_with_one_line_that_says_how(command, pipeline_model, tmp_path):
    """Sizes given that disagree (a mask of 1 over a past of 3) are refused, whatever else is tried."""
    path = _unrelated_mask(pipeline_model("llama_with_past"), tmp_path)
    given = ["--dim", "total_sequence_length=1", "--dim", "past_sequence_length=3"]
    result = run_cli(command[0], path, *command[1:], *given)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    line = result.stderr
    assert "attention_mask[1, 1]" in line and "total_sequence_length=1" in line
    assert "--dim NAME=VALUE" in line and "--inputs NPZ" in line


def test_the_refused_model_runs_once_the_size_is_given(pipeline_model, tmp_path):
    path = _unrelated_mask(pipeline_model("llama_with_past"), tmp_path)
    result = run_cli(
        "profile", path, "--runs", "1", "--dim", "total_sequence_length=3", "--dim", "past_sequence_length=2", "--json"
    )
    assert result.returncode == 0, result.stderr
    assert '"total_sequence_length": 3' in result.stdout and '"attention_mask": [\n      1,\n      3' in result.stdout


@pytest.mark.parametrize(
    ("value", "message"),
    [("batch=x", "needs an integer VALUE"), ("x", "takes N or NAME=VALUE"), (0, "positive integer"), ("nosuch=2", "names no dim")],
)
def test_bad_dim_options_exit_2(value, message, tmp_path):
    path = tmp_path / "m.onnx"
    model = chain_model(["/a/Relu"])
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save(model, path)
    result = run_cli("profile", path, "--dim", value)
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1


def test_dims_sharing_a_name_share_a_value_and_unnamed_ones_can_be_set():
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 2])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph([helper.make_node("Concat", ["a", "b"], ["y"], axis=1)], "g", [a, b], [y]))
    feeds = make_feeds(model, parse_dim_option("4,b[1]=7"))
    assert feeds["a"].shape == (4, 2) and feeds["b"].shape == (4, 7)
    with pytest.raises(InputError, match="names no dim"):
        make_feeds(model, parse_dim_option("m=2"))


def test_ids_stay_inside_the_smallest_table_they_index_through_casts_and_reshapes():
    """`ids` reach a 1-row table (through Cast and Unsqueeze) and a 50-row one: only 0 is valid;
    `mask` reaches no table and keeps 0/1; `x`'s last dim is the MatMul weight's rows."""
    from onnx import TensorProto, helper, numpy_helper

    tables = [
        numpy_helper.from_array(np.zeros((1, 4), np.float32), "types"),
        numpy_helper.from_array(np.zeros((50, 4), np.float32), "words"),
        numpy_helper.from_array(np.zeros((8, 4), np.float32), "w"),
        numpy_helper.from_array(np.array([0], np.int64), "axes"),
    ]
    nodes = [
        helper.make_node("Cast", ["ids"], ["ids32"], to=TensorProto.INT32),
        helper.make_node("Unsqueeze", ["ids32", "axes"], ["ids3"]),
        helper.make_node("Gather", ["types", "ids3"], ["t"]),
        helper.make_node("Gather", ["words", "ids"], ["e"]),
        helper.make_node("MatMul", ["x", "w"], ["y"]),
    ]
    inputs = [
        helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "hidden"]),
    ]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("t", "e", "y")]
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, tables))
    feeds = make_feeds(model, 64)
    assert feeds["ids"].shape == (64, 64) and not feeds["ids"].any()
    assert set(np.unique(feeds["mask"])) == {0, 1}
    assert feeds["x"].shape == (64, 8) and feeds.dims["hidden"] == 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    session.run(None, dict(feeds))


@pytest.mark.parametrize(
    "args",
    [["profile", "--inputs", "x.npz", "--dim", "2"], ["extract", "--module", "a", "--verify", "--inputs", "x.npz", "--dim", "n=2"]],
    ids=["profile", "extract"],
)
def test_inputs_and_dims_exclude_each_other(args, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(chain_model(["/a/Relu"]), path)
    result = run_cli(args[0], path, *args[1:])
    assert result.returncode == 2 and "pass one of them" in result.stderr


def test_arrays_from_npz_that_onnxruntime_refuses_exit_2_naming_the_file(pipeline_model, tmp_path):
    path = pipeline_model("llama_with_past")
    feeds = make_feeds(structure(path))
    np.savez(tmp_path / "bad.npz", **{**feeds.arrays, "attention_mask": np.ones((1, 1), np.int64)})  # 1 long, not 2
    result = run_cli("profile", path, "--inputs", tmp_path / "bad.npz")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert f"refused the inputs from {tmp_path / 'bad.npz'}" in result.stderr and "check the arrays of --inputs" in result.stderr
