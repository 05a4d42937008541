"""Real-pipeline benchmark: the families users export, the exporters they use, the tools they run.

Families (`bench.families`): BERT encoder, LLaMA with a KV cache, T5 encoder-decoder (optimum's
merged decoder included), ViT. Exporters (`bench.family_exports`): optimum with and without past,
plain `torch.onnx.export` with TorchScript and dynamo, `shim.export` with both. Tools: none,
onnxslim, onnxruntime's transformer optimizer (the fitting `model_type`), `quantize_dynamic`,
static QDQ (`quantize_static`, a small random calibration reader) and a graphsurgeon round trip.

Per row: nodes (all graphs), the tagger's direct / inherited / fallback counts, exact / sound /
wrong / best / reachable against the truth (`bench.metrics`; truth: dynamo `name_scopes`, TorchScript
and optimum scoped names resolved against the module tree, the plain TorchScript export's names
by position for the TorchScript shim; carried to a tool's output by node name or output tensor
name, in every graph), invented modules (tags that are no `named_modules()` path of the exported
module), the head's tag, and exact accuracy with `reference=` (the export before the tool) and
`weights=` (the `save_pretrained` checkpoint) where the tagger offers them.

    python -m bench.pipelines [--families llama,t5] [--exporters optimum,dynamo] [--tools none,onnxslim]

Writes docs/pipelines.md and the README section between the pipelines markers (full runs only).
"""

from __future__ import annotations

import inspect
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import fire
import numpy as np
import onnx

from bench import cases, families, metrics
from bench.docs import ROOT, publish
from bench.family_exports import EXPORTERS, ExportedFile, ExportError, cache_root, export, hf_dir
from tagger.api import tag_proto

TOOLS = ("none", "onnxslim", "ort_optimizer", "quantize_dynamic", "quantize_static", "gs_roundtrip")

MATMUL_OPS = frozenset(
    {"MatMul", "Gemm", "MatMulInteger", "QLinearMatMul", "FusedMatMul", "MatMulNBits", "DynamicQuantizeMatMul",
     "MatMulIntegerToFloat", "QGemm"}
)  # fmt: skip
"""Ops that can carry the output head's projection, before and after fusion or quantization."""

GraphKey = tuple[str, ...]
NodeKey = tuple[GraphKey, int]


class ToolError(RuntimeError):
    """A tool that crashed; one short line."""


class DoesNotLoad(Exception):  # noqa: N818 - a result, not an error
    """A tool's output that onnxruntime's CPU provider does not load, carried to be tagged anyway."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__("does not load on the CPU")
        self.model = model


# --------------------------------------------------------------------------------------------
# graphs of a model, keyed so that a tool's output can be matched with its input


def walk(graph: onnx.GraphProto, key: GraphKey = ()) -> Iterator[tuple[GraphKey, onnx.GraphProto]]:
    """Every graph with its key: the attribute names leading to it (`()`, `("then_branch",)`, …)."""
    yield key, graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from walk(attr.g, (*key, attr.name))
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for k, g in enumerate(attr.graphs):
                    yield from walk(g, (*key, f"{attr.name}[{k}]"))


def nodes_of(model: onnx.ModelProto) -> Iterator[tuple[NodeKey, onnx.NodeProto]]:
    for key, graph in walk(model.graph):
        for i, node in enumerate(graph.node):
            yield (key, i), node


def truth_of(model: onnx.ModelProto, modules: frozenset[str], kind: str) -> dict[NodeKey, str]:
    """True module of every node whose origin the export records: `metadata` (dynamo `name_scopes`)
    or `names` (TorchScript scoped node names resolved against the module tree, quirks undone)."""
    resolver = cases._ScopeResolver(set(modules))
    truth: dict[NodeKey, str] = {}
    for key, node in nodes_of(model):
        module = cases._dynamo_module(node) if kind == "metadata" else resolver.resolve(node.name)
        if module is not None and module in modules:
            truth[key] = module
    return truth


def carry(original: onnx.ModelProto, truth: dict[NodeKey, str], result: onnx.ModelProto) -> dict[NodeKey, str]:
    """Truth for a tool's output: the node of the same graph with the same name, else the one that
    produced the same output tensor; nodes a tool made match neither and get none."""
    by_name: dict[tuple[GraphKey, str], NodeKey] = {}
    by_output: dict[tuple[GraphKey, str], NodeKey] = {}
    for key, node in nodes_of(original):
        if node.name:
            by_name.setdefault((key[0], node.name), key)
        for out in node.output:
            if out:
                by_output.setdefault((key[0], out), key)
    carried: dict[NodeKey, str] = {}
    for key, node in nodes_of(result):
        src = by_name.get((key[0], node.name)) if node.name else None
        if src is None or src not in truth:
            src = next((by_output[(key[0], o)] for o in node.output if (key[0], o) in by_output), None)
        if src is not None and src in truth:
            carried[key] = truth[src]
    return carried


def tags_of(model: onnx.ModelProto) -> dict[NodeKey, str | None]:
    return {key: next((p.value for p in node.metadata_props if p.key == metrics.MODULE_KEY), None) for key, node in nodes_of(model)}


def head_node(model: onnx.ModelProto, output: str) -> NodeKey | None:
    """The MatMul/Gemm nearest to graph output `output` (the first output when absent), walking
    producers backwards; an `If` is followed into its then-branch."""
    names = [o.name for o in model.graph.output]
    if not names:
        return None
    graph_key, graph = (), model.graph
    frontier = [output if output in names else names[0]]
    seen: set[str] = set()
    while frontier:
        producers = {out: i for i, node in enumerate(graph.node) for out in node.output}
        nxt: list[str] = []
        for tensor in frontier:
            if tensor in seen or tensor not in producers:
                continue
            seen.add(tensor)
            i = producers[tensor]
            node = graph.node[i]
            if node.op_type in MATMUL_OPS:
                return graph_key, i
            if node.op_type == "If" and node.attribute:
                branch = next(a for a in node.attribute if a.name == "then_branch")
                index = list(node.output).index(tensor)
                graph_key, graph = (*graph_key, "then_branch"), branch.g
                nxt, seen = [graph.output[index].name], set()
                break
            nxt.extend(node.input)
        frontier = nxt
    return None


# --------------------------------------------------------------------------------------------
# feeds and tools


def _dim(dim: onnx.TensorShapeProto.Dimension, sizes: dict[str, int]) -> int:
    if dim.HasField("dim_value"):
        return dim.dim_value
    name = dim.dim_param
    if name in sizes:
        return sizes[name]
    expression = re.sub(r"[A-Za-z_]\w*", lambda m: str(sizes.get(m.group(0), 1)), name)
    return int(eval(expression, {"__builtins__": {}})) if re.fullmatch(r"[\d\s+*-]+", expression) else 1


_SIZES = {
    "batch_size": 1,
    "sequence_length": 1,
    "decoder_sequence_length": 1,
    "encoder_sequence_length": families.SEQ,
    "past_sequence_length": families.PAST,
    "past_decoder_sequence_length": families.PAST,
    "num_channels": 3,
    "height": families.IMAGE,
    "width": families.IMAGE,
}


def feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs a tiny family model runs on: optimum's named dims (`past_sequence_length +
    sequence_length` evaluated), ids below the vocabulary, masks of ones, token types 0, positions
    after the past."""
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    out: dict[str, np.ndarray] = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        shape = tuple(_dim(d, _SIZES) for d in tensor.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        if tensor.elem_type == onnx.TensorProto.BOOL:
            out[value.name] = np.array(True) if not shape else np.ones(shape, bool)
        elif np.issubdtype(dtype, np.integer):
            if "mask" in value.name:
                out[value.name] = np.ones(shape, dtype)
            elif "type" in value.name:  # token types: a table of two rows
                out[value.name] = np.zeros(shape, dtype)
            elif "position" in value.name:
                out[value.name] = np.broadcast_to(np.arange(families.PAST, families.PAST + shape[-1]), shape).astype(dtype)
            else:
                out[value.name] = rng.integers(0, families.VOCAB, size=shape).astype(dtype)
        else:
            out[value.name] = rng.standard_normal(size=shape).astype(dtype)
    return out


def _check_loads(model: onnx.ModelProto) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _ort_optimizer(model: onnx.ModelProto, family: str) -> onnx.ModelProto:
    """`optimize_model` with the family's model type, given a file (as `bench.cases` explains);
    its default level first, the Python fusions alone (`opt_level=0`) when that does not load.
    When neither loads on the CPU (T5's `RelativePositionBias` has no CPU kernel) the level-0 file
    is still what the user gets and is tagged: the row says `(no CPU load)`."""
    from onnxruntime.transformers.optimizer import optimize_model

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.onnx"
        onnx.save(model, src)
        result = None
        for opt_level in (None, 0):
            result = optimize_model(
                str(src),
                model_type=families.FAMILIES[family].ort_model_type,
                num_heads=families.HEADS,
                hidden_size=families.HIDDEN,
                opt_level=opt_level,
                use_gpu=False,
            ).model
            try:
                _check_loads(result)
            except Exception:
                continue
            return result
    raise DoesNotLoad(result)


class _RandomReader:
    """A calibration reader of a few random feeds (`onnxruntime.quantization.CalibrationDataReader`)."""

    def __init__(self, model: onnx.ModelProto, count: int = 4) -> None:
        self.batches = iter([feeds(model, seed) for seed in range(count)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)

    def rewind(self) -> None:  # pragma: no cover - onnxruntime calls it on some paths
        pass


def _quantize_static(model: onnx.ModelProto, family: str) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    reader = type("Reader", (_RandomReader, CalibrationDataReader), {})(model)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "q.onnx"
        onnx.save(model, src)
        qint8 = QuantType.QInt8
        quantize_static(src, dst, reader, quant_format=QuantFormat.QDQ, activation_type=qint8, weight_type=qint8)
        return onnx.load(dst)


def _cases_tool(name: str) -> Callable[[onnx.ModelProto, str], onnx.ModelProto]:
    return lambda model, family: cases._TOOLS[name](model, family)


_TOOL_FUNCTIONS: dict[str, Callable[[onnx.ModelProto, str], onnx.ModelProto]] = {
    "onnxslim": _cases_tool("onnxslim"),
    "ort_optimizer": _ort_optimizer,
    "quantize_dynamic": _cases_tool("quantize_dynamic"),
    "quantize_static": _quantize_static,
    "gs_roundtrip": _cases_tool("gs_roundtrip"),
}


def degraded(exported: ExportedFile, tool: str) -> Path:
    """The export after `tool`, cached beside it as `tools/<stem>.<tool>.onnx` (a failure as `.error`)."""
    if tool == "none":
        return exported.path
    path = exported.path.parent / "tools" / f"{exported.component}.{tool}.onnx"
    path.parent.mkdir(exist_ok=True)
    failure = path.with_suffix(".error")
    if path.exists():
        return path
    if failure.exists():
        raise ToolError(failure.read_text(encoding="utf-8").strip())
    try:
        with cases._quiet():
            result = _TOOL_FUNCTIONS[tool](onnx.load(exported.path), exported.family)
    except DoesNotLoad as unloadable:
        result = unloadable.model
        path.with_suffix(".noload").touch()
    except Exception as exc:
        reason = str(exc) if isinstance(exc, ToolError) else f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
        failure.write_text(reason[:160] + "\n", encoding="utf-8")
        raise ToolError(reason[:160]) from exc
    if not result.graph.node:
        reason = "wrote a model with no nodes"
        failure.write_text(reason + "\n", encoding="utf-8")
        raise ToolError(reason)
    cases._save_atomic(result, path)
    return path


# --------------------------------------------------------------------------------------------
# one row


@dataclass
class Row:
    """One family x exporter x file x tool: what the tagger did and how it scored (or why not)."""

    family: str
    exporter: str
    component: str
    tool: str
    reason: str = ""
    note: str = ""
    nodes: int = 0
    direct: int = 0
    inherited: int = 0
    fallback: int = 0
    scores: metrics.Metrics = metrics.EMPTY
    invented: dict[str, int] = field(default_factory=dict)
    """Invented module -> nodes tagged with it."""
    head_tag: str | None = None
    head_ok: bool | None = None
    reference: str = "–"
    weights: str = "–"
    commands: dict[str, str | None] | None = None
    """CLI command -> None when it passed, else its error line (optimum exports, tool none)."""


def _supports(keyword: str) -> bool:
    return keyword in inspect.signature(tag_proto).parameters


def _exact_with(path: Path, truth: dict[NodeKey, str], owners: frozenset[str] = frozenset(), **evidence: object) -> str:
    """Exact accuracy when the tagger is also given `reference=` or `weights=`; `–` until it takes them.
    With `owners`, also the exact accuracy on nodes whose true module owns parameters (`params`)."""
    (keyword,) = evidence
    if not _supports(keyword):
        return "–"
    model = onnx.load(path, load_external_data=False)
    try:
        tag_proto(model, path.name, **evidence)
    except Exception as exc:  # the feature is new: a crash is a finding for the table, not the end of the run
        return f"error: {type(exc).__name__}"
    tags = tags_of(model)
    text = _pct(metrics.measure(tags, truth, {""}).exact, bool(truth))
    if owners:
        owned = {key: module for key, module in truth.items() if module in owners}
        text += f" (params {_pct(metrics.measure(tags, owned, {''}).exact, bool(owned))})"
    return text


def measure_row(exported: ExportedFile, tool: str, truth_source: onnx.ModelProto, kind: str, work: Path) -> Row:
    row = Row(exported.family, exported.exporter, exported.component, tool)
    try:
        path = degraded(exported, tool)
    except ToolError as exc:
        row.reason = str(exc)
        return row
    if path.with_suffix(".noload").exists():
        row.note = " (no CPU load)"
    original = onnx.load(exported.path, load_external_data=False)
    model = onnx.load(path, load_external_data=False)
    truth = original_truth = truth_of(truth_source, exported.modules, kind)  # by position: valid for the export
    if tool != "none":
        truth = carry(original, truth, model)
    evidenced = metrics.evidenced_modules(model, exported.modules)
    head_output = families.FAMILIES[exported.family].head_output
    head = head_node(model, head_output)
    original_head = head_node(original, head_output)
    try:
        report = tag_proto(model, path.name)
    except Exception as exc:
        row.reason = f"tagger: {type(exc).__name__}: {str(exc)[:100]}"
        return row
    tags = tags_of(model)
    row.nodes, row.direct, row.inherited, row.fallback = report.nodes, report.direct, report.inherited, report.fallback
    row.scores = metrics.measure(tags, truth, evidenced)
    for tag in tags.values():
        if tag is not None and tag not in exported.modules:
            row.invented[tag] = row.invented.get(tag, 0) + 1
    if head is not None:
        row.head_tag = tags.get(head)
        expected = truth.get(head, original_truth.get(original_head))  # a node a tool made: the export's head
        row.head_ok = None if expected is None else row.head_tag == expected
    if tool == "none" and exported.exporter.startswith("optimum"):
        row.commands = run_commands(path)
    if tool != "none":
        row.reference = _exact_with(path, truth, reference=str(exported.path))
    row.weights = _exact_with(path, truth, exported.owners, weights=str(hf_dir(exported.family, work) / "model.safetensors"))
    return row


COMMANDS: dict[str, tuple[str, ...]] = {
    "retag": ("retag", "{model}", "--output", "{tmp}/tagged.onnx"),
    "report": ("report", "{model}", "--json"),
    "extract": ("extract", "{model}", "--all", "--depth", "2", "--out_dir", "{tmp}/modules", "--verify"),
    "profile": ("profile", "{model}", "--runs", "2"),
}
"""What a user runs on an optimum output with default inputs (issue: every one must pass)."""


def run_commands(path: Path) -> dict[str, str | None]:
    """Run each of `COMMANDS` on `path` as a user does (`python -m tagger`, this tree's code);
    None for a command that exits 0, else its last error line and exit code."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    results: dict[str, str | None] = {}
    for name, template in COMMANDS.items():
        with tempfile.TemporaryDirectory() as tmp:
            argv = [part.format(model=path, tmp=tmp) for part in template]
            try:
                done = subprocess.run([sys.executable, "-m", "tagger", *argv], capture_output=True, text=True, timeout=300, env=env)
            except subprocess.TimeoutExpired:
                results[name] = "timed out"
                continue
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        message = (lines or ["no message"])[-1].replace(str(path), path.name)
        results[name] = None if done.returncode == 0 else f"exit {done.returncode}: {message[:160]}"
    return results


def _same_order(plain: onnx.ModelProto, shimmed: onnx.ModelProto) -> None:
    """The TorchScript shim renames, it does not reorder: the plain export's truth holds by position."""
    if [n.op_type for n in plain.graph.node] != [n.op_type for n in shimmed.graph.node]:
        raise ToolError("the shim changed the node order")


def rows_for(family: str, exporter: str, tools: tuple[str, ...], work: Path) -> Iterator[Row]:
    if exporter == "optimum-past" and not families.FAMILIES[family].has_past:
        return  # no such task: nothing a user could run
    try:
        files = export(family, exporter, work)
    except ExportError as exc:
        yield Row(family, exporter, "–", "–", reason=f"export failed: {exc}")
        return
    for exported in files:
        original = onnx.load(exported.path, load_external_data=False)
        kind = "metadata" if exporter in ("dynamo", "shim") else "names"
        truth_source = original
        if exporter == "shim-torchscript":
            try:
                plain = export(family, "torchscript", work)[0]
                truth_source = onnx.load(plain.path, load_external_data=False)
                _same_order(truth_source, original)
            except (ExportError, ToolError) as exc:
                yield Row(family, exporter, exported.component, "–", reason=f"no truth: {exc}")
                continue
        for tool in tools:
            yield measure_row(exported, tool, truth_source, kind, work)


# --------------------------------------------------------------------------------------------
# table


def _pct(value: float, graded: bool) -> str:
    return f"{100 * value:.1f}%" if graded else "n/a"


HEADER = (
    "| family | exporter | file | tool | nodes | direct / inherited / fallback | **exact** | sound | wrong | best "
    "| reachable | invented | head tag | --reference | --weights | commands |"
)


def format_row(row: Row) -> str:
    lead = f"| {row.family} | {row.exporter} | {row.component} | {row.tool}{row.note} "
    if row.reason:
        return lead + f"| {row.reason.replace('|', '/')} |" + " |" * 11
    s, graded = row.scores, bool(row.scores.graded)
    invented = sum(row.invented.values())
    mark = {True: " ✓", False: " ✗", None: ""}[row.head_ok]
    head = "–" if row.head_tag is None and row.head_ok is None else f"`{row.head_tag}`{mark}"
    return (
        lead + f"| {row.nodes} | {row.direct} / {row.inherited} / {row.fallback} | **{_pct(s.exact, graded)}** "
        f"| {_pct(s.sound, graded)} | {_pct(s.wrong, graded)} | {_pct(s.best, graded)} | {_pct(s.reachable, graded)} "
        f"| {invented if not invented else f'**{invented}**'} | {head} | {row.reference} | {row.weights} "
        f"| {_commands_cell(row.commands)} |"
    )


def _commands_cell(commands: dict[str, str | None] | None) -> str:
    if commands is None:
        return "·"
    failed = [name for name, error in commands.items() if error]
    return "all pass" if not failed else "✗ " + ", ".join(failed)


def summary(rows: list[Row]) -> str:
    """Per exporter x tool, pooled over families and files: exact / sound / best / reachable,
    invented nodes, heads right, failures."""
    lines = [
        "| exporter | tool | rows | failed | exact (pooled) | worst exact | wrong (pooled) | best (pooled) | reachable (pooled) "
        "| invented nodes | heads right |",
        "|---|---|" + "---:|" * 9,
    ]
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.exporter, row.tool), []).append(row)
    order = {name: i for i, name in enumerate((*EXPORTERS, *TOOLS, "–"))}
    for (exporter, tool), group in sorted(groups.items(), key=lambda item: (order[item[0][0]], order[item[0][1]])):
        good = [r for r in group if not r.reason]
        pooled = sum((r.scores for r in good), metrics.EMPTY)
        graded = [r for r in good if r.scores.graded]
        worst = min(graded, key=lambda r: r.scores.exact) if graded else None
        worst_text = f"{100 * worst.scores.exact:.1f}% ({worst.family} {worst.component})" if worst else "n/a"
        heads = [r for r in good if r.head_ok is not None]
        g = bool(pooled.graded)
        lines.append(
            f"| {exporter} | {tool} | {len(group)} | {len(group) - len(good)} | {_pct(pooled.exact, g)} | {worst_text} "
            f"| {_pct(pooled.wrong, g)} | {_pct(pooled.best, g)} | {_pct(pooled.reachable, g)} "
            f"| {sum(sum(r.invented.values()) for r in good)} | {sum(r.head_ok for r in heads)} of {len(heads)} |"
        )
    return "\n".join(lines)


def _selected(value: str | tuple | list | None, known: tuple[str, ...], what: str) -> tuple[str, ...]:
    chosen = tuple(value.split(",")) if isinstance(value, str) else tuple(value or known)
    unknown = [v for v in chosen if v not in known]
    if unknown:
        raise SystemExit(f"unknown {what} {', '.join(unknown)}; expected some of {', '.join(known)}")
    return chosen


def run(
    families: str | None = None,  # noqa: A002 - the CLI flag users type
    exporters: str | None = None,
    tools: str | None = None,
    work: str = "bench/.cache",
    publish_docs: bool = True,
) -> None:
    """Export, degrade, tag and score every selected family x exporter x tool; print and publish."""
    from bench import families as family_specs

    chosen_families = _selected(families, tuple(family_specs.FAMILIES), "family")
    chosen_exporters = _selected(exporters, EXPORTERS, "exporter")
    chosen_tools = _selected(tools, TOOLS, "tool")
    work_dir = ROOT / work
    cached = set(cache_root(work_dir).glob("*/*"))
    started = time.perf_counter()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rows: list[Row] = []
    table = [HEADER, "|---|---|---|---|" + "---:|" * 8 + "---|---:|---:|---|"]
    print(table[0], flush=True)
    for family in chosen_families:
        for exporter in chosen_exporters:
            for row in rows_for(family, exporter, chosen_tools, work_dir):
                rows.append(row)
                table.append(format_row(row))
                print(table[-1], flush=True)
    elapsed = time.perf_counter() - started
    present = set(cache_root(work_dir).glob("*/*"))
    text = _document(rows, table, elapsed, len(present - cached), len(present))
    print("\n" + summary(rows))
    full = (chosen_families, chosen_exporters, chosen_tools) == (tuple(family_specs.FAMILIES), EXPORTERS, TOOLS)
    if publish_docs and full:
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "pipelines.md").write_text("# Real-pipeline benchmark\n\n" + _LEGEND + "\n" + text, encoding="utf-8")
        brief = text.split("Per exporter x tool")[0]
        publish("pipelines", brief + "Every row, the failures and the legend: [docs/pipelines.md](docs/pipelines.md).\n")


def _invented_line(tag: str, where: list[str]) -> str:
    more = "; …" if len(where) > 3 else ""
    return f"- `{tag}` — {len(where)} rows ({'; '.join(where[:3])}{more})"


def pivot(rows: list[Row]) -> str:
    """Exact accuracy (pooled over families and files) per exporter x tool, with invented-module
    nodes, heads tagged wrong and failed rows noted in the cell: the README's one-screen view."""
    tools = [t for t in TOOLS if any(r.tool == t for r in rows)]
    lines = ["| exporter | " + " | ".join(tools) + " |", "|---|" + "---:|" * len(tools)]
    for exporter in [e for e in EXPORTERS if any(r.exporter == e for r in rows)]:
        cells = []
        for tool in tools:
            group = [r for r in rows if r.exporter == exporter and r.tool == tool]
            good = [r for r in group if not r.reason]
            pooled = sum((r.scores for r in good), metrics.EMPTY)
            notes = []
            invented = sum(sum(r.invented.values()) for r in good)
            heads_wrong = sum(r.head_ok is False for r in good)
            if invented:
                notes.append(f"{invented} invented")
            if heads_wrong:
                notes.append(f"{heads_wrong} head{'s' if heads_wrong > 1 else ''} wrong")
            if len(good) < len(group):
                notes.append(f"{len(group) - len(good)} failed")
            cell = _pct(pooled.exact, bool(pooled.graded)) if good else "failed"
            cells.append(cell + (f" ({', '.join(notes)})" if notes and good else ""))
        lines.append(f"| {exporter} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _document(rows: list[Row], table: list[str], elapsed: float, built: int, total: int) -> str:
    failures = [r for r in rows if r.reason]
    invented: dict[str, list[str]] = {}
    for r in rows:
        for tag, count in r.invented.items():
            invented.setdefault(tag, []).append(f"{r.family} {r.exporter} {r.component} {r.tool}: {count}")
    failed_text = "\n".join(f"- {r.family} {r.exporter} {r.component} {r.tool}: {r.reason}" for r in failures) or "- none"
    commands = [(r, name, error) for r in rows if r.commands for name, error in r.commands.items()]
    passed = sum(error is None for _, _, error in commands)
    command_text = f"{passed} of {len(commands)} command runs pass.\n\n" + (
        "\n".join(f"- `tagger {name}` on {r.family} {r.exporter} {r.component}: {error}" for r, name, error in commands if error)
        or "- none failed"
    )
    invented_text = "\n".join(_invented_line(tag, where) for tag, where in invented.items()) or "- none"
    return (
        f"Command: `python -m bench.pipelines` ({elapsed:.0f} s on this machine; {built} of {total} exports and "
        f"checkpoints were built in the run, the rest came from bench/.cache).\n\n"
        f"Exact accuracy per exporter x tool, pooled over families and files (invented-module nodes, "
        f"heads tagged wrong, failed rows in brackets):\n\n{pivot(rows)}\n\n"
        f"Commands on every optimum output (`tagger retag`, `report --json`, `extract --all --depth 2 --verify`, "
        f"`profile`; default inputs):\n\n{command_text}\n\n"
        f"Per exporter x tool, pooled over families and files:\n\n{summary(rows)}\n\n"
        f"Rows that failed (export or tool):\n\n{failed_text}\n\n"
        f"Invented modules (tag — rows: nodes):\n\n{invented_text}\n\n"
        "Every row:\n\n" + "\n".join(table) + "\n"
    )


_LEGEND = """Families: BERT (`BertModel`), LLaMA (`LlamaForCausalLM` with a KV cache: past keys/values are
inputs), T5 (`T5ForConditionalGeneration`), ViT (`ViTModel`); hidden 32, 2 layers, vocabulary 100,
random weights plus noise (`bench/families.py`). Exporters: `optimum` = `optimum-cli export onnx`
(`feature-extraction`, `text-generation`, `text2text-generation`, `image-feature-extraction`) run in
its own environment (optimum-onnx pins transformers 4.57, the tests use 5.x, so it is not in the
test extra); `optimum-past` = the `-with-past` task (only the files the task without past does not
also write: LLaMA's `model`, T5's `decoder_with_past_model` and `decoder_model_merged`, whose
nodes all live in the branches of one `If`); `torchscript` / `dynamo` = plain `torch.onnx.export`
of the model behind a positional wrapper (module paths `m.…`; LLaMA with its cache as inputs);
`shim` / `shim-torchscript` = `shim.export` with retag off.

Columns: *nodes* counts every graph (bodies included); *direct / inherited / fallback* are the
tagger's own counts. *exact*: the tag equals the truth; *sound*: the tag is the truth or an
ancestor of it; *wrong* = 100% − sound; *best*: the tag is the deepest ancestor-or-self of the
truth that the file still evidences (`bench/metrics.py`); *reachable*: the truth itself is
evidenced, the ceiling of exact. Truth: dynamo `name_scopes` metadata; TorchScript and optimum
node names resolved against the exported module's `named_modules()` (an optimum sub-model's
paths are relative to what it wraps: the encoder file's are `get_encoder()`'s); the TorchScript
shim's from the plain TorchScript export by position; carried through a tool by node name or
output tensor name, graph by graph. Nodes a tool made (fusions, quantization) have none.
*invented*: nodes whose tag is no `named_modules()` path of the exported module (bold when > 0).
*head tag*: the tag of the MatMul/Gemm nearest to the head output (`logits`, else
`last_hidden_state`; into the then-branch of an `If`), ✓ when it equals that node's truth, or,
for a node a tool made, the truth of the export's own head node (`lm_head`, the last layer's
output projection for the encoders).
*--reference* / *--weights*: exact accuracy when `tag_proto` is also given the export before the
tool / the `save_pretrained` checkpoint (with, in brackets, exact accuracy on the nodes whose true
module owns parameters); `–` while the tagger does not take that argument (and
for `--reference` on `none` rows, which have no earlier file). *commands*: on every optimum output
(tool none), `tagger retag`, `report`, `extract --all --depth 2 --verify` and `profile` with their
default inputs, run as a user runs them; `·` where not run.
"""


if __name__ == "__main__":
    fire.Fire(run)
