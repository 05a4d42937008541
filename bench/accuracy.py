"""Accuracy benchmark: coverage and accuracy of `tagger` against the exporter's own scopes.

For every architecture x exporter x degradation it tags the degraded model three ways in the
same run — the tagger, and two baselines (everything without evidence -> root; one-directional
producer inheritance) — and scores each against the truth of the undegraded export.

    python -m bench.accuracy [--archs bert,vit] [--work bench/.cache]

Writes the table to docs/accuracy.md and into README.md between the accuracy markers.
"""

from __future__ import annotations

import time

import fire
import onnx

from bench import cases
from bench.docs import ROOT, publish
from tagger.api import tag_proto

STRATEGIES = {"tagger": "context", "root baseline": "root", "producer baseline": "producer", "two-sided LCA": "lca"}


def _score(case: cases.Case, strategy: str) -> cases.Score:
    model = onnx.load(case.path, load_external_data=False)
    tag_proto(model, case.path.name, strategy)
    return cases.score(model, case)


def _pct(score: cases.Score) -> str:
    return f"{100.0 * score.accuracy:.1f}%" if score.with_truth else "n/a"


def _summary(results: dict[tuple[str, str], list[tuple[str, cases.Score]]]) -> str:
    """Per exporter x degradation: mean and worst accuracy, and accuracy on reachable modules."""
    lines = [
        "| exporter | degradation | mean accuracy | worst (arch) | on reachable modules (pooled) |",
        "|---|---|---:|---:|---:|",
    ]
    for (exporter, degradation), scored in results.items():
        graded = [(arch, s) for arch, s in scored if s.with_truth]
        mean = sum(s.accuracy for _, s in graded) / len(graded)
        arch, worst = min(graded, key=lambda item: item[1].accuracy)
        reach = sum(s.reachable for _, s in graded)
        hit = sum(s.reachable_correct for _, s in graded)
        lines.append(
            f"| {exporter} | {degradation} | {100 * mean:.1f}% | {100 * worst.accuracy:.1f}% ({arch}) "
            f"| {100 * hit / reach:.1f}% of {reach} |"
        )
    return "\n".join(lines)


def _reachable(score: cases.Score) -> str:
    if not score.reachable:
        return "n/a"
    return f"{100.0 * score.reachable_correct / score.reachable:.1f}% of {score.reachable}"


def run(archs: str | None = None, work: str = "bench/.cache", publish_docs: bool = True) -> None:
    """Build every case, score every strategy, print and publish the table."""
    selected = tuple(archs.split(",")) if isinstance(archs, str) else tuple(archs or cases.ARCHS)
    work_dir = ROOT / work
    work_dir.mkdir(parents=True, exist_ok=True)
    header = (
        "| arch | exporter | degradation | nodes | with truth | coverage | direct | inherited | fallback "
        "| **tagger accuracy** | on reachable modules | root baseline | producer baseline | two-sided LCA |"
    )
    rows = [header, "|" + "---|" * 3 + "---:|" * 11]
    started = time.perf_counter()
    results: dict[tuple[str, str], list[tuple[str, cases.Score]]] = {}
    for arch in selected:
        for exporter in cases.EXPORTERS:
            for degradation in cases.DEGRADATIONS:
                if not cases.supported(arch, exporter, degradation):
                    continue
                case = cases.make_case(arch, exporter, degradation, work_dir)
                scores = {label: _score(case, strategy) for label, strategy in STRATEGIES.items()}
                ours = scores["tagger"]
                src = ours.by_source
                inherited = src.get("inherited", 0)
                fallback = src.get("fallback", 0)
                direct = ours.tagged - inherited - fallback
                rows.append(
                    f"| {arch} | {exporter} | {degradation} | {ours.nodes} | {ours.with_truth} "
                    f"| {100.0 * ours.tagged / ours.nodes:.0f}% | {direct} | {inherited} | {fallback} "
                    f"| **{_pct(ours)}** | {_reachable(ours)} | {_pct(scores['root baseline'])} "
                    f"| {_pct(scores['producer baseline'])} "
                    f"| {_pct(scores['two-sided LCA'])} |"
                )
                results.setdefault((exporter, degradation), []).append((arch, ours))
                print(rows[-1], flush=True)
    table = "\n".join(rows)
    minima = _summary(results)
    text = (
        f"Command: `python -m bench.accuracy` ({time.perf_counter() - started:.0f} s on this machine).\n\n"
        f"Summary over architectures (every node is tagged in every case: coverage 100%):\n\n{minima}\n\n"
        f"Every case:\n\n{table}\n"
    )
    if publish_docs and set(selected) == set(cases.ARCHS):
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "accuracy.md").write_text("# Accuracy benchmark\n\n" + _LEGEND + "\n" + text, encoding="utf-8")
        summary_only = text.split("Every case:")[0] + "Every case, with both baselines: [docs/accuracy.md](docs/accuracy.md).\n"
        publish("accuracy", summary_only)
    print("\n" + minima)


_LEGEND = """Accuracy = nodes whose `hierarchy.module` equals the truth / nodes with a truth. The truth is
the undegraded export's own scope of the same node (dynamo `name_scopes` metadata; TorchScript
scoped node names resolved against the model's real `named_modules()`), matched by position for
the strip cases and by node name or output tensor name after real tools; nodes a tool created
(fused or quantization nodes) have no truth and are left out of accuracy but counted in coverage.
`direct`/`inherited`/`fallback` are the tagger's own counts; coverage counts any of the three
(fallbacks are listed apart because they are guesses). Baselines run on the same files in the
same run: *root* = no inference, every node without evidence gets the root module; *producer* =
one-directional inheritance from the nearest tagged producers; *two-sided LCA* = lowest common
ancestor of the nearest tagged producers and consumers. *On reachable modules*: accuracy over
the nodes whose true module carries direct evidence somewhere in the model (it or a descendant);
the rest belong to modules nothing in the file names — typically parameter-free activations
(`GELUActivation`, `NewGELUActivation`, ReLU modules) once names and metadata are gone — and no
inference from topology can name them.
"""


if __name__ == "__main__":
    fire.Fire(run)
