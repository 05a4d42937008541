"""Producer matrix: the files people ship for deployment, and whether every command works on them.

Rows (`bench.producer_builds`): onnxruntime-genai model builder outputs (LLaMA, Qwen2, Phi-3; fp32
and int4; q/k/v fused and unfused), fp16 files from onnxconverter-common (with and without
`keep_io_types`) and from onnxruntime's transformer optimizer `--float16`, an Olive workflow (dynamo
`OnnxConversion`, then `OrtTransformersOptimization`, then `OnnxFloatToFloat16`), dynamic-shape
dynamo and TorchScript exports of the `bench.families` models, and optimum's outputs (Swin
included). Producers that pin their own versions run in their own environment (`$OPTIMUM_PYTHON`,
`$OLIVE_PYTHON`, `$GENAI_PYTHON`); a missing one makes its rows say so instead of failing the run.

Per row: whether onnxruntime loads the file (a default CPU session), the tag metrics of
`bench.metrics` against the truth (`bench.graph_truth`: dynamo metadata or TorchScript / optimum
scoped names of the file the producer started from, carried by node name or output; for the genai
builder its node names through `bench.genai.truth`) without evidence and with `--weights`,
`--reference` and `--modules` where they apply, and the exit code of `tagger retag`, `report`,
`extract --all --depth 2 --verify`, `profile` and `audit` with default inputs, run as a user runs
them (`python -m tagger`, this tree's code).

    python -m bench.producers [--producers genai,fp16] [--no_commands] [--publish_docs False]

Writes docs/producers.md (full runs only).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import fire
import onnx

from bench import genai, metrics
from bench.docs import ROOT, publish
from bench.graph_truth import NodeKey, carry, tags_of, truth_of
from bench.pipelines import command_results
from bench.producer_builds import PRODUCERS, Produced, Skipped, produce
from tagger.api import tag_proto

COMMANDS: dict[str, tuple[str, ...]] = {
    "retag": ("retag", "{model}", "--output", "{tmp}/tagged.onnx"),
    "report": ("report", "{model}", "--json"),
    "extract": ("extract", "{model}", "--all", "--depth", "2", "--out_dir", "{tmp}/modules", "--verify"),
    "profile": ("profile", "{model}", "--runs", "2"),
    "audit": ("audit", "{model}"),
}
"""What a user runs with default inputs (issue 23: every one exits 0 on a file onnxruntime runs)."""

RUNTIME_COMMANDS = ("extract", "profile")
"""The commands that run the model in onnxruntime: on a file it refuses, bad input (exit 2). The
others read the structure only and tag any file."""

EVIDENCE = ("weights", "reference", "modules")


@dataclass
class Row:
    producer: str
    family: str
    variant: str
    reason: str = ""
    nodes: int = 0
    loads: str = ""
    """`yes`, or onnxruntime's first line refusing the file."""
    scores: metrics.Metrics = metrics.EMPTY
    invented: int = 0
    evidence: dict[str, str] = field(default_factory=dict)
    commands: dict[str, tuple[int, str]] = field(default_factory=dict)

    def expected(self, command: str) -> int:
        return 2 if self.loads != "yes" and command in RUNTIME_COMMANDS else 0

    @property
    def unexpected(self) -> list[str]:
        return [name for name, (code, _) in self.commands.items() if code != self.expected(name)]


def _loads(path: Path) -> str:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
        from tagger.inputs.feeds import onnxruntime_message

        return "no: " + onnxruntime_message(exc)[:160]
    return "yes"


def _truth(produced: Produced, model: onnx.ModelProto) -> dict[NodeKey, str]:
    if produced.kind == "genai":
        layers = int(produced.extra["layers"])
        truth = {((), i): genai.truth(node.name, produced.family, layers) for i, node in enumerate(model.graph.node)}
        return {key: module for key, module in truth.items() if module in produced.modules}
    assert produced.truth_from is not None
    source = onnx.load(produced.truth_from, load_external_data=False)
    truth = truth_of(source, produced.modules, produced.kind)
    return truth if produced.truth_from == produced.path else carry(source, truth, model)


def _tagged(produced: Produced, **evidence: object) -> dict[NodeKey, str | None]:
    model = onnx.load(produced.path, load_external_data=False)
    tag_proto(model, str(produced.path), **evidence)
    return tags_of(model)


def _invented(tags: dict[NodeKey, str | None], modules: frozenset[str]) -> int:
    return sum(tag is not None and tag not in modules for tag in tags.values())


def measure(produced: Produced, run_commands: bool) -> Row:
    row = Row(produced.producer, produced.family, produced.variant)
    model = onnx.load(produced.path, load_external_data=False)
    truth = _truth(produced, model)
    try:
        tags = _tagged(produced)
    except Exception as exc:  # a crash is a finding for the table
        row.reason = f"tagger: {type(exc).__name__}: {str(exc)[:100]}"
        return row
    row.nodes = len(tags)
    row.scores = metrics.measure(tags, truth, metrics.evidenced_modules(model, produced.modules))
    row.invented = _invented(tags, produced.modules)
    for keyword in EVIDENCE:
        value = getattr(produced, f"{keyword}_file" if keyword == "modules" else keyword)
        if value is None:
            row.evidence[keyword] = "–"
            continue
        try:
            with_evidence = _tagged(produced, **{keyword: str(value)})
        except Exception as exc:  # noqa: BLE001
            row.evidence[keyword] = f"error: {type(exc).__name__}"
            continue
        m = metrics.measure(with_evidence, truth, set())
        invented = _invented(with_evidence, produced.modules)
        text = f"{_pct(m.exact, m.graded)} / {_pct(m.wrong, m.graded)}"
        row.evidence[keyword] = text + (f" ({invented} inv.)" if invented else "")
    row.loads = _loads(produced.path)
    if run_commands:
        row.commands = command_results(produced.path, COMMANDS, timeout=600)
    return row


# --------------------------------------------------------------------------------------------
# table


def _pct(value: float, graded: int | bool) -> str:
    return f"{100 * value:.1f}%" if graded else "n/a"


HEADER = (
    "| producer | family | variant | nodes | onnxruntime loads | exact | wrong | best | invented "
    "| --weights exact / wrong | --reference exact / wrong | --modules exact / wrong | " + " | ".join(COMMANDS) + " |"
)
RULE = "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(COMMANDS)


def format_row(row: Row) -> str:
    lead = f"| {row.producer} | {row.family} | {row.variant} "
    if row.reason:
        return lead + f"| {row.reason.replace('|', '/')} |" + " |" * (8 + len(COMMANDS))
    s, graded = row.scores, row.scores.graded
    wrong = _pct(s.wrong, graded)
    if graded and s.wrong > 0.01:
        wrong = f"**{wrong}**"
    codes = []
    for name in COMMANDS:
        if name not in row.commands:
            codes.append("·")
            continue
        code = row.commands[name][0]
        codes.append(f"**{code}**" if code != row.expected(name) else str(code))
    loads = "yes" if row.loads == "yes" else "**no**"
    cells = [
        str(row.nodes), loads, _pct(s.exact, graded), wrong, _pct(s.best, graded),
        f"**{row.invented}**" if row.invented else "0", *(row.evidence[k] for k in EVIDENCE), *codes,
    ]  # fmt: skip
    return lead + "| " + " | ".join(cells) + " |"


def _document(rows: list[Row], table: list[str], elapsed: float, skipped: list[str]) -> str:
    runs = [(r, name, code, message) for r in rows for name, (code, message) in r.commands.items()]
    unexpected = [(r, name, code, message) for r, name, code, message in runs if code != r.expected(name)]
    refused = [r for r in rows if r.loads and r.loads != "yes"]
    wrong = [r for r in rows if not r.reason and r.scores.graded and r.scores.wrong > 0.01]
    lines = [
        f"Command: `python -m bench.producers` ({elapsed:.0f} s on this machine, producers' outputs cached in bench/.cache "
        "and /work/genai-cache).",
        "",
        f"{len(runs) - len(unexpected)} of {len(runs)} command runs exit as they should (0; 2 for `extract --verify` and "
        "`profile` on a file onnxruntime refuses to load).",
        "",
        *(f"- `tagger {name}` on {r.producer} {r.family} {r.variant}: exit {code}: {msg}" for r, name, code, msg in unexpected),
        *(["- none other"] if not unexpected else []),
        "",
        "Files onnxruntime refuses to load (bad input: `extract --verify` and `profile` exit 2 with its first line; "
        "`retag`, `report` and `audit` read the structure only and tag them):",
        "",
        *(f"- {r.producer} {r.family} {r.variant}: {r.loads[4:]}" for r in refused),
        *(["- none"] if not refused else []),
        "",
        "Rows with more than 1% wrong without evidence:",
        "",
        *(f"- {r.producer} {r.family} {r.variant}: {_pct(r.scores.wrong, 1)} wrong" for r in wrong),
        *(["- none"] if not wrong else []),
        "",
        "Producers skipped (their environment is missing, or they failed):",
        "",
        *(f"- {reason}" for reason in skipped),
        *(["- none"] if not skipped else []),
        "",
        "Every row (bold: more than 1% wrong, an invented module, a file onnxruntime refuses, an exit code other than "
        "the expected one):",
        "",
        *table,
    ]
    return "\n".join(lines) + "\n"


def run(producers: str | None = None, work: str = "bench/.cache", no_commands: bool = False, publish_docs: bool = True) -> None:
    """Build (cached), tag, score and run the commands on every selected producer's files."""
    chosen = tuple(producers.split(",")) if isinstance(producers, str) else tuple(producers or PRODUCERS)
    unknown = [p for p in chosen if p not in PRODUCERS]
    if unknown:
        raise SystemExit(f"unknown producer {', '.join(unknown)}; expected some of {', '.join(PRODUCERS)}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.perf_counter()
    rows: list[Row] = []
    skipped: list[str] = []
    table = [HEADER, RULE]
    print(HEADER, flush=True)
    for producer in chosen:
        for item in produce(producer, ROOT / work):
            if isinstance(item, Skipped):
                skipped.append(str(item))
                print(f"skipped: {item}", flush=True)
                continue
            rows.append(measure(item, not no_commands))
            table.append(format_row(rows[-1]))
            print(table[-1], flush=True)
    text = _document(rows, table, time.perf_counter() - started, skipped)
    print("\n" + text)
    if publish_docs and chosen == PRODUCERS and not no_commands:
        publish("producers", text, ("docs/producers.md",))


if __name__ == "__main__":
    fire.Fire(run)
