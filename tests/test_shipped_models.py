"""Every command runs on what users ship (issue 23): models made by real deployment tools.

- a file onnxruntime cannot load is bad input (exit 2, its first line), from every command that
  runs onnxruntime;
- `extract --verify` on fp16 files compares within a few ULPs of each tensor's magnitude (float32
  stays bit-exact), and says which tolerance it used;
- models whose data files share a name (`model.onnx.data`) tag into one folder side by side;
- generated feeds run: sizes stated beside the model (`config.json`, `preprocessor_config.json`,
  `genai_config.json`), other image sizes tried when onnxruntime refuses the first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bench import cases

REPO_ROOT = Path(__file__).resolve().parents[1]
GENAI = REPO_ROOT / "data" / "genai"


def run_cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "tagger", *map(str, args)], capture_output=True, text=True, env=env, check=False)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory):
    """(arch, exporter) -> a plain `torch.onnx.export` of the tiny model (`bench.cases.export`), built once."""
    directory = tmp_path_factory.mktemp("exports")
    return lambda arch, exporter: cases.export(arch, exporter, directory)


def refused_by_onnxruntime(path: Path, optimize: bool = False) -> str:
    options = ort.SessionOptions()
    options.log_severity_level = 4
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with pytest.raises(Exception) as caught:  # noqa: B017 - onnxruntime raises its own types
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return str(caught.value)


# ------------------------------------------------------------------------------------------
# 1. a model onnxruntime cannot load is bad input


@pytest.fixture(scope="module")
def converter_fp16(exports, tmp_path_factory) -> Path:
    """onnxconverter-common's fp16 of GPT-2 with `keep_io_types=True`: it keeps a Cast to float
    whose output it typed float16, which onnxruntime refuses to load (onnx.checker accepts it;
    only its full check, with shape inference, sees the mismatch)."""
    from onnxconverter_common.float16 import convert_float_to_float16

    model = onnx.load(exports("gpt2", "torchscript"))
    path = tmp_path_factory.mktemp("occ") / "gpt2.fp16.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "-inf will be truncated to -10000.0"
        onnx.save(convert_float_to_float16(model, keep_io_types=True), path)
    onnx.checker.check_model(path)
    assert "does not match expected type" in refused_by_onnxruntime(path)
    return path


@pytest.fixture(scope="module")
def ort_optimized(exports, tmp_path_factory) -> Path:
    """onnxruntime's transformer optimizer on BERT at its default level: a model that loads with
    graph optimizations off but not on (its initializers are added twice: "Attempt to replace
    the existing tensor")."""
    from onnxruntime.transformers.optimizer import optimize_model

    path = tmp_path_factory.mktemp("optimized") / "bert.opt.onnx"
    result = optimize_model(str(exports("bert", "torchscript")), model_type="bert", num_heads=2, hidden_size=32, use_gpu=False)
    onnx.save(result.model, path)
    assert "Attempt to replace the existing tensor" in refused_by_onnxruntime(path, optimize=True)
    return path


@pytest.mark.parametrize(
    "command",
    [
        ["profile", "--runs", "1"],
        ["extract", "--module", "m.h.0", "--verify", "--output", "{tmp}/h0.onnx"],
        ["extract", "--all", "--depth", "2", "--out_dir", "{tmp}/all", "--verify"],
    ],
    ids=["profile", "extract-verify", "extract-all-verify"],
)
def test_a_model_onnxruntime_cannot_load_exits_2_with_its_first_line(command, converter_fp16, tmp_path):
    result = run_cli(command[0], converter_fp16, *(arg.format(tmp=tmp_path) for arg in command[1:]))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "internal error" not in result.stderr
    assert result.stderr.startswith(f"tagger: error: onnxruntime cannot load {converter_fp16}: Type Error: ")
    assert "[ONNXRuntimeError]" not in result.stderr  # onnxruntime's prefix is dropped, its message kept


def test_a_model_onnxruntime_cannot_load_optimized_exits_2_from_profile_unless_optimize_off(ort_optimized):
    assert run_cli("profile", ort_optimized, "--runs", "1", "--optimize", "off").returncode == 0  # it runs unoptimized
    for flags in ([], ["--optimize"]):  # the default (all) and a bare --optimize: what sessions run
        result = run_cli("profile", ort_optimized, "--runs", "1", *flags)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and f"onnxruntime cannot load {ort_optimized}: " in result.stderr
        assert result.stderr.endswith("(graph optimizations all; --optimize off profiles it unoptimized)\n")


# ------------------------------------------------------------------------------------------
# 2. fp16 verification: a tolerance that follows the dtype


@pytest.fixture(scope="module")
def ort_fp16(exports, tmp_path_factory) -> Path:
    """GPT-2 converted by onnxruntime's own fp16 converter (it loads and runs), inputs kept float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    path = tmp_path_factory.mktemp("fp16") / "gpt2.fp16.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx.save(convert_float_to_float16(onnx.load(exports("gpt2", "torchscript")), keep_io_types=True), path)
    return path


def test_fp16_module_verifies_within_a_few_ulps_and_says_so(ort_fp16, tmp_path):
    """The CPU provider runs the block's ops in float32 and drops the Cast pair at the cut inside
    the full model, so the block's output differs by a rounding step: not bit-exact, but within
    `ULPS` units in the last place at the tensor's magnitude."""
    from tagger.commands.extract import extract
    from tagger.commands.extract.verify import ULPS

    result = run_cli("extract", ort_fp16, "--module", "m.h.0", "--output", tmp_path / "h0.onnx", "--verify")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "verify passed: 0 of 1 outputs bit-identical" in result.stdout
    assert f"tolerance float16: {ULPS} ULPs at each tensor's largest magnitude, here at most " in result.stdout

    report = extract(ort_fp16, module="m.h.0", output=tmp_path / "h0.onnx", verify=True)
    verification = report.verification
    assert verification.passed and set(verification.tolerances) == {"float16"}
    assert 0 < verification.max_abs_diff <= float(verification.tolerances["float16"].rpartition(" ")[2])


def test_fp16_tolerance_still_fails_a_wrong_value(ort_fp16, tmp_path, monkeypatch):
    """The extracted block, compared with the full model's values moved by one ULP of their
    magnitude in one element, passes; moved by `ULPS` + 2 ULPs, fails."""
    import importlib

    from tagger.commands.extract import extract

    verify = importlib.import_module("tagger.commands.extract.verify")
    seen = []
    compare = verify.compare_outputs
    monkeypatch.setattr(verify, "compare_outputs", lambda *args: seen.append(args) or compare(*args))
    extract(ort_fp16, module="m.h.0", output=tmp_path / "h0.onnx", verify=True)
    path, inputs, outputs, values = seen[0]
    for ulps, passes in ((1, True), (verify.ULPS + 2, False)):  # the block itself may be 1 ULP off
        moved = dict(values)
        for name in outputs:
            moved[name] = values[name].copy()
            moved[name].flat[0] += np.float16(ulps * np.spacing(np.abs(values[name]).max()))
        result = compare(path, inputs, outputs, moved)
        assert result.passed is passes, result.summary()


def test_float32_verification_stays_bit_exact(exports, tmp_path):
    from tagger.commands.extract import extract

    report = extract(exports("gpt2", "torchscript"), module="m.h.0", output=tmp_path / "h0.onnx", verify=True)
    verification = report.verification
    assert verification.passed and verification.exact == verification.compared == 1 and verification.max_abs_diff == 0
    assert verification.tolerances == {"float32": "1e-06 absolute, relative above 1"}


# ------------------------------------------------------------------------------------------
# 3. data files that share a name, tagged into one folder


def run_model(path: Path, arch: str) -> list:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, cases.sample_inputs(arch))


def test_two_exports_with_model_onnx_data_tag_into_one_folder(exports, tmp_path):
    """Both dynamo exports come with `model.onnx.data`: the first keeps the name beside its
    output, the second's copy is named after its output; both run as their inputs do, and
    running the second again shares its own copy (no new file)."""
    bert, gpt2 = exports("bert", "dynamo"), exports("gpt2", "dynamo")
    assert (bert.parent / "model.onnx.data").is_file() and (gpt2.parent / "model.onnx.data").is_file()
    out = tmp_path / "tagged"
    out.mkdir()
    for source, name in ((bert, "bert.onnx"), (gpt2, "gpt2.onnx")):
        result = run_cli("retag", source, "--output", out / name)
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["bert.onnx", "gpt2.onnx", "gpt2.onnx.data", "model.onnx.data"]
    assert (out / "model.onnx.data").read_bytes() == (bert.parent / "model.onnx.data").read_bytes()  # not overwritten
    assert (out / "gpt2.onnx.data").read_bytes() == (gpt2.parent / "model.onnx.data").read_bytes()
    locations = {e.value for t in onnx.load(out / "gpt2.onnx", load_external_data=False).graph.initializer for e in t.external_data}
    assert "gpt2.onnx.data" in locations and "model.onnx.data" not in locations
    for source, name, arch in ((bert, "bert.onnx", "bert"), (gpt2, "gpt2.onnx", "gpt2")):
        for want, got in zip(run_model(source, arch), run_model(out / name, arch), strict=True):
            np.testing.assert_array_equal(got, want)
    assert run_cli("retag", gpt2, "--output", out / "gpt2.onnx").returncode == 0
    assert len(list(out.iterdir())) == 4


def test_a_module_extracted_into_a_folder_holding_another_models_data(exports, tmp_path):
    """`extract` writes through the same code: its data copy too is named after its output."""
    out = tmp_path / "cut"
    out.mkdir()
    (out / "model.onnx.data").write_bytes(b"another model's weights")
    result = run_cli("extract", exports("bert", "dynamo"), "--module", "m.encoder.layer.0", "--output", out / "layer0.onnx")
    assert result.returncode == 0, result.stderr
    assert (out / "model.onnx.data").read_bytes() == b"another model's weights"
    assert "(external: layer0.onnx.data)" in result.stdout
    ort.InferenceSession(str(out / "layer0.onnx"), providers=["CPUExecutionProvider"])


def test_two_onnxruntime_genai_outputs_tag_into_one_folder(tmp_path):
    """The builder calls every output's data `model.onnx.data` (data/genai): LLaMA and Qwen2
    tagged into one folder keep apart, and both run as their inputs do."""
    from tagger.inputs.feeds import make_feeds

    out = tmp_path / "tagged"
    out.mkdir()
    for family in ("llama", "qwen2"):
        result = run_cli("retag", GENAI / family / "model.onnx", "--output", out / f"{family}.onnx")
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["llama.onnx", "model.onnx.data", "qwen2.onnx", "qwen2.onnx.data"]
    for family in ("llama", "qwen2"):
        source = GENAI / family / "model.onnx"
        feeds = dict(make_feeds(onnx.load(source, load_external_data=False), base_dir=source.parent))
        want = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(None, feeds)
        got = ort.InferenceSession(str(out / f"{family}.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)
        for a, b in zip(want, got, strict=True):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------
# 4. feeds that run


@pytest.fixture(scope="module")
def swin(tmp_path_factory) -> Path:
    """A tiny transformers Swin exported as optimum does (every axis of `pixel_values` dynamic),
    alone in its folder: only 32 x 32 (and multiples) runs (its window Reshape), though shape
    inference accepts the 4 x 4 its patch conv allows."""
    import torch
    from transformers import SwinConfig, SwinModel

    from tests.pipeline_models import export_pixels

    torch.manual_seed(0)
    config = SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4)
    return export_pixels(SwinModel(config).eval(), tmp_path_factory.mktemp("swin") / "model.onnx")


def test_swin_profile_tries_larger_sizes_after_the_window_reshape_refuses_4x4(swin):
    from tagger import profile
    from tagger.inputs.feeds import make_feeds

    first = make_feeds(onnx.load(swin))
    assert first["pixel_values"].shape == (1, 3, 4, 4) and first.alternatives is not None  # what shape inference accepts
    result = profile(swin, runs=1, warmup=0)
    assert result.dims == {"batch_size": 1, "num_channels": 3, "height": 32, "width": 32}
    assert result.inputs == {"pixel_values": [1, 3, 32, 32]} and result.kernel_us > 0


def test_swin_extract_verify_runs_on_the_sizes_that_run(swin, tmp_path):
    result = run_cli("extract", swin, "--module", "m.encoder.layers.0", "--output", tmp_path / "l0.onnx", "--verify")
    assert result.returncode == 0, result.stderr
    assert "verify passed: 1 of 1 outputs bit-identical" in result.stdout


def test_given_sizes_are_not_replaced_and_the_refusal_names_the_node(swin):
    result = run_cli("profile", swin, "--runs", "1", "--dim", "height=4,width=4")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "at node '/m/encoder/layers.0/blocks.0/Reshape" in result.stderr and "height=4" in result.stderr


def test_every_size_refused_gives_the_first_refusal_and_how_many_were_tried(swin, tmp_path):
    """When every size is refused, the first refusal is reported (it names the node and the sizes
    used), and how many other sizes were tried: the next steps of the stride, doubling, the
    common image sizes, at most 12; then the batch raised by one (`tagger.inputs.feeds._other_sizes`)."""
    from tagger.inputs.feeds import Refused, first_that_runs, make_feeds

    feeds = make_feeds(onnx.load(swin))
    seen = []

    def refuse(feeds):
        seen.append(feeds.dims["height"])
        raise Refused(f"refused at {feeds.dims['height']}")

    with pytest.raises(Refused) as caught:
        first_that_runs(feeds, refuse)
    assert seen[0] == 4 and seen[1:4] == [8, 12, 16] and 224 in seen and len(seen) == 14 and seen[13] == 4
    assert str(caught.value).startswith("refused at 4; 13 other sizes of batch_size, height, width were refused too (up to ")


@pytest.mark.parametrize(
    ("files", "size", "reason"),
    [
        ({"config.json": {"image_size": 64, "num_channels": 1}}, 64, "config.json image_size"),
        (
            {"config.json": {"image_size": 64}, "preprocessor_config.json": {"size": {"height": 96, "width": 96}}},
            96,
            "preprocessor_config.json size",
        ),
        ({"preprocessor_config.json": {"do_center_crop": True, "crop_size": 32, "size": {"shortest_edge": 40}}}, 32, "crop_size"),
    ],
    ids=["config", "preprocessor", "crop"],
)
def test_image_size_is_read_beside_an_optimum_export(files, size, reason, swin, tmp_path):
    import json
    import shutil

    from tagger.inputs.input_rules import plan_inputs

    shutil.copy(swin, tmp_path / "model.onnx")
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
    plan = plan_inputs(onnx.load(tmp_path / "model.onnx"), base_dir=tmp_path)
    assert plan.dims["height"] == plan.dims["width"] == size and reason in plan.reasons["height"]
    assert plan.dims["num_channels"] == 3  # the patch conv's weight says so, whatever a file says


def test_genai_head_size_comes_from_genai_config_and_the_model_runs():
    """`past_key_values.*` end in `kv_cache_dim`, a symbol: only genai_config.json says it is 16."""
    from tagger import profile

    for family in ("llama", "qwen2"):
        result = profile(GENAI / family / "model.onnx", runs=1, warmup=0)
        assert result.dims["kv_cache_dim"] == 16 and result.inputs["past_key_values.0.key"] == [1, 2, 1, 16]


def test_genai_context_length_bounds_the_sequence_sizes():
    result = run_cli("profile", GENAI / "llama" / "model.onnx", "--dim", "past_sequence_length=300")
    assert result.returncode == 2
    assert "past_sequence_length=300 exceeds 256, the genai_config.json context_length" in result.stderr


# ------------------------------------------------------------------------------------------
# 5. extraction: onnxruntime decides when the ONNX checker refuses (tagger.commands.extract rule 6)


def test_a_genai_output_extracts_every_module_though_the_checker_refuses_some(tmp_path):
    """The builder's own constants fail the checker's shape inference (`rank (1) vs (0)`) and its
    `SimplifiedLayerNormalization` has no ONNX schema; onnxruntime runs both, so every module at
    depth 2 is written, verified, and the checker's objection is stated where it was overruled."""
    import json

    result = run_cli("extract", GENAI / "llama" / "model.onnx", "--all", "--depth", "2", "--out_dir", tmp_path, "--verify")
    assert result.returncode == 0, result.stderr + result.stdout
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["failures"] == {} and all(entry["verification"]["passed"] for entry in index["modules"])
    overruled = {entry["module"]: entry["checker"] for entry in index["modules"] if entry["checker"]}
    assert "differ in rank: (1) vs (0)" in overruled["model.attn_mask_reformat"]
    assert f"{len(overruled)} refused by the ONNX checker and loaded by onnxruntime (it decides)" in result.stdout
    for module in overruled:  # what the report says holds: the checker refuses the file, onnxruntime loads it
        path = tmp_path / f"{module}.onnx"
        with pytest.raises((onnx.checker.ValidationError, onnx.shape_inference.InferenceError)):
            onnx.checker.check_model(str(path), full_check=True)
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_a_module_neither_the_checker_nor_onnxruntime_accepts_is_not_written(tmp_path):
    from tagger.commands.extract import extract
    from tagger.errors import TaggerError
    from tests.graphs import chain_model

    model = chain_model(["/enc/a/Relu", "/enc/b/Relu", "/enc/c/Relu"])
    model.graph.node[1].attribute.append(onnx.helper.make_attribute("not_a_relu_attribute", 1))
    onnx.save(model, tmp_path / "m.onnx")
    with pytest.raises(TaggerError, match="fails the ONNX checker: .*; and onnxruntime refuses it: "):
        extract(tmp_path / "m.onnx", module="enc.b", output=tmp_path / "b.onnx")
    assert not (tmp_path / "b.onnx").exists()


def test_without_onnxruntime_runtime_ops_are_checked_aside_with_their_external_data(tmp_path, monkeypatch):
    """Without onnxruntime the checker decides, with onnxruntime's own default-domain ops set
    aside; the set-aside copy is checked beside the written file, so its external data
    (`model.onnx.data` of the genai output) resolves."""
    from tagger.commands.extract import extract, verify
    from tagger.errors import MissingDependency

    def missing(path):
        raise MissingDependency("verification", "onnxruntime")

    monkeypatch.setattr(verify, "runtime_refusal", missing)
    report = extract(GENAI / "llama" / "model.onnx", module="model.layers.0", output=tmp_path / "layer0.onnx")
    assert report.checker is None and "SimplifiedLayerNormalization" in {n.op_type for n in onnx.load(report.output).graph.node}
    assert report.external_data == ["model.onnx.data"]


# ------------------------------------------------------------------------------------------
# 6. sizes the file ties without stating them


def test_a_cached_decoder_whose_mask_length_is_its_own_symbol_runs_with_default_inputs(tmp_path):
    """A TorchScript LLaMA exported with `dynamic_axes` naming the mask's length `total_sequence`
    apart from `past_sequence` and `sequence`: nothing in the file ties them, onnxruntime refuses
    1 + 1 tokens under a mask of 1; raising the mask's symbol by one runs."""
    import torch

    from bench.family_exports import wrapped_model
    from bench.producer_builds import _axes

    model, inputs, names, outputs = wrapped_model("llama")
    path = tmp_path / "llama.onnx"
    with cases._quiet():
        axes = _axes("llama", names)
        torch.onnx.export(model, inputs, str(path), input_names=names, output_names=outputs, dynamo=False, dynamic_axes=axes)
    dims = {d.dim_param for value in onnx.load(path).graph.input for d in value.type.tensor_type.shape.dim}
    assert {"total_sequence", "past_sequence", "sequence"} <= dims
    result = run_cli("profile", path, "--runs", "1")
    assert result.returncode == 0, result.stderr
    assert run_cli("extract", path, "--all", "--depth", "3", "--out_dir", tmp_path / "all", "--verify").returncode == 0
    from tagger import profile

    assert profile(path, runs=1, warmup=0).dims["total_sequence"] == 2


def test_a_genai_fp16_output_onnxruntime_runs_only_with_an_empty_cache_runs_with_default_inputs(tmp_path):
    """onnxruntime-genai's fp16 LLaMA built for the CPU (`-p fp16 -e cpu`, tests/data/genai): the CPU
    provider runs its first step (an empty cache) and fails every later one inside its own Cast
    (`Shape mismatch attempting to re-use buffer`). The empty past is tried once the other sizes
    are refused; the batch and the new tokens, which size the outputs, never go to 0."""
    path = REPO_ROOT / "tests" / "data" / "genai" / "llama-fp16-fused" / "model.onnx"
    assert run_cli("profile", path, "--runs", "1").returncode == 0
    result = run_cli("extract", path, "--all", "--depth", "2", "--out_dir", tmp_path, "--verify")
    assert result.returncode == 0, result.stderr
    from tagger import profile
    from tagger.inputs.feeds import DimSettings, _other_sizes
    from tagger.inputs.input_rules import plan_inputs

    assert profile(path, runs=1, warmup=0).dims["past_sequence_length"] == 0
    model = onnx.load(path, load_external_data=False)
    zeros = {
        name
        for sizes in _other_sizes(model, plan_inputs(model, base_dir=path.parent), DimSettings())
        for name, size in sizes.items()
        if size == 0
    }
    assert zeros == {"past_sequence_length"}
