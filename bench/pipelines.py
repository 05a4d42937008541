"""Real-pipeline benchmark: the families users export, the exporters they use, the tools they run.

Families (`bench.families`): BERT encoder, LLaMA with a KV cache, T5 encoder-decoder (optimum's
merged decoder included), ViT. Exporters (`bench.family_exports`): optimum with and without past,
plain `torch.onnx.export` with TorchScript and dynamo, `shim.export` with both. Tools: none,
onnxslim, onnxruntime's transformer optimizer (the fitting `model_type`), `quantize_dynamic`,
static QDQ (`quantize_static`, a small random calibration reader), a graphsurgeon round trip,
the optimizer followed by `quantize_dynamic` (`ort_opt_quantize`, onnxruntime's recipe for
transformers), and the conversions behind the `q4` and `fp16` files people download
(transformers.js's variants): onnxruntime's int4 weight-only quantizer (`matmul_nbits`) and its
float16 converter (`float16`).

Per row: nodes (all graphs), the tagger's direct / inherited / fallback counts, exact / sound /
wrong / best / reachable against the truth (`bench.metrics`; truth: dynamo `name_scopes`, TorchScript
and optimum scoped names resolved against the module tree, the plain TorchScript export's names
by position for the TorchScript shim; carried to a tool's output by node name or output tensor
name, in every graph), invented modules (tags that are no `named_modules()` path of the exported
module), the head's tag, and exact accuracy with `reference=` (the export before the tool) and
`weights=` (the `save_pretrained` checkpoint) where the tagger offers them. On optimum outputs it
also runs `tagger retag / report / extract --all --depth 2 --verify / profile` as a user does.

Models: `bench.families`; exports: `bench.family_exports`; tools: `bench.pipeline_tools`; truth
across control-flow bodies: `bench.graph_truth`; scores: `bench.metrics`.

    python -m bench.pipelines [--families llama,t5] [--exporters optimum,dynamo] [--tools none,onnxslim]

Writes docs/pipelines.md and the summary in docs/real-pipelines.md between the pipelines markers
(full runs only).
"""

from __future__ import annotations

import inspect
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import fire
import onnx

from bench import families, metrics
from bench.docs import ROOT, publish
from bench.family_exports import EXPORTERS, ExportedFile, ExportError, cache_root, export, hf_dir
from bench.graph_truth import NodeKey, carry, head_node, tags_of, truth_of
from bench.pipeline_tools import TOOLS, ToolError, degraded
from tagger.api import tag_proto

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
        tag_proto(model, str(path), **evidence)  # the path: external data is read beside it
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
    return {
        name: None if code == 0 else f"exit {code}: {message}" if code > 0 else message
        for name, (code, message) in command_results(path, COMMANDS).items()
    }


def command_results(path: Path, commands: dict[str, tuple[str, ...]], timeout: int = 300) -> dict[str, tuple[int, str]]:
    """Run each command on `path` as a user does (`python -m tagger`, this tree's code): its exit
    code (-1 when it timed out) and the last line it wrote to stderr."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    results: dict[str, tuple[int, str]] = {}
    for name, template in commands.items():
        with tempfile.TemporaryDirectory() as tmp:
            argv = [part.format(model=path, tmp=tmp) for part in template]
            command = [sys.executable, "-m", "tagger", *argv]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
            except subprocess.TimeoutExpired:
                results[name] = (-1, "timed out")
                continue
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        message = (lines or ["no message"])[-1].replace(str(path), path.name)
        results[name] = (done.returncode, message[:160])
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
        publish(
            "pipelines",
            brief + "Every row, the failures and the legend: [pipelines.md](pipelines.md).\n",
            ("docs/real-pipelines.md",),
        )


def _invented_line(tag: str, where: list[str]) -> str:
    more = "; …" if len(where) > 3 else ""
    rows = f"{len(where)} row{'s' if len(where) > 1 else ''}"
    return f"- `{tag}` — {rows} ({'; '.join(where[:3])}{more})"


def pivot(rows: list[Row]) -> str:
    """Exact accuracy (pooled over families and files) per exporter x tool, with invented-module
    nodes, heads missed (not tagged with the head's own module: an ancestor counts as missed too)
    and failed rows noted in the cell: docs/real-pipelines.md's one-screen view."""
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
            heads_missed = sum(r.head_ok is False for r in good)
            if invented:
                notes.append(f"{invented} invented")
            if heads_missed:
                notes.append(f"{heads_missed} head{'s' if heads_missed > 1 else ''} missed")
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
        f"heads missed (tagged with another module than the head's, an ancestor included), failed rows in brackets):"
        f"\n\n{pivot(rows)}\n\n"
        f"Commands on every optimum output (`tagger retag`, `report --json`, `extract --all --depth 2 --verify`, "
        f"`profile`; default inputs):\n\n{command_text}\n\n"
        f"Per exporter x tool, pooled over families and files:\n\n{summary(rows)}\n\n"
        f"Rows that failed (export or tool):\n\n{failed_text}\n\n"
        f"Invented modules (tag — rows: nodes):\n\n{invented_text}\n\n"
        "Every row:\n\n" + "\n".join(table) + "\n"
    )


_LEGEND = """Families: BERT (`BertModel`), LLaMA (`LlamaForCausalLM`, grouped-query attention, with a KV
cache: past keys/values are inputs), T5 (`T5ForConditionalGeneration`), ViT (`ViTModel`); hidden 32, 2 layers, vocabulary 100,
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

What the tools did here (torch 2.13, transformers 5.24 / 4.57 for optimum, onnxruntime 1.32,
onnxslim 0.1.98): T5's default sdpa attention fails the dynamo exporter in transformers 5.24
("Cannot view a tensor …"), so T5 is exported with eager attention; LLaMA with grouped-query
attention exports with all three exporters; transformers 4.57 and 5.24 name ViT's modules
differently (`encoder.layer.0.output.dense` vs `layers.0.mlp.fc2`), so each export is scored
against the module tree of the transformers that exported it; onnxruntime's optimizer turns T5
into `RelativePositionBias` nodes that have no CPU kernel (rows marked `no CPU load`, tagged
anyway) and turns the merged decoder into a graph without nodes; `quantize_dynamic` and
`quantize_static` leave the merged decoder's `If` branches as they are. `matmul_nbits`
(onnxruntime's `MatMulNBitsQuantizer`, 4 bits, blocks of 16, symmetric) turns every MatMul on a
constant weight into a `MatMulNBits` named `…_Q4` on a packed copy `…_Q4` and keeps no node
metadata, so a dynamo export's products lose what named them; `float16` is
`onnxruntime.transformers.float16.convert_float_to_float16` with float32 inputs and outputs kept
(it adds the `Cast` nodes around them).
"""


if __name__ == "__main__":
    fire.Fire(run)
