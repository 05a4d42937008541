"""Benchmark of tag transfer: plain dynamo exports after real tools, tagged without and with
`--reference` (the export the tool started from) and `--weights` (the `save_pretrained` checkpoint).

Families and tools: `bench.transfer_cases`. A node is exact when its `hierarchy.module` equals
the module torch recorded for it (carried from the export by node or output name). The
"parametrised" column counts only the nodes whose true module owns a parameter in the
checkpoint: the nodes `--weights` can name.

    python -m bench.transfer [--families bert,llama] [--work_dir DIR]

Writes its table into docs/transfer.md between the transfer markers (a bare page if it is missing).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import fire
import onnx

from bench import transfer_cases as tc
from bench.docs import ROOT, publish
from tagger import tag_proto
from tagger.model.keys import MODULE_KEY
from tagger.model.modelio import load_model

MODES = ("none", "reference", "weights")


@dataclass
class Row:
    family: str
    tool: str
    nodes: int
    truth: int
    parametrised: int
    exact: dict[str, float]
    exact_parametrised: dict[str, float]


def tag_case(case: tc.Case, mode: str) -> onnx.ModelProto:
    """The case's model tagged in memory with `mode`'s evidence."""
    model = load_model(case.path)
    options = {"reference": case.family.export} if mode == "reference" else {}
    if mode == "weights":
        options = {"weights": case.family.checkpoint}
    tag_proto(model, str(case.path), **options)
    return model


def exact(model: onnx.ModelProto, truth: dict[int, str], only: set[str] | None = None) -> tuple[int, int]:
    """(correct, counted) over the main-graph nodes with truth (whose true module is in `only`)."""
    correct = counted = 0
    for i, node in enumerate(model.graph.node):
        if i not in truth or (only is not None and truth[i] not in only):
            continue
        counted += 1
        module = next((p.value for p in node.metadata_props if p.key == MODULE_KEY), None)
        correct += module == truth[i]
    return correct, counted


def measure(family: tc.Family, tool: str) -> Row:
    case = tc.make_case(family, tool)
    owners = family.parametrised
    row = Row(family.name, tool, 0, len(case.truth), 0, {}, {})
    for mode in MODES:
        model = tag_case(case, mode)
        row.nodes = len(model.graph.node)
        correct, counted = exact(model, case.truth)
        row.exact[mode] = correct / counted if counted else 0.0
        correct, row.parametrised = exact(model, case.truth, owners)
        row.exact_parametrised[mode] = correct / row.parametrised if row.parametrised else 0.0
    return row


def table(rows: list[Row]) -> str:
    lines = [
        "| family | tool | nodes | with truth | exact | exact `--reference` | exact `--weights` "
        "| parametrised nodes | `--weights` on them |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.family} | {r.tool} | {r.nodes} | {r.truth} | {r.exact['none']:.1%} | {r.exact['reference']:.1%} | "
            f"{r.exact['weights']:.1%} | {r.parametrised} | {r.exact_parametrised['weights']:.1%} |"
        )
    return "\n".join(lines)


def main(families: str | tuple = tc.FAMILIES, work_dir: str | None = None, publish_docs: bool = True) -> None:
    names = families.split(",") if isinstance(families, str) else list(families)
    directory = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="transfer-"))
    rows = []
    for name in names:
        family = tc.export_family(name, directory)
        for tool in tc.TOOLS:
            rows.append(measure(family, tool))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = table(rows)
    print(text)
    if publish_docs:
        doc = ROOT / "docs" / "transfer.md"
        if not doc.exists():
            doc.parent.mkdir(exist_ok=True)
            doc.write_text(_DOC, encoding="utf-8")
        publish("transfer", text, ("docs/transfer.md",))


_DOC = """# Tag transfer: `--reference` and `--weights`

Plain dynamo exports (`torch.onnx.export(..., dynamo=True)`, defaults) of tiny random-weight
models after each tool; exact = `hierarchy.module` equals the module torch recorded for the node
(carried to the tool's output by node or output name). `python -m bench.transfer`:

<!-- transfer:start -->
<!-- transfer:end -->

Cost (`python -m bench.transfer_scale`; the target is the reference without node metadata and
node names, its big weight renamed):

<!-- transfer-scale:start -->
<!-- transfer-scale:end -->
"""


if __name__ == "__main__":
    fire.Fire(main)
