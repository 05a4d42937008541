"""Extraction benchmark: every module at every depth of tiny real exports, cut out and proven.

For each architecture x exporter x degradation (default: none, onnxslim, onnxruntime's
transformer optimizer) the model is tagged once, then every module at every depth (0 = the whole
model) is extracted with `tagger.extract` and counted: passes `onnx.checker.check_model(full_check
=True)`, loads in onnxruntime, reproduces the full model's tensors (`tagger.commands.extract.verify`: bit-exact, or
within 1e-6). In the same run `onnx.utils.extract_model` gets the same boundary tensor names: how
often it produces a model at all, how many of its models pass the full checker and verify, and
the time both take (each includes its own load, save and check). A synthetic model of many layers
(`bench.synthetic`) compares the two on size.

    python -m bench.extract [--archs bert,gpt2] [--degradations none,onnxslim] [--scale_layers 1000] [--external_mb 200]

Writes the tables to docs/extract.md and into docs/extracting.md between the extract markers.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import fire
import onnx
import onnxruntime as ort

from bench import cases, synthetic
from bench.docs import ROOT, publish
from tagger import extract, extract_all, retag
from tagger.commands.extract import ExtractReport, modules_at_depth
from tagger.commands.extract.verify import compare_outputs, full_model_values
from tagger.errors import TaggerError
from tagger.inputs.feeds import make_feeds

ARCHS = ("bert", "vit", "gpt2", "resnet", "albert")
DEGRADATIONS = ("none", "onnxslim", "ort_optimizer")


@dataclass
class Tally:
    """Counts and times of one case (or of all cases added up)."""

    tried: int = 0
    checker: int = 0
    loads: int = 0
    verified: int = 0
    exact: int = 0
    seconds: float = 0.0
    all_seconds: float = 0.0
    theirs_made: int = 0
    theirs_checker: int = 0
    theirs_verified: int = 0
    theirs_seconds: float = 0.0
    both_seconds: float = 0.0
    """tagger's time on the modules extract_model also made a model of (the time ratio's base)."""
    theirs_seconds_made: float = 0.0
    theirs_errors: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, count in other.theirs_errors.items():
            self.theirs_errors[reason] = self.theirs_errors.get(reason, 0) + count
        self.failures.extend(other.failures)

    def row(self, label: str) -> str:
        ratio = f"{self.theirs_seconds_made / self.both_seconds:.2f}×" if self.both_seconds else "–"
        return (
            f"| {label} | {self.tried} | {self.checker} | {self.loads} | **{self.verified}** | {self.exact} "
            f"| {self.seconds:.2f} s | {self.all_seconds:.2f} s | {self.theirs_made} | {self.theirs_checker} "
            f"| {self.theirs_verified} "
            f"| {self.theirs_seconds:.2f} s | {ratio} |"
        )


_COUNTS = (
    "tried",
    "checker",
    "loads",
    "verified",
    "exact",
    "seconds",
    "all_seconds",
    "theirs_made",
    "theirs_checker",
    "theirs_verified",
    "theirs_seconds",
    "both_seconds",
    "theirs_seconds_made",
)

HEADER = (
    "| case | modules | checker (full) | ORT loads | **verified** | bit-exact | tagger extract time "
    "| tagger extract_all time | extract_model made | its checker (full) | its verified | extract_model time | time ratio |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]


def _loads(path: Path) -> bool:
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - any load failure counts as "does not load"
        return False
    return True


def _checks(path: Path) -> bool:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError):
        return False
    return True


def _extract_model(source: Path, output: Path, report: ExtractReport) -> str | None:
    """`onnx.utils.extract_model` on the same boundary; None on success, else why it failed."""
    inputs = [spec.name for spec in report.inputs]
    outputs = [spec.name for spec in report.outputs]
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            onnx.utils.extract_model(str(source), str(output), inputs, outputs)
    except Exception as exc:  # noqa: BLE001 - counted, with the reason
        reason = _first_line(exc)
        if "not found in value_infos" in reason:  # group them: the tensor names differ
            reason = "boundary tensors not found in value_infos (shape inference gave them no type)"
        return f"{type(exc).__name__}: {reason}"
    return None


def _verify(path: Path, report: ExtractReport, values: dict) -> tuple[bool, bool]:
    """(verified, bit-exact) of the model at `path` against the full model's values."""
    try:
        result = compare_outputs(path, [s.name for s in report.inputs], [s.name for s in report.outputs], values)
    except TaggerError:
        return False, False
    return result.passed, result.exact == result.compared


def _case(source: Path, work: Path) -> Tally:
    """Every module at every depth of the tagged model `source`: ours, then extract_model."""
    tally = Tally()
    ours_dir, theirs_dir = work / "ours", work / "theirs"
    ours_dir.mkdir()
    theirs_dir.mkdir()
    done: list[tuple[ExtractReport, Path | None]] = []
    depth = 0
    while modules := modules_at_depth(source, depth):
        for module in modules:
            name = f"d{depth}-{module or 'root'}.onnx"
            tally.tried += 1
            started = time.perf_counter()
            try:
                report = extract(source, module=module, output=ours_dir / name)
            except TaggerError as exc:
                tally.failures.append(f"{module or '(root)'}: {_first_line(exc)}")
                continue
            ours = time.perf_counter() - started
            tally.seconds += ours
            tally.checker += _checks(ours_dir / name)
            tally.loads += _loads(ours_dir / name)
            started = time.perf_counter()
            error = _extract_model(source, theirs_dir / name, report)
            theirs = time.perf_counter() - started
            tally.theirs_seconds += theirs
            if error is not None:
                tally.theirs_errors[error] = tally.theirs_errors.get(error, 0) + 1
            else:
                tally.theirs_made += 1
                tally.both_seconds += ours
                tally.theirs_seconds_made += theirs
                tally.theirs_checker += _checks(theirs_dir / name)
            done.append((report, None if error else theirs_dir / name))
        started = time.perf_counter()
        extract_all(source, depth, work / f"all-{depth}")
        tally.all_seconds += time.perf_counter() - started
        depth += 1
    values = _full_values(source, [report for report, _ in done])
    for report, theirs in done:
        verified, exact = _verify(Path(report.output), report, values)
        tally.verified += verified
        tally.exact += exact
        if not verified:
            tally.failures.append(f"{report.module or '(root)'}: verification failed")
        if theirs is not None:
            tally.theirs_verified += _verify(theirs, report, values)[0]
    return tally


def _full_values(source: Path, reports: list[ExtractReport]) -> dict:
    """One onnxruntime run of the full model exposing every boundary tensor of every module."""
    model = onnx.load(source, load_external_data=False)
    types = {v.name: v.type for r in reports if r.model is not None for v in (*r.model.graph.input, *r.model.graph.output)}
    return full_model_values(model, source.parent.resolve(), list(types), types, make_feeds(model))


def _tagged_copy(path: Path, work: Path) -> Path:
    """Tag once (not timed): both tools then read the same tagged file."""
    target = work / "tagged"
    target.mkdir()
    output = target / path.name
    retag(path, output)
    return output


def _scale_rows(layers: int, external_mb: int, work: Path) -> list[str]:
    """The first, middle and last layer of synthetic models of `layers` layers, without and with
    `external_mb` MB of external weights (a projection head no layer reads)."""
    rows = [_scale_row(layers, 0, work)]
    if external_mb:
        rows.append(_scale_row(layers, external_mb, work))
    return rows


def _scale_row(layers: int, external_mb: int, work: Path) -> str:
    directory = work / f"synthetic-{layers}-{external_mb}"
    directory.mkdir()
    path = directory / "model.onnx"
    model = synthetic.build(layers, big_weights=external_mb * 250_000)
    onnx.save(model, path, save_as_external_data=True, location="model.onnx.data", size_threshold=1 << 20)
    tagged = _tagged_copy(path, directory)
    nodes = len(onnx.load(tagged, load_external_data=False).graph.node)
    modules = [f"encoder.layer.{i}" for i in sorted({0, layers // 2, layers - 1})]
    ours = theirs = 0.0
    for module in modules:
        started = time.perf_counter()
        report = extract(tagged, module=module, output=directory / f"{module}.onnx")
        ours += time.perf_counter() - started
        started = time.perf_counter()
        error = _extract_model(tagged, directory / f"{module}.theirs.onnx", report)
        theirs += time.perf_counter() - started
        if error:
            return f"| {nodes:,} | {external_mb} MB | {len(modules)} | {ours:.2f} s | failed: {error} | |"
    shutil.rmtree(directory)
    return f"| {nodes:,} | {external_mb} MB | {len(modules)} | {ours:.2f} s | {theirs:.2f} s | {theirs / ours:.1f}× |"


def run(
    archs: str | None = None,
    degradations: str | None = None,
    scale_layers: int = 1000,
    external_mb: int = 200,
    work: str | None = None,
    publish_docs: bool = True,
) -> str:
    """Extract every module of every case, print the tables and publish them."""
    selected = tuple(archs.split(",")) if isinstance(archs, str) else tuple(archs or ARCHS)
    chosen = tuple(degradations.split(",")) if isinstance(degradations, str) else tuple(degradations or DEGRADATIONS)
    cache = ROOT / (work or "bench/.cache")
    cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows, total, errors = [HEADER], Tally(), []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in selected:
            for exporter in cases.EXPORTERS:
                for degradation in chosen:
                    if not cases.supported(arch, exporter, degradation):
                        continue
                    case = cases.make_case(arch, exporter, degradation, cache)
                    scratch = Path(tmp) / f"{arch}-{exporter}-{degradation}"
                    scratch.mkdir()
                    tally = _case(_tagged_copy(case.path, scratch), scratch)
                    shutil.rmtree(scratch)
                    total.add(tally)
                    rows.append(tally.row(f"{arch} / {exporter} / {degradation}"))
                    errors += [f"{arch}/{exporter}/{degradation} {failure}" for failure in tally.failures]
                    print(rows[-1], flush=True)
        rows.append(total.row("**all**"))
        scale = _scale_rows(scale_layers, external_mb, Path(tmp)) if scale_layers else []
    text = _document(rows, total, errors, scale, time.perf_counter() - started)
    print("\n" + text)
    if publish_docs and set(selected) == set(ARCHS) and set(chosen) == set(DEGRADATIONS):
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "extract.md").write_text("# Extraction benchmark\n\n" + _LEGEND + "\n" + text, encoding="utf-8")
        publish("extract", text, ("docs/extracting.md",))
    return ""


def _document(rows: list[str], total: Tally, errors: list[str], scale: list[str], seconds: float) -> str:
    lines = [f"Command: `python -m bench.extract` ({seconds:.0f} s on this machine).", "", *rows, ""]
    lines.append(f"tagger failures: {len(errors)}" + "".join(f"\n- {e}" for e in errors[:20]))
    if total.theirs_errors:
        lines += ["", "`onnx.utils.extract_model` errors on the same boundaries:"]
        lines += [f"- {count}× {reason}" for reason, count in sorted(total.theirs_errors.items(), key=lambda kv: -kv[1])]
    if scale:
        lines += [
            "",
            "Size (synthetic BERT-like layers, `bench.synthetic`: the first, middle and last layer; external weights"
            " in a head no layer reads):",
            "",
            "| nodes | external weights | layers extracted | tagger extract | onnx.utils.extract_model | time ratio |",
            "|---:|---:|---:|---:|---:|---:|",
            *scale,
        ]
    return "\n".join(lines) + "\n"


_LEGEND = """Every module at every depth (module path depth = number of dotted components; depth 0 is
the whole model) of each tiny export is extracted with `tagger.extract` from a tagged copy of the
model. *checker (full)*: `onnx.checker.check_model(path, full_check=True)` on the written file;
*ORT loads*: an onnxruntime session opens it; *verified*: fed the full model's values of its
input tensors, it reproduces the full model's values of its output tensors (bit-exact, or within
1e-6; both models run with onnxruntime's graph optimizations off so neither fuses differently).
`onnx.utils.extract_model` gets the same input and output tensor names in the same run; *made*
counts the calls that returned a model. Times include each tool's own loading, saving and
checking (ours: the full checker; extract_model: its default checker); *time ratio* is
extract_model time / `tagger extract` time over the modules both made a model of (above 1:
tagger is faster). `extract_all` extracts every module of one depth in one call.
"""


if __name__ == "__main__":
    fire.Fire(run)
