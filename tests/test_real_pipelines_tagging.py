"""Tagging correctness on the pipelines users run (issue 12): real TorchScript exports of tiny
`transformers` models, the output heads they end in, onnxruntime's transformer optimizer, and a
merged decoder whose every node lives in the branches of one `If` (as optimum builds it).

Each model is the `transformers` class itself with a positional `forward` (transformers 5 does
not trace keyword calls), so its module paths are the class's own `named_modules()`: `lm_head`
is a child of the root, as in optimum's exports. Exports are built once per session.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.cases import truth_of_export
from tagger import report, tag_proto
from tagger.model.paths import lca_all

torch = pytest.importorskip("torch")
tf = pytest.importorskip("transformers")

REPO_ROOT = Path(__file__).resolve().parents[1]
LAYERS, HEADS, HIDDEN, VOCAB = 2, 2, 32, 100


@dataclass(frozen=True)
class Export:
    path: Path
    modules: frozenset[str]
    """Every `named_modules()` path of the exported module ("" is the root)."""


def _positional(cls: type, names: tuple[str, ...], output: str, **fixed):
    """`cls` with a forward that takes positional tensors (the module tree is unchanged)."""

    class Positional(cls):
        def forward(self, *inputs):
            return getattr(super().forward(**dict(zip(names, inputs, strict=True)), **fixed), output)

    return Positional


def _with_cache(cls: type):
    """`cls` as a decoder step: ids, mask and the past as flat tensors in; logits and the present out."""
    from transformers import DynamicCache

    class Decoder(cls):
        def forward(self, input_ids, attention_mask, *past):
            pairs = [(past[i], past[i + 1]) for i in range(0, len(past), 2)]
            cache = DynamicCache(ddp_cache_data=pairs or None, config=self.config)
            out = super().forward(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True)
            return (out.logits, *[t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)])

    return Decoder


def _config(family: str):
    text = dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=2 * HIDDEN)
    text |= dict(vocab_size=VOCAB, max_position_embeddings=64)
    if family == "bert":
        return tf.BertModel, tf.BertConfig(**text)
    if family == "vit":
        return tf.ViTModel, tf.ViTConfig(
            **{k: v for k, v in text.items() if k not in ("vocab_size", "max_position_embeddings")}, image_size=32, patch_size=8
        )
    if family == "t5":
        return tf.T5ForConditionalGeneration, tf.T5Config(
            d_model=HIDDEN, d_kv=16, d_ff=2 * HIDDEN, num_layers=LAYERS, num_heads=HEADS, vocab_size=VOCAB
        )
    if family == "gpt2":
        return tf.GPT2LMHeadModel, tf.GPT2Config(n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, vocab_size=VOCAB, n_positions=64)
    if family == "llama":  # num_key_value_heads == num_attention_heads: grouped-query attention does not trace
        return tf.LlamaForCausalLM, tf.LlamaConfig(**text, num_key_value_heads=HEADS)
    if family == "opt":  # its causal LM calls `self.model.decoder(...)`: names say `/decoder/...` for `model.decoder`
        return tf.OPTForCausalLM, tf.OPTConfig(**{k: v for k, v in text.items() if k != "intermediate_size"}, ffn_dim=2 * HIDDEN)
    raise ValueError(family)


_SIGNATURE = {
    "bert": (("input_ids", "attention_mask"), "last_hidden_state", {}),
    "vit": (("pixel_values",), "last_hidden_state", {}),
    "t5": (("input_ids", "decoder_input_ids"), "logits", {"use_cache": False}),
    "gpt2": (("input_ids", "attention_mask"), "logits", {"use_cache": False}),
    "llama": (("input_ids", "attention_mask"), "logits", {"use_cache": False}),
    "opt": (("input_ids", "attention_mask"), "logits", {"use_cache": False}),
}


def _build(family: str, make=None) -> torch.nn.Module:
    """A tiny random model in eval mode; small noise keeps equal initializers apart."""
    cls, config = _config(family)
    torch.manual_seed(0)
    with _quiet():
        model = (make or (lambda c: _positional(c, *_SIGNATURE[family][:2], **_SIGNATURE[family][2])))(cls)(config)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.02)
    return model.eval()


def _inputs(family: str) -> tuple:
    generator = torch.Generator().manual_seed(1)
    if family == "vit":
        return (torch.randn(1, 3, 32, 32, generator=generator),)
    ids = torch.randint(0, VOCAB, (1, 8), generator=generator)
    if family == "t5":
        return ids, ids[:, :4]
    return ids, torch.ones(1, 8, dtype=torch.long)


@contextlib.contextmanager
def _quiet():
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _export(module, inputs, path: Path, **kwargs) -> Path:
    with _quiet():
        torch.onnx.export(module, inputs, str(path), dynamo=False, **kwargs)
    return path


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> dict[str, Export]:
    """family -> plain TorchScript export (static shapes, as onnxruntime's optimizer wants them)."""
    directory = tmp_path_factory.mktemp("real-pipelines")
    built = {}
    for family in _SIGNATURE:
        model = _build(family)
        path = _export(model, _inputs(family), directory / f"{family}.onnx")
        built[family] = Export(path, frozenset(name for name, _ in model.named_modules()))
    return built


_ORT_MODEL_TYPE = {"bert": "bert", "vit": "vit", "t5": "t5", "gpt2": "gpt2"}


@pytest.fixture(scope="session")
def optimized(exports) -> dict[str, Export]:
    """family -> the export after onnxruntime's transformer optimizer."""
    from onnxruntime.transformers.optimizer import optimize_model

    built = {}
    for family, model_type in _ORT_MODEL_TYPE.items():
        source = exports[family]
        path = source.path.with_suffix(".opt.onnx")
        with _quiet():
            optimize_model(str(source.path), model_type=model_type, num_heads=HEADS, hidden_size=HIDDEN).save_model_to_file(
                str(path)
            )
        built[family] = Export(path, source.modules)
    return built


def _tags(model: onnx.ModelProto, nodes=None) -> list[dict[str, str]]:
    return [{p.key: p.value for p in node.metadata_props} for node in (model.graph.node if nodes is None else nodes)]


def _tagged(path: Path) -> onnx.ModelProto:
    model = onnx.load(str(path))
    tag_proto(model)
    return model


# --- 1. tool suffixes are no modules ---------------------------------------------------------


@pytest.mark.parametrize("family", sorted(_ORT_MODEL_TYPE))
def test_no_tag_names_a_module_the_model_lacks_after_the_ort_optimizer(family, optimized):
    model = _tagged(optimized[family].path)
    invented = {t["hierarchy.module"] for t in _tags(model)} - optimized[family].modules
    assert not invented


def test_fused_nodes_belong_to_the_module_before_the_op_name_they_keep(optimized):
    fused = 0
    for family in ("bert", "vit", "t5"):
        model = _tagged(optimized[family].path)
        for node, tag in zip(model.graph.node, _tags(model), strict=True):
            if node.name.rstrip("/").endswith("Fusion"):  # `/…/dense/MatMul/MatMulAddFusion`, `/…/layer_norm/Mul_1/…Fusion/`
                scope = node.name.rstrip("/").split("/")[1:-2]
                assert tag["hierarchy.module"] == ".".join(scope), node.name
                fused += 1
    assert fused >= 10, "the optimizer fused no node: the test proves nothing"


@pytest.mark.parametrize("family", ["bert", "vit", "t5"])
def test_plain_exports_stay_exact_where_the_exporter_names_the_module(family, exports, optimized):
    for export in (exports[family], optimized[family]):
        model = _tagged(export.path)
        truth = truth_of_export(onnx.load(str(exports[family].path)), "torchscript", set(export.modules))
        by_name = {node.name: truth[i] for i, node in enumerate(onnx.load(str(exports[family].path)).graph.node) if i in truth}
        checked = [
            (node.name, tag["hierarchy.module"])
            for node, tag in zip(model.graph.node, _tags(model), strict=True)
            if node.name in by_name
        ]
        assert len(checked) > 20
        assert [(name, by_name[name]) for name, _ in checked] == checked


class _RandomCalibration:
    """Two random batches for `quantize_static`: floats for float inputs, ids below the vocabulary
    for integer ones (masks all ones)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        rng = np.random.default_rng(0)
        inputs = [
            (v.name, v.type.tensor_type.elem_type, [d.dim_value for d in v.type.tensor_type.shape.dim]) for v in model.graph.input
        ]
        self.batches = iter([{name: _random(rng, name, kind, shape) for name, kind, shape in inputs} for _ in range(2)])

    def get_next(self):
        return next(self.batches, None)


def _random(rng: np.random.Generator, name: str, kind: int, shape: list[int]) -> np.ndarray:
    if kind == TensorProto.FLOAT:
        return rng.standard_normal(shape).astype(np.float32)
    return (np.ones(shape) if "mask" in name else rng.integers(0, VOCAB, shape)).astype(np.int64)


@pytest.fixture(scope="session")
def quantized(exports) -> dict[tuple[str, str], Export]:
    """(family, `qdq` | `dynamic`) -> the export after onnxruntime's static QDQ or dynamic quantization."""
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static

    built = {}
    for family in ("vit", "gpt2"):
        source = exports[family]
        qdq, dynamic = source.path.with_suffix(".qdq.onnx"), source.path.with_suffix(".qdyn.onnx")
        with _quiet():
            reader = _RandomCalibration(onnx.load(str(source.path)))
            quantize_static(str(source.path), str(qdq), reader, quant_format=QuantFormat.QDQ)
            quantize_dynamic(str(source.path), str(dynamic))
        built[family, "qdq"] = Export(qdq, source.modules)
        built[family, "dynamic"] = Export(dynamic, source.modules)
    return built


@pytest.mark.parametrize("key", [("vit", "qdq"), ("gpt2", "qdq"), ("vit", "dynamic"), ("gpt2", "dynamic")], ids="-".join)
def test_quantizer_names_built_on_tensor_names_are_no_modules(key, quantized):
    """QDQ names its scales after the tensor they quantize: `input.1_scale` is no parameter of `input`."""
    model = _tagged(quantized[key].path)
    assert {t["hierarchy.module"] for t in _tags(model)} <= quantized[key].modules


class _NoisyFeeds:
    """Calibration batches for `quantize_static`: `feeds` with small noise on the float inputs."""

    def __init__(self, feeds: dict[str, np.ndarray], batches: int = 2) -> None:
        rng = np.random.default_rng(0)
        noisy = [
            {n: (a + 0.1 * rng.standard_normal(a.shape)).astype(a.dtype) if a.dtype.kind == "f" else a for n, a in feeds.items()}
            for _ in range(batches)
        ]
        self.batches = iter(noisy)

    def get_next(self):
        return next(self.batches, None)


@pytest.fixture(scope="session")
def qdq_with_cache(merged) -> Export:
    """The GPT-2 decoder step whose KV cache is a graph input (`past_key_values.0.key`) and output
    (`present.0.key`), after static QDQ quantization."""
    from onnxruntime.quantization import QuantFormat, quantize_static

    source = merged.branches["then_branch"]
    target = source.with_suffix(".qdq.onnx")
    with _quiet():
        quantize_static(str(source), str(target), _NoisyFeeds(merged.feeds), quant_format=QuantFormat.QDQ)
    return Export(target, merged.modules)


def test_static_qdq_names_built_on_kv_cache_tensors_are_no_modules(qdq_with_cache):
    """QDQ names the scale of input `past_key_values.0.key` `past_key_values.0.key_scale`: that
    tensor's, not a parameter of a module `past_key_values.0`."""
    model = _tagged(qdq_with_cache.path)
    cache = [v.name for v in (*model.graph.input, *model.graph.output) if v.name.startswith(("past_key_values.", "present."))]
    derived = [t.name for t in model.graph.initializer if any(t.name.startswith(name + "_") for name in cache)]
    assert derived, "the quantizer named no initializer after a cache tensor: the test proves nothing"
    assert {t["hierarchy.module"] for t in _tags(model)} <= qdq_with_cache.modules


@pytest.fixture(scope="session")
def tied_t5(tmp_path_factory) -> Export:
    """T5 whose encoder and decoder call the one `shared` embedding (`set_input_embeddings`; every
    T5 of transformers 4, optimum's too, is built so): TorchScript names it `/decoder/shared/…`."""
    model = _build("t5")
    torch.manual_seed(3)
    model.set_input_embeddings(torch.nn.Embedding(VOCAB, HIDDEN))
    path = _export(model.eval(), _inputs("t5"), tmp_path_factory.mktemp("tied-t5") / "t5.onnx")
    return Export(path, frozenset(name for name, _ in model.named_modules()))


def test_a_module_called_by_two_callers_is_tagged_with_its_one_path(tied_t5):
    model = _tagged(tied_t5.path)
    tags = {n.name: t["hierarchy.module"] for n, t in zip(model.graph.node, _tags(model), strict=True)}
    assert "decoder.embed_tokens" not in tied_t5.modules, "the embedding is not shared: the test proves nothing"
    assert tags["/encoder/shared/Gather"] == tags["/decoder/shared/Gather"] == "shared"
    assert set(tags.values()) <= tied_t5.modules


# --- 2. output heads known only from names ---------------------------------------------------


@pytest.mark.parametrize("family", ["gpt2", "llama", "opt", "t5"])
def test_the_output_head_keeps_its_own_module(family, exports):
    model = _tagged(exports[family].path)
    heads = [
        (n.name, t)
        for n, t in zip(model.graph.node, _tags(model), strict=True)
        if n.op_type in ("MatMul", "Gemm") and n.name.startswith("/lm_head/")
    ]
    assert heads, "the export has no /lm_head/ product"
    assert "lm_head" in exports[family].modules
    assert [t["hierarchy.module"] for _, t in heads] == ["lm_head"] * len(heads)
    weight = next(n for n in model.graph.node if n.name == heads[0][0]).input[1]
    assert not weight.startswith("lm_head."), "the head's weight is named: this export does not show the failure"


def test_the_quantized_head_keeps_its_own_module(quantized):
    model = _tagged(quantized["gpt2", "dynamic"].path)
    heads = [
        t["hierarchy.module"] for n, t in zip(model.graph.node, _tags(model), strict=True) if n.name.startswith("/lm_head/MatMul")
    ]
    assert len(heads) >= 2 and set(heads) == {"lm_head"}


@pytest.mark.parametrize("family", ["gpt2", "llama", "opt", "t5"])
def test_causal_lm_exports_name_only_modules_the_model_has(family, exports):
    model = _tagged(exports[family].path)
    assert {t["hierarchy.module"] for t in _tags(model)} <= exports[family].modules


def test_a_module_reached_through_an_uncalled_container_resolves_to_its_full_path(exports):
    model = _tagged(exports["opt"].path)
    tags = {n.name: t["hierarchy.module"] for n, t in zip(model.graph.node, _tags(model), strict=True)}
    assert tags["/decoder/embed_tokens/Gather"] == "model.decoder.embed_tokens"
    assert tags["/decoder/layers.0/self_attn/k_proj/MatMul"] == "model.decoder.layers.0.self_attn.k_proj"


# --- 3. a merged decoder: every node in the branches of one If --------------------------------


@dataclass(frozen=True)
class Merged:
    path: Path
    modules: frozenset[str]
    branches: dict[str, Path]
    """`then_branch` (with past) and `else_branch` (without) as the separate exports."""
    feeds: dict[str, np.ndarray]


def _decoder_exports(directory: Path) -> tuple[torch.nn.Module, Path, Path, dict]:
    model = _build("gpt2", _with_cache)
    past_names = [f"past_key_values.{i}.{kv}" for i in range(LAYERS) for kv in ("key", "value")]
    outputs = ["logits"] + [name.replace("past_key_values", "present") for name in past_names]
    axes = {"input_ids": {1: "sequence_length"}, "attention_mask": {1: "total_length"}, "logits": {1: "sequence_length"}}
    axes |= {name: {2: "total_length"} for name in outputs[1:]}
    ids, _ = _inputs("gpt2")
    ids = ids[:, :3]
    without = _export(
        model,
        (ids, torch.ones(1, 3, dtype=torch.long)),
        directory / "decoder.onnx",
        input_names=["input_ids", "attention_mask"],
        output_names=outputs,
        dynamic_axes=axes,
    )
    past = [torch.randn(1, HEADS, 4, HIDDEN // HEADS, generator=torch.Generator().manual_seed(k)) for k in range(2 * LAYERS)]
    mask = torch.ones(1, 7, dtype=torch.long)
    with_past = _export(
        model,
        (ids, mask, *past),
        directory / "decoder_with_past.onnx",
        input_names=["input_ids", "attention_mask", *past_names],
        output_names=outputs,
        dynamic_axes=axes | {name: {2: "past_length"} for name in past_names},
    )
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()} | {
        n: t.numpy() for n, t in zip(past_names, past, strict=True)
    }
    return model, without, with_past, feeds


def _loose(value: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    """The value's type with every dim symbolic (the two branches differ in length)."""
    rank = len(value.type.tensor_type.shape.dim)
    return helper.make_tensor_value_info(value.name, value.type.tensor_type.elem_type, [f"{value.name}_{k}" for k in range(rank)])


def merge_decoders(with_past: onnx.ModelProto, without_past: onnx.ModelProto) -> onnx.ModelProto:
    """One `If` on a bool input whose branches are the two decoders, the way optimum merges them:
    initializers move to the outer graph (equal ones shared, a clash of names with different
    contents renamed in the no-past branch); node and tensor names stay as exported."""
    outer = {t.name: t for t in with_past.graph.initializer}
    renamed = {}
    for tensor in without_past.graph.initializer:
        if tensor.name in outer and not np.array_equal(numpy_helper.to_array(outer[tensor.name]), numpy_helper.to_array(tensor)):
            renamed[tensor.name] = f"{tensor.name}_merged"
    for node in without_past.graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
    initializers = list(outer.values())
    for tensor in without_past.graph.initializer:
        if tensor.name in renamed:
            tensor.name = renamed[tensor.name]
            initializers.append(tensor)
        elif tensor.name not in outer:
            initializers.append(tensor)

    def branch(graph: onnx.GraphProto, name: str) -> onnx.GraphProto:
        return helper.make_graph(list(graph.node), name, [], [_loose(v) for v in graph.output])

    condition = helper.make_tensor_value_info("use_cache_branch", TensorProto.BOOL, [1])
    node = helper.make_node(
        "If",
        ["use_cache_branch"],
        [v.name for v in with_past.graph.output],
        name="optimum::if",
        then_branch=branch(with_past.graph, "with_past"),
        else_branch=branch(without_past.graph, "without_past"),
    )
    graph = helper.make_graph(
        [node], "merged", [*with_past.graph.input, condition], [_loose(v) for v in with_past.graph.output], initializers
    )
    return helper.make_model(graph, opset_imports=with_past.opset_import, ir_version=with_past.ir_version)


@pytest.fixture(scope="session")
def merged(tmp_path_factory) -> Merged:
    directory = tmp_path_factory.mktemp("merged-decoder")
    model, without, with_past, feeds = _decoder_exports(directory)
    proto = merge_decoders(onnx.load(str(with_past)), onnx.load(str(without)))
    onnx.checker.check_model(proto)
    path = directory / "decoder_model_merged.onnx"
    onnx.save(proto, str(path))
    modules = frozenset(name for name, _ in model.named_modules())
    return Merged(path, modules, {"then_branch": with_past, "else_branch": without}, feeds)


def _branch_feeds(merged: Merged, branch: str) -> dict[str, np.ndarray]:
    feeds = dict(merged.feeds)
    if branch == "else_branch":
        feeds["attention_mask"] = feeds["attention_mask"][:, :3]
    return feeds


@pytest.mark.parametrize("branch", ["then_branch", "else_branch"])
def test_the_merged_decoder_runs_each_branch_like_its_own_export(merged, branch):
    import onnxruntime as ort

    feeds = _branch_feeds(merged, branch)
    alone = ort.InferenceSession(str(merged.branches[branch])).run(
        None, {i.name: feeds[i.name] for i in onnx.load(str(merged.branches[branch])).graph.input}
    )
    both = ort.InferenceSession(str(merged.path)).run(None, feeds | {"use_cache_branch": np.array([branch == "then_branch"])})
    for expected, actual in zip(alone, both, strict=True):
        np.testing.assert_array_equal(expected, actual)


def test_every_node_of_a_merged_decoder_is_tagged_right(merged):
    model = _tagged(merged.path)
    (owner,) = model.graph.node
    bodies = {attribute.name: attribute.g for attribute in owner.attribute}
    truths = []
    for branch, source in merged.branches.items():
        truth = truth_of_export(onnx.load(str(source)), "torchscript", set(merged.modules))
        tags = _tags(model, bodies[branch].node)
        assert len(truth) > 0.8 * len(tags)
        assert {i: tags[i]["hierarchy.module"] for i in truth} == truth, branch
        assert {t["hierarchy.module"] for t in tags} <= merged.modules
        assert "fallback" not in {t["hierarchy.source"] for t in tags}
        heads = [tags[i]["hierarchy.module"] for i, n in enumerate(bodies[branch].node) if n.name == "/lm_head/MatMul"]
        assert heads == ["lm_head"]
        truths += truth.values()
    assert _tags(model)[0] == {"hierarchy.module": lca_all(truths), "hierarchy.tag": "/", "hierarchy.source": "subgraph"}


def test_audit_with_no_fallback_allowed_passes_a_merged_decoder(merged):
    result = subprocess.run(
        [sys.executable, "-m", "tagger", "audit", str(merged.path), "--max_fallback", "0", "--workers", "1"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- 4. conflicts inside bodies say where ------------------------------------------------------


def test_a_conflict_inside_a_branch_names_the_if_and_the_branch(merged, tmp_path):
    """The name of a then-branch node that consumes a bias of layer 0 is made to say layer 1."""
    model = onnx.load(str(merged.path))
    then_branch = next(a.g for a in model.graph.node[0].attribute if a.name == "then_branch")
    node = next(n for n in then_branch.node if "transformer.h.0.attn.c_attn.bias" in n.input)
    node.name = node.name.replace("/h.0/", "/h.1/")
    path = tmp_path / "conflict.onnx"
    onnx.save(model, str(path))
    result = report(path)
    conflicts = [c.node.graph for c in result.conflicts if c.node.name == node.name]
    assert conflicts and set(conflicts) == {"If optimum::if/then_branch"}
    listed = [c["node"]["graph"] for c in json.loads(result.to_json())["conflicts"] if c["node"]["name"] == node.name]
    assert listed == conflicts
    assert "If optimum::if/then\\_branch" in result.to_markdown()


def test_retagging_a_tagged_merged_decoder_writes_identical_bytes(merged):
    model = _tagged(merged.path)
    once = model.SerializeToString()
    tag_proto(model)
    assert model.SerializeToString() == once
