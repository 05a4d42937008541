"""Accuracy benchmark: coverage and accuracy of `tagger` against the exporter's own scopes.

For every architecture x exporter x degradation it tags the degraded model three ways in the
same run — the tagger, and two baselines (everything without evidence -> root; one-directional
producer inheritance) — and scores each against the truth of the undegraded export.

    python -m bench.accuracy [--archs bert,vit] [--work bench/.cache] [--init fresh]

Writes the table to docs/accuracy.md and its summary into docs/accuracy-summary.md between the
accuracy markers; with
`--init fresh` (models exported with transformers' init untouched, see `bench.cases.INITS`) to
docs/accuracy-fresh.md and docs/accuracy-summary.md's accuracy-fresh markers.
"""

from __future__ import annotations

import time

import fire
import onnx

from bench import cases, metrics
from bench.baselines import BASELINES, tag_with
from bench.docs import ROOT, publish
from tagger.pipeline.tagging import Infer


def _evidenced(case: cases.Case) -> set[str]:
    """Modules the case's file names, read before any tagging adds its own metadata."""
    return metrics.evidenced_modules(onnx.load(case.path, load_external_data=False), cases.module_paths(case.arch))


def _score(case: cases.Case, infer: Infer, evidenced: set[str]) -> tuple[cases.Score, metrics.Metrics]:
    model = onnx.load(case.path, load_external_data=False)
    tag_with(model, infer, case.path.parent)
    apart = cases.shown_apart(case.path)
    measured = metrics.measure(metrics.node_modules(model), case.truth, evidenced, *apart)
    return cases.score(model, case), measured


def _share(value: float, graded: int) -> str:
    return f"{100.0 * value:.1f}%" if graded else "n/a"


def _metric_cells(m: metrics.Metrics) -> str:
    """sound / wrong / best / reachable cells of one row (exact is the accuracy column)."""
    return " | ".join((_share(m.sound, m.graded), metrics.wrong_cell(m), _share(m.best, m.graded), _share(m.reachable, m.graded)))


def _pct(score: cases.Score) -> str:
    return f"{100.0 * score.accuracy:.1f}%" if score.with_truth else "n/a"


def _summary(results: dict[tuple[str, str], list[tuple[str, cases.Score, metrics.Metrics]]]) -> str:
    """Per exporter x degradation: mean and worst accuracy, accuracy on reachable modules, and the
    mean sound / best / reachable shares with the worst wrong and best rows."""
    lines = [
        "| exporter | degradation | mean accuracy | worst (arch) | on reachable modules (pooled) "
        "| mean sound | worst wrong (arch) | mean best | worst best (arch) | mean reachable |",
        "|---|---|" + "---:|" * 8,
    ]
    for (exporter, degradation), scored in results.items():
        graded = [(arch, s, m) for arch, s, m in scored if s.with_truth]
        mean = sum(s.accuracy for _, s, _ in graded) / len(graded)
        arch, worst, _ = min(graded, key=lambda item: item[1].accuracy)
        reach = sum(s.reachable for _, s, _ in graded)
        hit = sum(s.reachable_correct for _, s, _ in graded)
        wrong_arch, _, most_wrong = max(graded, key=lambda item: (item[2].unexplained, item[2].wrong))
        best_arch, _, least_best = min(graded, key=lambda item: item[2].best)
        sound, best, reachable = (
            sum(getattr(m, key) for _, _, m in graded) / len(graded) for key in ("sound", "best", "reachable")
        )
        lines.append(
            f"| {exporter} | {degradation} | {100 * mean:.1f}% | {100 * worst.accuracy:.1f}% ({arch}) "
            f"| {100 * hit / reach:.1f}% of {reach} | {100 * sound:.1f}% | {metrics.wrong_cell(most_wrong)} ({wrong_arch}) "
            f"| {100 * best:.1f}% | {100 * least_best.best:.1f}% ({best_arch}) | {100 * reachable:.1f}% |"
        )
    return "\n".join(lines)


def _reachable(score: cases.Score) -> str:
    if not score.reachable:
        return "n/a"
    return f"{100.0 * score.reachable_correct / score.reachable:.1f}% of {score.reachable}"


def run(
    archs: str | None = None, work: str = "bench/.cache", publish_docs: bool = True, init: str = "noisy", shapes: str = "static"
) -> None:
    """Build every case, score the tagger and every baseline, print and publish the table."""
    if init not in cases.INITS:
        raise SystemExit(f"error: --init must be one of {', '.join(cases.INITS)}")
    if shapes not in cases.SHAPES:
        raise SystemExit(f"error: --shapes must be one of {', '.join(cases.SHAPES)}")
    selected = tuple(archs.split(",")) if isinstance(archs, str) else tuple(archs or cases.ARCHS)
    work_dir = ROOT / work
    work_dir.mkdir(parents=True, exist_ok=True)
    header = (
        "| arch | exporter | degradation | nodes | with truth | coverage | direct | inherited | fallback "
        "| **tagger exact** | sound | wrong | best | reachable | on reachable modules | root baseline "
        "| producer baseline | two-sided LCA |"
    )
    rows = [header, "|" + "---|" * 3 + "---:|" * 15]
    started = time.perf_counter()
    results: dict[tuple[str, str], list[tuple[str, cases.Score, metrics.Metrics]]] = {}
    for arch in selected:
        for exporter in cases.EXPORTERS:
            for degradation in cases.DEGRADATIONS:
                if not cases.supported(arch, exporter, degradation):
                    continue
                try:
                    case = cases.make_case(arch, exporter, degradation, work_dir, init, shapes)
                except cases.ToolFailed as failure:
                    rows.append(f"| {arch} | {exporter} | {degradation} | tool failed: {failure} |" + " |" * 14)
                    print(rows[-1], flush=True)
                    continue
                evidenced = _evidenced(case)
                measured = {label: _score(case, infer, evidenced) for label, infer in BASELINES.items()}
                scores = {label: score for label, (score, _) in measured.items()}
                ours, ours_metrics = measured["tagger"]
                src = ours.by_source
                inherited = src.get("inherited", 0)
                fallback = src.get("fallback", 0)
                direct = ours.tagged - inherited - fallback
                rows.append(
                    f"| {arch} | {exporter} | {degradation} | {ours.nodes} | {ours.with_truth} "
                    f"| {100.0 * ours.tagged / ours.nodes:.0f}% | {direct} | {inherited} | {fallback} "
                    f"| **{_pct(ours)}** | {_metric_cells(ours_metrics)} "
                    f"| {_reachable(ours)} | {_pct(scores['root baseline'])} "
                    f"| {_pct(scores['producer baseline'])} "
                    f"| {_pct(scores['two-sided LCA'])} |"
                )
                results.setdefault((exporter, degradation), []).append((arch, ours, ours_metrics))
                print(rows[-1], flush=True)
    table = "\n".join(rows)
    minima = _summary(results)
    variant = _variant(init, shapes)
    command = "python -m bench.accuracy" + ("" if init == "noisy" else f" --init {init}")
    command += "" if shapes == "static" else f" --shapes {shapes}"
    text = (
        f"Command: `{command}` ({time.perf_counter() - started:.0f} s on this machine).\n\n"
        f"Summary over architectures (every node is tagged in every case: coverage 100%):\n\n{minima}\n\n"
        f"Every case:\n\n{table}\n"
    )
    if publish_docs and set(selected) == set(cases.ARCHS):
        (ROOT / "docs").mkdir(exist_ok=True)
        name = "accuracy" + "".join(f"-{v}" for v in variant)
        title = "# Accuracy benchmark" + (f" ({', '.join(variant)})" if variant else "")
        note = _INIT_NOTE[init] + ("" if shapes == "static" else "\n\n" + _DYNAMIC_NOTE)
        (ROOT / "docs" / f"{name}.md").write_text(f"{title}\n\n{_LEGEND}\n{note}\n\n{text}", encoding="utf-8")
        summary_only = text.split("Every case:")[0] + f"Every case, with both baselines: [{name}.md]({name}.md).\n"
        publish(name, summary_only, ("docs/accuracy-summary.md",))
    print("\n" + minima)


def _variant(init: str, shapes: str) -> list[str]:
    """The parts of a run that differ from the default (noisy init, static shapes)."""
    return ([] if init == "noisy" else [init]) + ([] if shapes == "static" else [shapes])


_DYNAMIC_NOTE = (
    "Exports with dynamic batch and sequence sizes (`bench.cases.SHAPES`: dynamo `dynamic_shapes`, "
    "TorchScript `dynamic_axes`), as users export for variable inputs: the graph computes its shapes "
    "at run time, so it has many more shape and mask nodes (`Shape`, `Gather`, `Range`, `Where`) "
    "without evidence of their own than a static export, whose exporter folds them into constants."
)

_LEGEND = """Accuracy = nodes whose `hierarchy.module` equals the truth / nodes with a truth. The truth is
the undegraded export's own scope of the same node (dynamo `name_scopes` metadata; TorchScript
scoped node names resolved against the model's real `named_modules()`), matched by position for
the strip cases and by node name or output tensor name after real tools; nodes a tool created
(fused or quantization nodes) have no truth and are left out of accuracy but counted in coverage.
`direct`/`inherited`/`fallback` are the tagger's own counts; coverage counts any of the three
(fallbacks are listed apart because they are guesses). Baselines run on the same files in the
same run: *root* = no inference, every node without evidence gets the root module; *producer* =
one-directional inheritance from the nearest tagged producers; *two-sided LCA* = lowest common
ancestor of the nearest tagged producers and consumers. *sound*: the tag is the truth or one
of its ancestors (too shallow, but true); *wrong* = 100% − sound (the tag names another branch);
*best*: the tag is the deepest ancestor-or-self of the truth that the degraded file still
evidences — a module named by an initializer, node name, tensor name or metadata value of that
file (the model-level `hierarchy.modules` map included), computed by `bench/metrics.py` from the
file alone, independently of the tagger; 100% means the tagger said everything the file allows;
*reachable*: the truth itself is evidenced — the ceiling of exact for any tagger. A wrong share
followed by *(x% folded)*: of the wrong nodes, x% are a weighted op the exporter folded a
sibling module into (a BatchNorm into the Conv before it): the node computes both modules, it is
tagged with the one whose weight it reads and the exporter records the other, so its truth is
either (`bench/metrics.py`, `folded_modules`); *(x% tool-made)*: x% are a node a tool made anew
in place of several modules' ops (a name the export does not have), whose truth the benchmark
takes from the one output name it kept, so either module is its truth (`bench/cases.py`, `tool_made`).
*On reachable modules*: accuracy over
the nodes whose true module carries direct evidence somewhere in the model (it or a descendant);
the rest belong to modules nothing in the file names — typically parameter-free activations
(`GELUActivation`, `NewGELUActivation`, ReLU modules) once names and metadata are gone — and no
inference from topology can name them.
"""

_INIT_NOTE = {
    "noisy": "Models: transformers' init plus small noise on every parameter, as trained weights are "
    "(no two initializers equal). The same cases with the init untouched: [accuracy-fresh.md](accuracy-fresh.md).",
    "fresh": "Models: transformers' init untouched, as a freshly built model is exported. Every zero bias "
    "and all-ones norm weight is equal, and the dynamo exporter keeps one initializer for equal tensors, "
    "named after whichever parameter came first: one parameter name is read by modules it does not "
    "belong to (`tagger.evidence.merged_parameters`). ResNet's wrong share is the Conv with BatchNorm "
    "folded in (the *folded* part of the wrong cell): the folded bias is zero and the exporter leaves no "
    "trace of the fold, so the Conv is tagged with its convolution, whose weight it reads, while the "
    "exporter records the norm; the node computes both. The same cases with "
    "trained-like weights: [accuracy.md](accuracy.md).",
}


if __name__ == "__main__":
    fire.Fire(run)
