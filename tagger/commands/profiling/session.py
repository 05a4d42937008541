"""The model run in onnxruntime with profiling on: names every kernel can be matched by, providers.

1. **Run names.** Every kernel must name one node, so nodes run under unique names in an
   in-memory copy when theirs are not: a body node whose name recurs in another body (the two
   branches of an optimum merged decoder repeat every name) runs as `<name>@<body>`; a node
   without a name, or sharing one inside its own graph, under a stand-in (onnxruntime would call
   it `<op>_<index>`, which can collide with real names). Weights stay in their external data
   file. That copy is also the reference of the optimized graph (its stand-ins carry no name
   evidence).
2. **Providers.** `provider_names` reads `"A,B"` or a list in order (`CUDA` means
   `CUDAExecutionProvider`); a provider this onnxruntime lacks is bad input.
3. **Sessions.** One session per feeds tried, with profiling on at the level asked, writing the
   graph it optimized (`tagger.commands.profiling.executed`); onnxruntime's refusal to write a graph
   holding compiled partitions makes the session again without writing, noted.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

from tagger.commands.profiling.executed import Level, refuses_to_write, remove_written, session_options
from tagger.commands.profiling.report import PROVIDER_SUFFIX
from tagger.errors import InputError, MissingDependency, param
from tagger.inputs.feeds import Feeds, load_refusal, refusal
from tagger.model.index import ModelIndex, build_index
from tagger.model.modelio import save_text

__all__ = ["DEFAULT_PROVIDER", "RunNames", "Session", "provider_names", "renamed", "run_names"]

DEFAULT_PROVIDER = "CPUExecutionProvider"
_STAND_IN = "_tagger_profile_node_"


def provider_names(provider: str | Sequence[str]) -> tuple[str, ...]:
    """Execution provider names in order, from `"A,B"` or a list; `CUDA` means `CUDAExecutionProvider`."""
    if isinstance(provider, str):
        parts = provider.split(",")
    elif isinstance(provider, list | tuple) and all(isinstance(p, str) for p in provider):
        parts = list(provider)
    else:
        raise InputError(f"{param('provider')} takes provider names (A or A,B), got {provider!r}")
    names = [p.strip() for p in parts if p.strip()]
    if not names:
        raise InputError(f"{param('provider')} takes provider names (A or A,B), got {provider!r}")
    return tuple(dict.fromkeys(n if n.endswith(PROVIDER_SUFFIX) else n + PROVIDER_SUFFIX for n in names))


@dataclass(frozen=True)
class RunNames:
    """A unique name per indexed node, and how many were changed (qualified by body, stand-ins)."""

    run_names: list[str]
    qualified: int
    stand_ins: int

    @property
    def changed(self) -> bool:
        return bool(self.qualified or self.stand_ins)


def run_names(index: ModelIndex) -> RunNames:
    """Own names where unique; `<name>@<body>` where unique only inside the body; else a stand-in."""
    names = [view.name for view in index.views]
    counts = Counter(names)
    per_graph = Counter(zip(names, index.graph_of, strict=True))
    out: list[str] = []
    qualified = stand_ins = 0
    for node_id, name in enumerate(names):
        graph_id = index.graph_of[node_id]
        if name and counts[name] == 1 and not name.startswith(_STAND_IN):
            out.append(name)
        elif name and per_graph[name, graph_id] == 1 and index.graphs[graph_id].kind == "subgraph":
            out.append(f"{name}@{_STAND_IN}body{graph_id}")
            qualified += 1
        else:
            out.append(f"{_STAND_IN}{node_id}")
            stand_ins += 1
    return RunNames(out, qualified, stand_ins)


class Session:
    """Runs the model in onnxruntime sessions with profiling on, one per feeds tried."""

    def __init__(
        self,
        source: Path,
        ran: onnx.ModelProto,
        renamed: bool,
        level: Level,
        providers: tuple[str, ...],
        threads: int,
        trace: str | os.PathLike | None,
        workdir: Path,
        runs: int,
    ) -> None:
        self.runs = runs
        self.source, self.ran, self.renamed = source, ran, renamed
        self.level, self.providers, self.threads = level, providers, threads
        self.trace, self.workdir = trace, workdir
        self.used: list[str] = []
        """The providers the last session used, in order (onnxruntime adds the CPU provider)."""
        self.notes: list[str] = []
        self.compiled = False
        """Whether onnxruntime refused to write its graph: a provider compiled partitions."""

    def events(self, feeds: Feeds) -> list[dict]:
        """Run the model on `feeds` (warm-up and measured runs) and return the trace's events."""
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependency("profiling", "onnxruntime") from None
        check_available(self.providers, ort.get_available_providers())
        remove_written(self.workdir)
        session = self._session(ort, write=True)
        arrays = dict(feeds)
        try:
            for _ in range(self.runs):
                session.run(None, arrays)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise refusal(self.ran, feeds, exc) from None
        trace_file = Path(session.end_profiling())
        text = trace_file.read_text(encoding="utf-8")
        trace_file.unlink()
        if self.trace is not None:
            save_text(text, Path(self.trace))
        return json.loads(text)

    def _session(self, ort, write: bool):
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(self.workdir / "trace")
        options.log_severity_level = 4  # a refused run is reported in one line, not logged too
        options.intra_op_num_threads = self.threads
        session_options(options, self.level, self.workdir, write)
        payload: str | bytes = str(self.source)
        if self.renamed:
            payload = self.ran.SerializeToString()
            options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(self.source.parent))
        try:
            session = ort.InferenceSession(payload, options, providers=list(self.providers))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            if write and self.level.fuses and refuses_to_write(exc):
                self.compiled = True
                self.notes.append(
                    "onnxruntime does not write a graph holding partitions a provider compiled: kernels are "
                    "matched to the file's nodes, a partition's kernel is unmatched"
                )
                return self._session(ort, write=False)
            refused = load_refusal(self.source, exc)
            if self.level.fuses:  # a file onnxruntime loads only unoptimized is still bad input, as sessions optimize
                raise InputError(
                    f"{refused} (graph optimizations {self.level.name}; {param('optimize')} off profiles it unoptimized)"
                ) from None
            raise refused from None
        self.used = list(session.get_providers())
        return session


def check_available(providers: tuple[str, ...], available: list[str]) -> None:
    missing = [p for p in providers if p not in available]
    if missing:
        raise InputError(f"{param('provider')} {missing[0]} is not in this onnxruntime; it has {', '.join(available)}")


def renamed(model: onnx.ModelProto, run_names: list[str]) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for node, name in zip(build_index(copy).nodes, run_names, strict=True):
        node.name = name
    return copy
