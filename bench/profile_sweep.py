"""`tagger profile` over every benchmark model and the pipelines' optimum, genai and fp16 files.

Issue 24's bar: at onnxruntime's default level (`ORT_ENABLE_ALL`, the graph a session runs), at
least 99% of the kernel time lands on modules, and every unmatched kernel is listed with its
reason. Each file is profiled through the API, `tagger.profile(model, runs=2, warmup=1)`, on the
inputs it generates (as a user's first run), and the row records:

- **on modules**: the kernel time counted for a module (the modules' own times, the root's
  included), as a share of the summed kernel time of the run; **on the root**: the part of it
  counted for the root module only (a tag that names no module below the model);
- **unmatched**: kernels that match no node of the graph that ran, and the reasons the report gives;
- **control flow**: the own time of If/Loop/Scan kernels (the body executor's work between body
  kernels), which the report shows apart and charges to no module (`tagger.commands.profiling`, point 5);
- the level that ran, the nodes of the graph onnxruntime executed and of the file, the seconds.

A file onnxruntime refuses (the report's `InputError`) is a row saying so, not a crash.

Files:
- every case of `bench.cases` (ARCHS x EXPORTERS x DEGRADATIONS, noisy init), with static and
  dynamic input sizes (`bench.cases.SHAPES`), cached in `--work` as `bench.accuracy` caches them;
- the optimum exports of the pipelines matrix (`bench.family_exports`, cached in
  `--pipelines_work`) after each of its tools (`bench.pipeline_tools.degraded`), and their fp16
  files: onnxruntime's `OnnxModel.convert_float_to_float16(keep_io_types=True)` (`fp16`), the same
  after its transformer optimizer (`ort_fp16`) and onnxconverter-common's (`fp16_occ`), those
  `bench.numerics` caches in the same tools folders (one it has not made is made here, into
  `--work`, never into the pipelines cache);
- onnxruntime-genai's builds in `/work/genai-cache/*/*/model.onnx`, when present.

    python -m bench.profile_sweep [--work bench/.cache] [--pipelines_work bench/.cache] [--only cases,optimum,genai]

Writes the table to docs/profile-sweep.md and its summary line to docs/profiling.md (between the
profile-sweep markers; full runs only).
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import fire

from bench import cases, families
from bench.docs import ROOT, publish
from bench.family_exports import ExportedFile, ExportError, export
from bench.pipeline_tools import TOOLS, ToolError, degraded
from tagger import profile
from tagger.commands.profiling import ProfileReport
from tagger.errors import InputError, TaggerError
from tagger.model.paths import ancestors

BAR = 0.99
GENAI = Path("/work/genai-cache")
FP16 = ("fp16", "ort_fp16", "fp16_occ")
"""The fp16 files of an optimum export (`bench.numerics` makes and caches them)."""
GROUPS = ("cases", "optimum", "genai")


@dataclass
class Row:
    """One file profiled at the default level: where its kernel time went, or why it did not run."""

    group: str
    file: str
    status: str = "ok"
    level: str = ""
    kernel_us: float = 0.0
    module_us: float = 0.0
    root_us: float = 0.0
    control_us: float = 0.0
    unmatched: dict[str, str] = field(default_factory=dict)
    """Unmatched kernel -> the report's reason."""
    graph_nodes: int = 0
    file_nodes: int = 0
    outside: list[str] = field(default_factory=list)
    """Modules of the report that the file's own tags do not name."""
    seconds: float = 0.0
    report: ProfileReport | None = field(default=None, repr=False)

    @property
    def ran(self) -> bool:
        return self.status == "ok"

    @property
    def attributed(self) -> float:
        return self.module_us / self.kernel_us if self.kernel_us else 0.0

    def cells(self) -> list[str]:
        if not self.ran:
            return [self.group, self.file, self.status, *[""] * 8, f"{self.seconds:.1f}"]
        unmatched = str(len(self.unmatched)) + (f": {_reasons(self.unmatched)}" if self.unmatched else "")
        return [
            self.group,
            self.file,
            self.level.split(" ")[0],
            f"{self.kernel_us:.0f}",
            f"**{_pct(self.module_us, self.kernel_us)}**",
            _pct(self.root_us, self.kernel_us),
            _pct(self.control_us, self.kernel_us) if self.control_us else "",
            unmatched,
            str(len(self.outside)) + (f": {', '.join(f'`{m}`' for m in self.outside[:3])}" if self.outside else ""),
            str(self.graph_nodes),
            str(self.file_nodes),
            f"{self.seconds:.1f}",
        ]


HEADER = ["group", "file", "level", "kernels µs", "on modules", "on the root", "control flow", "unmatched (why)",
          "modules not in the file", "graph nodes", "file nodes", "s"]  # fmt: skip


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "n/a"


def _reasons(why: dict[str, str]) -> str:
    shown = [f"`{name}` ({reason})" for name, reason in list(why.items())[:3]]
    return "; ".join(shown) + (f"; and {len(why) - 3} more" if len(why) > 3 else "")


def profile_row(group: str, label: str, path: Path, retries: Sequence[Mapping[str, int]] = ()) -> Row:
    """Profile `path` at the default level (2 runs after 1 warm-up) and fill a row. When onnxruntime
    refuses the generated inputs, each of `retries` is tried in turn as `dim` (the sizes a user
    would pass with `--dim`); the label says which ran."""
    row = Row(group, label)
    start = time.perf_counter()
    try:
        report, dims = _profiled(path, retries)
    except InputError as exc:
        row.status = f"onnxruntime refuses it: {_short(exc)}"
    except TaggerError as exc:
        row.status = f"error: {type(exc).__name__}: {_short(exc)}"
    except Exception as exc:  # noqa: BLE001 - a crash is a finding for the table, not the end of the sweep
        row.status = f"crash: {type(exc).__name__}: {_short(exc)}"
    else:
        row.report = report
        row.file += f" (`--dim {','.join(f'{k}={v}' for k, v in dims.items())}`)" if dims else ""
        row.level, row.kernel_us, row.control_us = report.optimization, report.kernel_us, report.control_flow_us
        row.module_us = sum(m.self_us for m in report.modules)
        row.root_us = next((m.self_us for m in report.modules if m.module == ""), 0.0)
        row.unmatched = {name: report.unmatched_why.get(name, "") for name in report.unmatched}
        row.graph_nodes, row.file_nodes = report.graph_nodes, report.file_nodes
        row.outside = _outside_the_file(path, report)
    row.seconds = time.perf_counter() - start
    print("| " + " | ".join(row.cells()) + " |", flush=True)
    return row


def _profiled(path: Path, retries: Sequence[Mapping[str, int]]) -> tuple[ProfileReport, Mapping[str, int]]:
    refused: InputError | None = None
    for dims in ({}, *retries):
        try:
            return profile(path, runs=2, warmup=1, dim=dict(dims) if dims else 1), dims
        except InputError as exc:
            if "generated inputs" not in str(exc):
                raise
            refused = exc
    assert refused is not None
    raise refused


def _outside_the_file(path: Path, report: ProfileReport) -> list[str]:
    """Modules the report counts time for that are no module the file's own tags name (nor an
    ancestor of one): a name onnxruntime gave, taken for a module."""
    from tagger.commands.nodetags import model_tags
    from tagger.model.modelio import load_model

    named = {tag.module for tag in model_tags(load_model(path), base_dir=path.parent).nodes}
    known = named | {a for module in named for a in ancestors(module)}
    return sorted(m.module for m in report.modules if m.module not in known)


def _short(exc: BaseException) -> str:
    text = re.sub(r"/\S*/", "", " ".join(str(exc).split()))  # file names, not this machine's paths
    return text[:140].replace("|", "\\|")


# --------------------------------------------------------------------------------------------
# the files


@dataclass(frozen=True)
class File:
    """One file to profile, or the reason there is none."""

    group: str
    label: str
    path: Path | str
    key: tuple[str, ...] | None = None
    """The export this file is (family, exporter, file), or None."""
    source: tuple[str, ...] | None = None
    """The export it was made from (a tool's input): the sizes that ran it are tried when this file's are refused."""
    retries: tuple[tuple[tuple[str, int], ...], ...] = ()
    """Sizes (`--dim`) to try in turn when onnxruntime refuses the generated inputs."""


def case_files(work: Path) -> Iterator[File]:
    """Every benchmark case, both shapes."""
    for shapes in cases.SHAPES:
        for arch in cases.ARCHS:
            for exporter in cases.EXPORTERS:
                for degradation in cases.DEGRADATIONS:
                    if not cases.supported(arch, exporter, degradation):
                        continue
                    label = f"{arch} {exporter} {degradation}" + ("" if shapes == "static" else " (dynamic)")
                    try:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            path: Path | str = cases.make_case(arch, exporter, degradation, work, "noisy", shapes).path
                    except (cases.ToolFailed, cases.ExportError) as exc:
                        path = f"not built: {_short(exc)}"
                    yield File(f"cases {shapes}", label, path)


def optimum_files(pipelines_work: Path, work: Path) -> Iterator[File]:
    """Every optimum file of the pipelines matrix after each tool and fp16 conversion; a file a
    tool made is tried on the sizes its input ran with when its generated inputs are refused (a
    quantized ViT's channels are tied to no float weight, and the config stating them is one
    folder up)."""
    for family in families.FAMILIES:
        for exporter in ("optimum", "optimum-past"):
            try:
                exported = export(family, exporter, pipelines_work)
            except ExportError as exc:
                yield File("optimum", f"{family} {exporter}", f"not exported: {_short(exc)}")
                continue
            for file in exported:
                for tool in (*TOOLS, *FP16):
                    label = f"{family} {exporter} {file.component} {tool}"
                    try:
                        path: Path | str = _tool_file(file, tool, work)
                    except (ToolError, Exception) as exc:  # noqa: BLE001 - a tool that fails is a row
                        path = f"tool failed: {_short(exc)}"
                    if isinstance(path, Path) and path.with_suffix(".noload").exists():
                        label += " (no CPU load)"
                    source = (family, exporter, file.component)
                    yield File("optimum", label, path, *((source, None) if tool == "none" else (None, source)))


def _tool_file(file: ExportedFile, tool: str, work: Path) -> Path:
    """The file `tool` made of `file`: the pipelines' cache, else (fp16 files `bench.numerics` has
    not made) made here into `work`."""
    if tool not in FP16:
        return degraded(file, tool)
    cached = file.path.parent / "tools" / f"{file.component}.{tool}.onnx"
    if cached.exists():
        return cached
    from bench.numerics import _make  # the converters exactly as bench.numerics runs them

    target = work / "profile-sweep" / file.family / file.exporter / cached.name
    failure = target.with_suffix(".error")
    if failure.exists():
        raise ToolError(failure.read_text(encoding="utf-8").strip())
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with cases._quiet():
                _make(file.path, target, tool, file.family)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"[:160]
            target.unlink(missing_ok=True)
            failure.write_text(reason + "\n", encoding="utf-8")
            raise ToolError(reason) from exc
    return target


GENAI_RETRY = (("past_sequence_length", 0),)
"""onnxruntime refuses a past of one token on the fp16 builds ("Shape mismatch attempting to re-use
buffer", its own buffer reuse around the casts it inserts): the first step of generation, no past."""


def genai_files(root: Path = GENAI) -> Iterator[File]:
    """Every onnxruntime-genai build in `root` (family/variant/model.onnx)."""
    for path in sorted(root.glob("*/*/model.onnx")):
        yield File("genai", f"{path.parent.parent.name} {path.parent.name}", path, retries=(GENAI_RETRY,))


# --------------------------------------------------------------------------------------------
# the table


_NOT_RUN = {
    "onnxruntime refuses it": "files onnxruntime refuses to load or whose inputs it refuses",
    "tool failed": "a tool made no file",
    "not exported": "an export optimum has no task for",
    "not built": "a case not built",
}


def render(rows: list[Row], seconds: float) -> tuple[str, str]:
    """The table with its summary, and the summary line alone."""
    ran = [row for row in rows if row.ran]
    over = [row for row in ran if row.attributed >= BAR]
    unmatched = sum(len(row.unmatched) for row in ran)
    unexplained = sum(1 for row in ran for why in row.unmatched.values() if not why)
    outside = sum(1 for row in ran if row.outside)
    why = Counter(row.status.split(":")[0] for row in rows if not row.ran)
    others = ", ".join(f"{count} {_NOT_RUN.get(status, status)}" for status, count in why.most_common())
    summary = (
        f"{len(rows)} rows; {len(ran)} files ran at onnxruntime's default level" + (f" (not run: {others})" if others else "")
        + f"; **{len(over)} of {len(ran)} put ≥ {BAR:.0%} of their kernel time on modules**; {unmatched} unmatched kernels"
        + (f" ({unexplained} without a reason)" if unexplained else " (each with its reason)" if unmatched else "")
        + f"; {outside} files with time on a module their own tags do not name"
    )
    below = [row for row in ran if row.attributed < BAR]
    if below:
        worst = min(below, key=lambda row: row.attributed)
        summary += f"; worst: {worst.file}, {_pct(worst.module_us, worst.kernel_us)} on modules"
        overhead = [row for row in below if not row.unmatched and row.module_us >= BAR * (row.kernel_us - row.control_us)]
        if len(overhead) == len(below):
            most = max(below, key=lambda row: row.control_us / row.kernel_us)
            summary += (
                f"; the {len(below)} below {BAR:.0%} are the files with an If, whose rest is its control-flow overhead "
                f"(up to {_pct(most.control_us, most.kernel_us)}: the body executor's work between body kernels, which the "
                "report shows apart and charges to no module)"
            )
    summary += f". `python -m bench.profile_sweep`: {seconds:.0f} s on this machine, the exports cached."
    lines = ["| " + " | ".join(HEADER) + " |", "|---|---|---|" + "---:|" * 4 + "---|---|" + "---:|" * 3]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return summary + "\n\n" + "\n".join(lines), summary


def main(
    work: str = "bench/.cache",
    pipelines_work: str = "bench/.cache",
    only: str | tuple[str, ...] | None = None,
    publish_doc: bool = True,
) -> None:
    """Profile every file, print the table, the worst row and how many rows are at the bar; publish."""
    groups = tuple(only.split(",")) if isinstance(only, str) else tuple(only or GROUPS)
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise SystemExit(f"error: --only takes {', '.join(GROUPS)}, got {', '.join(sorted(unknown))}")
    work_dir, pipelines_dir = ROOT / work, ROOT / pipelines_work
    work_dir.mkdir(parents=True, exist_ok=True)
    logging.disable(logging.WARNING)  # the converters' advice, once per file
    started = time.perf_counter()
    sources = {
        "cases": lambda: case_files(work_dir),
        "optimum": lambda: optimum_files(pipelines_dir, work_dir),
        "genai": genai_files,
    }
    print("| " + " | ".join(HEADER) + " |")
    rows: list[Row] = []
    sizes: dict[tuple[str, ...], dict[str, int]] = {}  # the sizes each tool's input ran with
    for group in groups:
        for file in sources[group]():
            if not isinstance(file.path, Path):
                rows.append(Row(file.group, file.label, file.path))
                print("| " + " | ".join(rows[-1].cells()) + " |", flush=True)
                continue
            retries = [dict(r) for r in file.retries] + ([sizes[file.source]] if file.source in sizes else [])
            rows.append(profile_row(file.group, file.label, file.path, retries))
            report = rows[-1].report
            if file.key is not None and report is not None and report.dims:
                sizes[file.key] = dict(report.dims)
    text, summary = render(rows, time.perf_counter() - started)
    print("\n" + summary)
    if publish_doc and set(groups) == set(GROUPS):
        publish("profile-sweep", text, ("docs/profile-sweep.md",))
        publish("profile-sweep-summary", summary, ("docs/profiling.md",))


if __name__ == "__main__":
    fire.Fire(main)
