"""Real ONNX exports of tiny models, degraded the way users degrade them, with ground truth.

Shared by the test-suite and the accuracy benchmark of the hierarchy tagger. Everything here is
independent of the tagger: ground truth is read straight from what the exporters leave in the
file (dynamo ``name_scopes`` metadata, TorchScript scoped node names) and carried through each
degradation by node position (the strip degradations) or by node/tensor name (real tools).

Models are built from ``transformers`` configs with random weights (no downloads) and kept tiny
so that every case builds in seconds on two CPU cores. Files are cached under a work directory
and written atomically, so concurrent test workers can share one directory.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from tagger.model.index import graphs_within
from tagger.text import natural

ARCHS: tuple[str, ...] = ("bert", "albert", "vit", "resnet", "gpt2")
"""bert: encoder; albert: one shared layer called repeatedly (TorchScript ``_N`` suffix quirk);
vit: vision transformer; resnet: CNN classifier (TorchScript Sequential ``layer/layer.0`` quirk,
Conv+BatchNorm folded by both exporters);
gpt2: decoder-only (Conv1D projections, causal mask plumbing)."""

EXPORTERS = ("torchscript", "dynamo")
DEGRADATIONS = (
    "none",
    "strip_aux",
    "strip_all",
    "onnxslim",
    "ort_optimizer",
    "quantize_dynamic",
    "gs_roundtrip",
)

SUPPORTED: set[tuple[str, str]] = {(a, e) for a in ARCHS for e in EXPORTERS}
"""(arch, exporter) pairs that export. All of them do with ``use_cache=False`` passed to the
decoder (GPT-2 fails both exporters when its second positional argument, ``past_key_values``,
receives the attention mask - the wrapper therefore maps positional tensors to keywords)."""

UNSUPPORTED_DEGRADATIONS: frozenset[tuple[str, str, str]] = frozenset()
"""(arch, exporter, degradation) triples whose result cannot be built or run; see ``supported``."""

AUX_OPS: frozenset[str] = frozenset(
    {
        # constants, shapes and types
        "Constant", "ConstantOfShape", "Shape", "Size", "Cast", "CastLike", "Identity", "Range",
        # indexing and layout
        "Gather", "GatherElements", "GatherND", "ScatterND", "ScatterElements", "Reshape",
        "Unsqueeze", "Squeeze", "Concat", "Slice", "Split", "Expand", "Tile", "Flatten",
        "Transpose", "Trilu", "CumSum", "NonZero",
        # masks and predicates
        "Where", "Equal", "Not", "And", "Or", "Less", "LessOrEqual", "Greater", "GreaterOrEqual",
        "IsNaN", "IsInf",
        # the one reduction the issue names among auxiliary ops (shape/mask statistics)
        "ReduceMean",
    }
)  # fmt: skip
"""Op types a tagger that only names "compute" ops would leave untagged: the plumbing between
parametrised ops. Arithmetic (Mul, Div, Sub, Pow, Sqrt, ...) is compute, not plumbing: it is
the body of parameter-free modules (activations) and stays named. ``strip_aux`` removes every
trace of scope from exactly these nodes."""

INPUT_NAMES: dict[str, tuple[str, ...]] = {
    "bert": ("input_ids", "attention_mask"),
    "albert": ("input_ids", "attention_mask"),
    "vit": ("pixel_values",),
    "resnet": ("pixel_values",),
    "gpt2": ("input_ids", "attention_mask"),
}
OUTPUT_NAMES = ("output",)

SEQ_LEN = 8
VOCAB = 100
IMAGE = 32

_OUTPUT_ATTR = {
    "bert": "last_hidden_state",
    "albert": "last_hidden_state",
    "vit": "last_hidden_state",
    "resnet": "logits",
    "gpt2": "last_hidden_state",
}
_EXTRA_KWARGS: dict[str, dict[str, object]] = {"gpt2": {"use_cache": False}}
_ORT_MODEL_TYPE = {"bert": "bert", "albert": "bert", "vit": "vit", "resnet": "bert", "gpt2": "gpt2"}
_HEADS = 2
_HIDDEN = 32

MODULE_KEY = "hierarchy.module"
SOURCE_KEY = "hierarchy.source"
_DYNAMO_SCOPES_KEY = "pkg.torch.onnx.name_scopes"


class ExportError(RuntimeError):
    """An (arch, exporter) pair that does not export; one clear message instead of a graph dump."""


class UnsupportedCase(ValueError):
    """A degradation that cannot produce a runnable model for this arch/exporter."""


class ToolFailed(RuntimeError):
    """A post-processing tool raised on this export (the tool's bug, not the tagger's)."""


# --------------------------------------------------------------------------------------------
# models


class Wrapper(torch.nn.Module):
    """Positional-tensor front for a transformers model, returning one tensor.

    transformers 5 models fail TorchScript tracing when called with keyword arguments, and their
    positional order is not (input_ids, attention_mask) for every model (GPT-2's second parameter
    is ``past_key_values``), so the wrapper takes positional tensors and calls ``m`` by keyword.
    """

    def __init__(
        self,
        m: torch.nn.Module,
        input_names: tuple[str, ...],
        output_attr: str,
        extra_kwargs: dict[str, object] | None = None,
    ) -> None:
        super().__init__()
        self.m = m
        self.input_names = input_names
        self.output_attr = output_attr
        self.extra_kwargs = dict(extra_kwargs or {})

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.m(**dict(zip(self.input_names, inputs, strict=True)), **self.extra_kwargs)
        return getattr(out, self.output_attr)


def _check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHS}")


def _inner_model(arch: str) -> torch.nn.Module:
    """Tiny transformers model with default (random) init; imports lazily to keep import cheap."""
    import transformers as tf

    text = {
        "hidden_size": _HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": _HEADS,
        "intermediate_size": 2 * _HIDDEN,
        "vocab_size": VOCAB,
        "max_position_embeddings": 64,
    }
    if arch == "bert":
        return tf.BertModel(tf.BertConfig(**text))
    if arch == "albert":
        return tf.AlbertModel(tf.AlbertConfig(embedding_size=16, **text))
    if arch == "vit":
        cfg = tf.ViTConfig(
            hidden_size=_HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=_HEADS,
            intermediate_size=2 * _HIDDEN,
            image_size=IMAGE,
            patch_size=8,
        )
        return tf.ViTModel(cfg)
    if arch == "resnet":
        cfg = tf.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[2, 2], layer_type="basic", num_labels=10)
        return tf.ResNetForImageClassification(cfg)  # classifier = Sequential(Flatten, Linear)
    if arch == "gpt2":
        cfg = tf.GPT2Config(n_embd=_HIDDEN, n_layer=2, n_head=_HEADS, vocab_size=VOCAB, n_positions=64)
        return tf.GPT2Model(cfg)
    raise ValueError(arch)


def _example_inputs(arch: str) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(1)
    if INPUT_NAMES[arch][0] == "pixel_values":
        return (torch.randn(1, 3, IMAGE, IMAGE, generator=gen),)
    ids = torch.randint(0, VOCAB, (1, SEQ_LEN), generator=gen)
    mask = torch.ones(1, SEQ_LEN, dtype=torch.long)
    mask[0, -2:] = 0
    return ids, mask


INITS = ("noisy", "fresh")
"""How parameters are set. ``noisy``: transformers' init plus small noise, as a trained model's
weights (no two tensors equal). ``fresh``: transformers' init untouched, as a user exporting a
freshly built model gets it: every zero bias and every all-ones norm weight is equal, and the
dynamo exporter deduplicates equal initializers into one tensor named after whichever parameter
came first, so one parameter name is read by modules it does not belong to."""


def build_model(arch: str, init: str = "noisy") -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    """A deterministic, eval-mode ``Wrapper`` around a tiny random model, plus its inputs (see `INITS`)."""
    _check_arch(arch)
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; expected one of {INITS}")
    torch.manual_seed(0)
    with _quiet():
        inner = _inner_model(arch)
    wrapper = Wrapper(inner, INPUT_NAMES[arch], _OUTPUT_ATTR[arch], _EXTRA_KWARGS.get(arch))
    if init == "noisy":
        gen = torch.Generator().manual_seed(2)
        with torch.no_grad():
            for p in wrapper.parameters():
                p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.02)
    wrapper.eval()
    return wrapper, _example_inputs(arch)


@functools.cache
def _module_table(arch: str) -> tuple[tuple[str, str], ...]:
    wrapper, _ = build_model(arch)
    return tuple((name, type(mod).__qualname__) for name, mod in wrapper.named_modules())


def module_paths(arch: str) -> set[str]:
    """Every module path of the wrapper (``""`` is the root ``Wrapper``, ``"m"`` the model)."""
    return {name for name, _ in _module_table(arch)}


def module_classes(arch: str) -> dict[str, str]:
    """Module path -> class ``__qualname__`` (e.g. ``"m.encoder"`` -> ``"BertEncoder"``)."""
    return dict(_module_table(arch))


def sample_inputs(arch: str) -> dict[str, np.ndarray]:
    """Numpy feeds for onnxruntime, keyed by the exported input names (same for both exporters)."""
    _, inputs = build_model(arch)
    return {name: t.numpy() for name, t in zip(INPUT_NAMES[arch], inputs, strict=True)}


# --------------------------------------------------------------------------------------------
# export


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence exporter/tool chatter (warnings, progress prints, log records below ERROR)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


CASES_VERSION = 3
"""Bump when models, export settings or degradations change: cached files live in a directory
named after this and the tool versions, so a persistent work directory never serves stale files."""


@functools.lru_cache(maxsize=1)
def _fingerprint() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [str(CASES_VERSION)]
    for dist in ("torch", "transformers", "onnx", "onnxscript", "onnxruntime", "onnxslim",
                 "onnx-graphsurgeon"):  # fmt: skip
        try:
            parts.append(version(dist))
        except PackageNotFoundError:
            parts.append("-")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:8]


SHAPES = ("static", "dynamic")
"""How input sizes are exported. ``static``: the example's sizes are baked into the graph.
``dynamic``: batch (and sequence) sizes are symbolic, as users export for variable inputs
(dynamo ``dynamic_shapes``, TorchScript ``dynamic_axes``): the graph then computes shapes at run
time (``Shape``/``Gather`` chains on the inputs), and torch 2.13's dynamo exporter writes a
placeholder module stack on its ``sym_size`` nodes (``tagger.evidence.metadata``)."""


_BATCH_ONLY = ("pixel_values", "image", "input_features")
"""Inputs whose other dims are fixed by the weights (channels, mel bins) or by the model (image size)."""


def dynamic_axes(names: tuple[str, ...]) -> dict[str, dict[int, str]]:
    """The symbolic dims of each input: batch, and sequence for token inputs (the decoder's own)."""
    sequence = {name: "decoder_sequence" if name.startswith("decoder") else "sequence" for name in names}
    return {name: {0: "batch"} if name in _BATCH_ONLY else {0: "batch", 1: sequence[name]} for name in names}


def shape_options(names: tuple[str, ...], exporter: str, shapes: str) -> dict[str, object]:
    """`torch.onnx.export` options for `shapes` (see `SHAPES`) of a model taking `names` positionally."""
    if shapes not in SHAPES:
        raise ValueError(f"unknown shapes {shapes!r}; expected one of {SHAPES}")
    if shapes == "static":
        return {}
    axes = dynamic_axes(names)
    if exporter == "torchscript":
        return {"dynamic_axes": axes}
    dims = {label: torch.export.Dim(label, min=1, max=64) for dims in axes.values() for label in dims.values()}
    per_input = tuple({axis: dims[label] for axis, label in axes[name].items()} for name in names)
    return {"dynamic_shapes": (per_input,)}  # `Wrapper.forward(*inputs)`: one variadic argument


def _case_dir(arch: str, exporter: str, out_dir: Path, init: str = "noisy", shapes: str = "static") -> Path:
    variant = ("" if init == "noisy" else f"-{init}") + ("" if shapes == "static" else f"-{shapes}")
    return Path(out_dir) / f"{arch}-{exporter}{variant}-{_fingerprint()}"


def export(arch: str, exporter: str, out_dir: Path, init: str = "noisy", shapes: str = "static") -> Path:
    """Plain ``torch.onnx.export`` of ``build_model(arch)`` to ``out_dir/<arch>-<exporter>-<fp>/model.onnx``.

    Default opset and defaults otherwise, so the dynamo file comes with ``model.onnx.data``
    (external weights), as users get it. Only input/output names are fixed, so feeds are stable.
    Cached: an existing file is returned as is. The export is written into a temporary directory
    and renamed into place, so concurrent callers never see half-written files.
    """
    _check_arch(arch)
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; expected one of {EXPORTERS}")
    options = shape_options(INPUT_NAMES[arch], exporter, shapes)
    final = _case_dir(arch, exporter, out_dir, init, shapes)
    path = final / "model.onnx"
    if path.exists():
        return path
    if (arch, exporter) not in SUPPORTED:
        raise ExportError(f"{arch} does not export with the {exporter} exporter (see SUPPORTED)")
    final.parent.mkdir(parents=True, exist_ok=True)
    wrapper, inputs = build_model(arch, init)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        try:
            with _quiet():
                torch.onnx.export(
                    wrapper,
                    inputs,
                    str(tmp / "model.onnx"),
                    input_names=list(INPUT_NAMES[arch]),
                    output_names=list(OUTPUT_NAMES),
                    dynamo=exporter == "dynamo",
                    **options,
                )
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise ExportError(f"{arch}/{exporter}: {type(exc).__name__}: {first}") from exc
        try:
            tmp.rename(final)
        except OSError:
            if not path.exists():  # lost a race only if the winner left a file
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


# --------------------------------------------------------------------------------------------
# ground truth


def _dynamo_module(node: onnx.NodeProto) -> str | None:
    """Module path from ``pkg.torch.onnx.name_scopes``: the item before the fx node name."""
    for prop in node.metadata_props:
        if prop.key == _DYNAMO_SCOPES_KEY:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            if not isinstance(scopes, list):
                return None
            if len(scopes) >= 2 and scopes[0] != "":
                return None  # torch's placeholder for an empty stack (dynamic-shape `sym_size` nodes): no record
            return str(scopes[-2]) if len(scopes) >= 2 else ""
    return None


_CALL_SUFFIX = re.compile(r"^(.+)_(\d+)$")


class _ScopeResolver:
    """Turns TorchScript scope segments into module paths, undoing the exporter's naming quirks.

    A segment is the *unqualified* name of a called module: its last non-numeric attribute plus
    any numeric tail (``layer.0``), optionally with ``_N`` when the module is called again. Its
    module is the nearest strict descendant of the enclosing scope whose path ends with the
    segment - which also covers a Sequential's child repeating its parent (``layer/layer.0`` is
    ``layer.0`` under ``layer``) and skips uncalled containers (ModuleList). The segment is tried
    verbatim first (an attribute may really be called ``fc_1``), then without its ``_N``.
    """

    def __init__(self, modules: set[str]) -> None:
        self.modules = sorted(modules - {""}, key=lambda p: (p.count("."), p))
        self.cache: dict[tuple[str, str, int], str | None] = {}

    def child(self, parent: str, segment: str, call: int = 0) -> str | None:
        """The module `segment` names below `parent`; `call`: the scope's call index (`_nth_entry`)."""
        key = (parent, segment, call)
        if key not in self.cache:
            self.cache[key] = self._child(parent, segment, call)
        return self.cache[key]

    def _child(self, parent: str, segment: str, call: int) -> str | None:
        variants = [segment]
        m = _CALL_SUFFIX.match(segment)
        if m:
            variants.append(m.group(1))
        prefix = parent + "." if parent else ""
        for seg in variants:
            found = [p for p in self.modules if p.startswith(prefix) and (p == seg or p.endswith("." + seg))]
            if found:
                depth = found[0].count(".")  # shallowest first
                alike = [p for p in found if p.count(".") == depth]
                if len(alike) == 1:
                    return alike[0]
                return _nth_entry(alike, call)
        return None

    def resolve(self, node_name: str) -> str | None:
        if not node_name.startswith("/"):
            return None
        path = ""
        segments = node_name.split("/")[1:-1]
        call = _call_index(segments[-1]) if segments else 0
        for segment in segments:
            nxt = self.child(path, segment, call)
            if nxt is None:
                return None
            path = nxt
        return path


def _call_index(segment: str) -> int:
    """The `_N` of a scope's last segment: how many times the exporter saw that scope before."""
    m = _CALL_SUFFIX.match(segment)
    return int(m.group(2)) if m else 0


def _nth_entry(alike: list[str], call: int) -> str | None:
    """Several modules read alike by one segment: entries of a list run without a scope of their
    own (`for layer in self.layers: layer.forward(x)`), so TorchScript scopes each entry's modules
    by the same path and counts the calls of that path (`attention`, `attention_1`). In the trace
    the entries run in order, each once, so the N-th call of a scope is in the N-th entry
    (SqueezeBERT's `/encoder/attention_1` is `encoder.layers.1.attention`)."""
    ordered = sorted(alike, key=natural)
    return ordered[call] if call < len(ordered) else None


def truth_of_export(model: onnx.ModelProto, exporter: str, modules: set[str]) -> dict[int, str]:
    """Main-graph node index -> true module path, for the nodes whose origin the export records.

    dynamo: the ``name_scopes`` metadata; torchscript: the scoped node name. Nodes without such
    evidence (TorchScript ``Identity_44``/``Constant_23``, unresolvable scopes) are left out.
    """
    truth: dict[int, str] = {}
    if exporter == "dynamo":
        for i, node in enumerate(model.graph.node):
            mod = _dynamo_module(node)
            if mod is not None and mod in modules:
                truth[i] = mod
    elif exporter == "torchscript":
        resolver = _ScopeResolver(modules)
        for i, node in enumerate(model.graph.node):
            mod = resolver.resolve(node.name)
            if mod is not None:
                truth[i] = mod
    else:
        raise ValueError(f"unknown exporter {exporter!r}")
    return truth


def carry_truth(original: onnx.ModelProto, truth: dict[int, str], result: onnx.ModelProto) -> dict[int, str]:
    """Truth for a tool's output: the original node with the same name, else the original node
    that produced the same output tensor; fused or new nodes matching neither get none."""
    by_name: dict[str, int] = {}
    by_output: dict[str, int] = {}
    for i, node in enumerate(original.graph.node):
        if node.name:
            by_name.setdefault(node.name, i)
        for out in node.output:
            if out:
                by_output.setdefault(out, i)
    carried: dict[int, str] = {}
    for j, node in enumerate(result.graph.node):
        src = by_name.get(node.name) if node.name else None
        if src is None or src not in truth:
            src = next((by_output[o] for o in node.output if o in by_output), None)
        if src is not None and src in truth:
            carried[j] = truth[src]
    return carried


def shown_apart(path: Path) -> tuple[dict[int, str], set[int]]:
    """The file at `path`'s nodes whose wrong tags `bench.metrics` shows apart, each file loaded
    once: `folded_modules` of the export it was made from (`model.onnx` beside it), carried to the
    file as its truth is (by position after a strip, which keeps the node order; by node name or
    output tensor after a tool: a quantized Conv's Mul carries its fold; by `sources` after a strip
    then a tool), and the nodes a tool made
    anew (`tool_made`; none in the export itself or a strip)."""
    from bench.metrics import folded_modules

    result = onnx.load(path, load_external_data=False)
    source = path.parent / "model.onnx"
    if path.name == source.name or not source.exists():
        return folded_modules(result), set()
    original = onnx.load(source, load_external_data=False)
    if path.stem in ("strip_aux", "strip_all"):
        return folded_modules(original), set()
    if sources_path(path).exists():
        return carry_by_position(folded_modules(original), sources(path)), set()
    return carry_truth(original, folded_modules(original), result), tool_made(original, result)


def sources_path(path: Path) -> Path:
    """Where a degraded file made from a strip keeps the export position of each of its nodes."""
    return path.with_suffix(".sources.json")


def write_sources(path: Path, positions: list[int | None]) -> None:
    """Record `sources` for the file about to be saved at `path` (written first: the file's
    presence says both are complete)."""
    sources_path(path).write_text(json.dumps(positions), encoding="utf-8")


def sources(path: Path) -> list[int | None]:
    """The export position of each node of the file at `path` (None: a node the tool made)."""
    return json.loads(sources_path(path).read_text(encoding="utf-8"))


def carry_by_position(truth: dict[int, str], positions: list[int | None]) -> dict[int, str]:
    """Truth for a file whose node j came from the export's node `positions[j]`."""
    return {j: truth[i] for j, i in enumerate(positions) if i is not None and i in truth}


def tool_made(original: onnx.ModelProto, result: onnx.ModelProto) -> set[int]:
    """Nodes of a tool's output that the tool made anew - a name the export does not have - and
    that carry an output of the export's: their truth (`carry_truth`) is that output's producer,
    one of the several modules whose ops the tool replaced (`bench.metrics`: tool-made)."""
    names = {node.name for node in original.graph.node if node.name}
    outputs = {out for node in original.graph.node for out in node.output if out}
    return {
        j
        for j, node in enumerate(result.graph.node)
        if node.name not in names and any(out in outputs for out in node.output)
    }


# --------------------------------------------------------------------------------------------
# degradations


def rename_tensors(graph: onnx.GraphProto, mapping: dict[str, str]) -> None:
    """Rename tensors consistently in every graph: node ios, subgraph ios, value_info."""
    for g in graphs_within(graph):
        for node in g.node:
            for k, name in enumerate(node.input):
                if name in mapping:
                    node.input[k] = mapping[name]
            for k, name in enumerate(node.output):
                if name in mapping:
                    node.output[k] = mapping[name]
        for vi in (*g.input, *g.output, *g.value_info):
            if vi.name in mapping:
                vi.name = mapping[vi.name]


def _protected_names(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in (*graph.input, *graph.output)}
    for g in graphs_within(graph):
        names.update(t.name for t in g.initializer)
        names.update(t.values.name for t in g.sparse_initializer)
    return names


def _clear_node(node: onnx.NodeProto) -> None:
    node.name = ""
    node.doc_string = ""
    del node.metadata_props[:]


def strip_aux(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove every scope trace from ``AUX_OPS`` nodes (name, metadata, output tensor names).

    Simulates a tagger/exporter that only names compute ops. Node order is unchanged.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    protected = _protected_names(out.graph)
    mapping: dict[str, str] = {}
    for g in graphs_within(out.graph):
        for node in g.node:
            if node.op_type not in AUX_OPS:
                continue
            _clear_node(node)
            for name in node.output:
                if name and name not in protected and name not in mapping:
                    mapping[name] = f"aux_t{len(mapping)}"
    rename_tensors(out.graph, mapping)
    return out


def strip_all(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove all names and metadata: only initializer names and topology remain.

    Graph inputs, outputs and initializers keep their names; every other tensor becomes ``t{i}``.
    The worst case a model reaches after a few rewriting tools. Node order is unchanged.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    protected = _protected_names(out.graph)
    mapping: dict[str, str] = {}
    for g in graphs_within(out.graph):
        names = [v.name for v in g.input] if g is not out.graph else []
        for node in g.node:
            _clear_node(node)
            names.extend(node.output)
        for name in names:
            if name and name not in protected and name not in mapping:
                mapping[name] = f"t{len(mapping)}"
        g.doc_string = ""
        del g.metadata_props[:]  # the dynamo export's graph_signature names every parameter
        for vi in (*g.input, *g.output, *g.value_info):
            vi.doc_string = ""
            del vi.metadata_props[:]
    rename_tensors(out.graph, mapping)
    del out.metadata_props[:]
    out.doc_string = ""
    return out


def _onnxslim(model: onnx.ModelProto, arch: str) -> onnx.ModelProto:
    import onnxslim

    return onnxslim.slim(model)


def _ort_optimizer(model: onnx.ModelProto, arch: str) -> onnx.ModelProto:
    """``ort_optimize`` with the arch's model type (ResNet goes through as "bert": no transformer
    fusion matches, only ORT's basic pass)."""
    heads, hidden = (0, 0) if arch == "resnet" else (_HEADS, _HIDDEN)
    return ort_optimize(model, _ORT_MODEL_TYPE[arch], heads, hidden, arch)


def ort_optimize(model: onnx.ModelProto, model_type: str, num_heads: int, hidden_size: int, label: str) -> onnx.ModelProto:
    """``optimize_model`` as users call it, falling back to ``opt_level=0`` when needed.

    The tool is given a file path: with a ModelProto, onnxruntime 1.32 moves the weights out into
    in-memory external data and then fails shape inference on constant Reshape shapes. Its default
    ``opt_level`` (1 for bert/gpt2/vit) yields, for BERT and ALBERT, a model that onnxruntime
    cannot load ("AddInitializedOrtValue Attempt to replace the existing tensor": the Gemm fusion
    reuses initializer names), so then the Python fusions alone (``opt_level=0``) are used.
    """
    import onnxruntime as ort
    from onnxruntime.transformers.optimizer import optimize_model

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.onnx"
        onnx.save(model, src)
        for opt_level in (None, 0):
            result = optimize_model(
                str(src),
                model_type=model_type,
                num_heads=num_heads,
                hidden_size=hidden_size,
                opt_level=opt_level,
                use_gpu=False,
            ).model
            options = ort.SessionOptions()
            options.log_severity_level = 4  # the failure is expected and handled: keep stderr clean
            try:
                ort.InferenceSession(result.SerializeToString(), options, providers=["CPUExecutionProvider"])
            except Exception:  # any load failure means: try the next level
                continue
            return result
    raise UnsupportedCase(f"onnxruntime optimizer output for {label} does not load")


def _quantize_dynamic(model: onnx.ModelProto, arch: str) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "q.onnx"
        quantize_dynamic(model, dst, weight_type=QuantType.QInt8)
        return onnx.load(dst)


def _onnxsim(model: onnx.ModelProto, arch: str) -> onnx.ModelProto:
    """onnx-simplifier as users run it (`onnxsim.simplify` with its defaults: constant folding,
    onnxoptimizer's fusions, a check that the result computes the same); it keeps no node metadata."""
    import onnxsim

    simplified, same = onnxsim.simplify(model)
    if not same:
        raise RuntimeError("onnxsim: the simplified model failed its own check")
    return simplified


def _gs_roundtrip(model: onnx.ModelProto, arch: str) -> onnx.ModelProto:
    import onnx_graphsurgeon as gs

    return gs.export_onnx(gs.import_onnx(model))


_TOOLS: dict[str, Callable[[onnx.ModelProto, str], onnx.ModelProto]] = {
    "strip_aux": lambda m, _: strip_aux(m),
    "strip_all": lambda m, _: strip_all(m),
    "onnxslim": _onnxslim,
    "onnxsim": _onnxsim,
    "ort_optimizer": _ort_optimizer,
    "quantize_dynamic": _quantize_dynamic,
    "gs_roundtrip": _gs_roundtrip,
}


def degrade(model: onnx.ModelProto, degradation: str, arch: str) -> onnx.ModelProto:
    """Apply one degradation (a strip or a real tool) to a fully loaded model, quietly."""
    with _quiet():
        return _TOOLS[degradation](model, arch)


def supported(arch: str, exporter: str, degradation: str) -> bool:
    """Whether ``make_case`` can build this combination into a model onnxruntime runs."""
    return (
        (arch, exporter) in SUPPORTED
        and degradation in DEGRADATIONS
        and (arch, exporter, degradation) not in UNSUPPORTED_DEGRADATIONS
    )


def _save_atomic(model: onnx.ModelProto, path: Path) -> None:
    """Save as one file (no external data; these models are tiny), renamed into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --------------------------------------------------------------------------------------------
# cases and scoring


@dataclass
class Case:
    """One degraded model on disk plus the true module path of the nodes whose origin is known."""

    arch: str
    exporter: str
    degradation: str
    path: Path
    truth: dict[int, str]
    nodes: int
    init: str = "noisy"
    shapes: str = "static"


def make_case(
    arch: str, exporter: str, degradation: str, work_dir: Path, init: str = "noisy", shapes: str = "static"
) -> Case:
    """Export (cached), degrade (cached as ``<degradation>.onnx`` next to the export), carry truth.

    ``none`` returns the export itself (dynamo: with its ``model.onnx.data``). Tools receive the
    fully loaded model (weights included) and their results are saved as single files.
    """
    if degradation not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {degradation!r}; expected one of {DEGRADATIONS}")
    if not supported(arch, exporter, degradation):
        raise UnsupportedCase(f"{arch}/{exporter}/{degradation} is not supported")
    src = export(arch, exporter, work_dir, init, shapes)
    original = onnx.load(src, load_external_data=False)
    truth = truth_of_export(original, exporter, module_paths(arch))
    if degradation == "none":
        return Case(arch, exporter, degradation, src, truth, len(original.graph.node), init, shapes)

    path = src.parent / f"{degradation}.onnx"
    if path.exists():
        result = onnx.load(path, load_external_data=False)
    else:
        full = onnx.load(src)  # tools need the weights
        try:
            with _quiet():
                result = _TOOLS[degradation](full, arch)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise ToolFailed(f"{arch}/{exporter}/{degradation} ({init}, {shapes}): {type(exc).__name__}: {first}") from exc
        _save_atomic(result, path)
    if degradation in ("strip_aux", "strip_all"):
        if len(result.graph.node) != len(original.graph.node):
            raise AssertionError(f"{path}: strip changed the node count")
    else:
        truth = carry_truth(original, truth, result)
    return Case(arch, exporter, degradation, path, truth, len(result.graph.node), init, shapes)


@dataclass
class Score:
    """How a tagged copy of a case's model compares with the case's truth."""

    nodes: int
    tagged: int
    with_truth: int
    correct: int
    accuracy: float
    """correct / with_truth (0.0 when no node has truth)."""
    by_source: dict[str, int] = field(default_factory=dict)
    """``hierarchy.source`` value -> number of tagged nodes carrying it."""
    correct_by_source: dict[str, int] = field(default_factory=dict)
    """``hierarchy.source`` value -> number of nodes with truth tagged correctly from it."""
    reachable: int = 0
    """Nodes with truth whose true module (or a descendant) carries direct evidence somewhere in
    the model: the only modules any inference can name (a parameter-free activation module
    whose names were stripped is not reachable)."""
    reachable_correct: int = 0


def score(tagged: onnx.ModelProto, case: Case) -> Score:
    """Score a tagged model: a node is correct when its ``hierarchy.module`` equals the truth.

    The tagged model must keep the case's main-graph node order (truth is keyed by position).
    """
    nodes = tagged.graph.node
    if len(nodes) != case.nodes:
        found = f"tagged model has {len(nodes)} main-graph nodes, case has {case.nodes}"
        raise ValueError(f"{found}: the tagger must not add, drop or reorder nodes")
    n_tagged = with_truth = correct = reachable = reachable_correct = 0
    by_source: Counter[str] = Counter()
    correct_by_source: Counter[str] = Counter()
    evidenced = _evidenced_modules(nodes)
    for i, node in enumerate(nodes):
        props: dict[str, str] = {}
        for prop in node.metadata_props:
            props.setdefault(prop.key, prop.value)
        module = props.get(MODULE_KEY)
        source = props.get(SOURCE_KEY)
        if module is not None:
            n_tagged += 1
            if source is not None:
                by_source[source] += 1
        if i in case.truth:
            with_truth += 1
            hit = module is not None and module == case.truth[i]
            if hit:
                correct += 1
                if source is not None:
                    correct_by_source[source] += 1
            if case.truth[i] in evidenced:
                reachable += 1
                reachable_correct += hit
    return Score(
        nodes=len(nodes),
        tagged=n_tagged,
        with_truth=with_truth,
        correct=correct,
        accuracy=correct / with_truth if with_truth else 0.0,
        by_source=dict(by_source),
        correct_by_source=dict(correct_by_source),
        reachable=reachable,
        reachable_correct=reachable_correct,
    )


def _evidenced_modules(nodes) -> set[str]:
    """Modules named by direct evidence in a tagged graph, with all their ancestors."""
    found: set[str] = {""}
    for node in nodes:
        props = {p.key: p.value for p in node.metadata_props}
        if props.get(SOURCE_KEY) in (None, "inherited", "fallback") or MODULE_KEY not in props:
            continue
        parts = props[MODULE_KEY].split(".") if props[MODULE_KEY] else []
        found.update(".".join(parts[:k]) for k in range(len(parts) + 1))
    return found
