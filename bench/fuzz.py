"""Seeded fuzzing: mutate real exported graphs and check the tagger's invariants on each.

    python -m bench.fuzz [--cases 5000] [--seed 0] [--work bench/.cache] [--jobs 2] [--nopublish_docs]

Every case takes one base model (a real export of `bench.cases`, degraded or not, its weights
loaded in), applies 1-4 seeded mutations and retags the result through files. Mutations keep
the graph valid: they drop node names, node and model metadata, or every trace of evidence of
random nodes; rename tensors (scoped-looking, non-ASCII, very long); shuffle the main graph into
another topological order; wrap random nodes into `If` bodies (which nests when an `If` is wrapped
again); duplicate node names; leave partial `hierarchy.*` tags from an imagined earlier run.

Invariants (`check`), each a failure of its own:
1. `crash`: retag raises nothing;
2. `complete`: every node — main graph, nested bodies, functions — carries the three keys once,
   with a known source, and the report counts every node once;
3. `lossless`: removing the three keys from the output gives the input's bytes (with the input's
   own tag entries removed too, when the mutation left some);
4. `idempotent`: retagging the output gives identical bytes;
5. `checker`: the output passes `onnx.checker.check_model(full_check=True)` whenever the input did.

`tests/test_fuzz.py` runs a fast subset of the same generator on the session's cases.
"""

from __future__ import annotations

import copy
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tagger.model.index import graphs_within, subgraphs

__all__ = ["MUTATIONS", "Base", "CaseResult", "bases_from", "check", "fuzz_case", "mutate", "every_node", "run"]

OWNED_KEYS = ("hierarchy.module", "hierarchy.tag", "hierarchy.source")
SOURCES = frozenset({"tag", "metadata", "name", "tensor", "initializer", "function", "subgraph", "inherited", "fallback"})


@dataclass
class Base:
    """A base model and what the mutations need to know about it."""

    label: str
    model: onnx.ModelProto
    types: dict[str, int]
    """Element type of every tensor whose type is known (shape inference), for `If` outputs."""
    checker_ok: bool


@dataclass
class CaseResult:
    index: int
    base: str
    mutations: list[str]
    failures: list[str] = field(default_factory=list)
    input_checker_ok: bool = False
    nodes: int = 0
    depth: int = 0
    """How deep graphs nest in the mutated model (0: no subgraph)."""


# --------------------------------------------------------------------------------------------
# graph helpers


def _all_graphs(model: onnx.ModelProto) -> Iterator[onnx.GraphProto | onnx.FunctionProto]:
    yield from graphs_within(model.graph)
    for function in model.functions:
        yield function
        for node in function.node:
            for body in subgraphs(node):
                yield from graphs_within(body)


def every_node(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Main graph, nested bodies and model-local functions."""
    return [node for graph in _all_graphs(model) for node in graph.node]


def _strip_owned(model: onnx.ModelProto) -> None:
    for node in every_node(model):
        props = node.metadata_props
        for position in reversed(range(len(props))):
            if props[position].key in OWNED_KEYS:
                del props[position]


def _protected(model: onnx.ModelProto) -> set[str]:
    """Names a rename must keep: graph inputs/outputs, initializers, function interfaces."""
    names = {v.name for v in (*model.graph.input, *model.graph.output)}
    for graph in graphs_within(model.graph):
        names.update(t.name for t in graph.initializer)
        names.update(t.values.name for t in graph.sparse_initializer)
        names.update(v.name for v in (*graph.input, *graph.output))
    for function in model.functions:
        names.update(function.input)
        names.update(function.output)
    return names


def _rename(model: onnx.ModelProto, mapping: dict[str, str], types: dict[str, int]) -> None:
    """Rename tensors everywhere in the main graph and its bodies (node ios, value_info)."""
    from bench.cases import rename_tensors  # imports torch: only when a case renames

    rename_tensors(model.graph, mapping)
    for old, new in mapping.items():
        if old in types:
            types[new] = types.pop(old)


def _names(model: onnx.ModelProto) -> set[str]:
    """Every tensor name in use (so a rename never collides)."""
    names = _protected(model)
    for node in every_node(model):
        names.update(node.input)
        names.update(node.output)
    return names


def _fresh(stem: str, taken: set[str]) -> str:
    name, k = stem, 0
    while name in taken:
        k += 1
        name = f"{stem}~{k}"
    taken.add(name)
    return name


def _depth(graph: onnx.GraphProto) -> int:
    bodies = [
        body
        for node in graph.node
        for attribute in node.attribute
        for body in ([attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs)
    ]
    return max((1 + _depth(body) for body in bodies), default=0)


def _reads(node: onnx.NodeProto) -> set[str]:
    """What a node reads: its inputs and every name its bodies read (outer-scope references)."""
    names = set(node.input)
    for body in subgraphs(node):
        for graph in graphs_within(body):
            for inner in graph.node:
                names.update(inner.input)
    return names


# --------------------------------------------------------------------------------------------
# mutations: each edits (model, types) in place and returns a short label


def drop_names(model: onnx.ModelProto, types: dict[str, int], rng: np.random.Generator) -> str:
    p = rng.choice([0.3, 1.0])
    for node in every_node(model):
        if rng.random() < p:
            node.name = ""
    return f"drop_names({p})"


def drop_metadata(model: onnx.ModelProto, types: dict[str, int], rng: np.random.Generator) -> str:
    p = rng.choice([0.3, 1.0])
    for node in every_node(model):
        if rng.random() < p:
            del node.metadata_props[:]
    if rng.random() < 0.5:
        del model.metadata_props[:]
    return f"drop_metadata({p})"


def drop_evidence(model: onnx.ModelProto, types: dict[str, int], rng: np.random.Generator) -> str:
    """Random nodes lose name, metadata and their output tensor names."""
    nodes = every_node(model)
    chosen = rng.choice(len(nodes), size=max(1, len(nodes) // int(rng.choice([2, 5, 20]))), replace=False)
    protected = _protected(model)
    taken = _names(model)
    mapping: dict[str, str] = {}
    for i in chosen:
        node = nodes[int(i)]
        node.name = ""
        del node.metadata_props[:]
        for name in node.output:
            if name and name not in protected:
                mapping[name] = _fresh(f"fz_t{len(mapping)}", taken)
    _rename(model, mapping, types)
    return f"drop_evidence({len(chosen)})"


_STYLES: tuple[Callable[[int, np.random.Generator], str], ...] = (
    lambda n, rng: f"t{n}",
    lambda n, rng: f"/fuzz/scope{rng.integers(3)}/Op_{n}_output_0",
    lambda n, rng: f"张量_{n}_🙂",
    lambda n, rng: f"a.b.c_{n}",
    lambda n, rng: "x" * 1000 + str(n),
    lambda n, rng: f"name with spaces|pipes`ticks`<b>{n}</b>",
)


def rename_tensors(model: onnx.ModelProto, types: dict[str, int], rng: np.random.Generator) -> str:
    protected = _protected(model)
    names = sorted({o for node in every_node(model) for o in node.output if o and o not in protected})
    if not names:
        return "rename_tensors(0)"
    chosen = rng.choice(len(names), size=max(1, len(names) // 3), replace=False)
    style = int(rng.integers(len(_STYLES)))
    taken = _names(model)
    mapping = {names[int(i)]: _fresh(_STYLES[style](k, rng), taken) for k, i in enumerate(chosen)}
    _rename(model, mapping, types)
    return f"rename_tensors({len(mapping)}, style {style})"


def shuffle(model: onnx.ModelProto, types: dict[str, int], rng: np.random.Generator) -> str:
    """Another topological order of the main graph (random choice among ready nodes)."""
    nodes = list(model.graph.node)
    producer = {name: i for i, node in enumerate(nodes) for name in node.output if name}
    before = [{producer[n] for n in _reads(node) if n in producer and producer[n] != i} for i, node in enumerate(nodes)]
    after: list[list[int]] = [[] for _ in nodes]
    for i, deps in enumerate(before):
        for d in deps:
            after[d].append(i)
    waiting = [len(d) for d in before]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    order = []
    while ready:
        i = ready.pop(int(rng.integers(len(ready))))
        order.append(i)
        for j in after[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    if len(order) != len(nodes):  # not a DAG: leave it alone
        return "shuffle(skipped)"
    del model.graph.node[:]
    model.graph.node.extend(nodes[i] for i in order)
    return "shuffle"


def wrap_in_if(model: onnx.ModelProto, types: dict[str, int], rng: np.random.Generator) -> str:
    """Move random main-graph nodes into the then-branch of a new `If` (a copy in the else-branch)."""
    count = 0
    for _ in range(int(rng.integers(1, 4))):
        nodes = model.graph.node
        candidates = [i for i, node in enumerate(nodes) if node.output and all(o and o in types for o in node.output)]
        wrapped = [i for i in candidates if nodes[i].op_type == "If"]
        if wrapped and rng.random() < 0.3:  # nest: wrap an If again
            candidates = wrapped
        if not candidates:
            break
        position = int(candidates[int(rng.integers(len(candidates)))])
        node = nodes[position]
        serial = sum(1 for t in model.graph.initializer if t.name.startswith("fz_cond_"))
        cond = f"fz_cond_{serial}"
        model.graph.initializer.append(numpy_helper.from_array(np.array(True), cond))
        wrapper = helper.make_node(
            "If",
            [cond],
            list(node.output),
            name=str(rng.choice(["", f"fz_if_{serial}"])),
            then_branch=_branch(node, f"fz_then{serial}", types),
            else_branch=_branch(node, f"fz_else{serial}", types),
        )
        nodes.insert(position, wrapper)
        del nodes[position + 1]
        count += 1
    if count and not any(o.domain in ("", "ai.onnx") for o in model.opset_import):
        model.opset_import.add(domain="", version=17)
    return f"wrap_in_if({count})"


def _branch(node: onnx.NodeProto, name: str, types: dict[str, int]) -> onnx.GraphProto:
    """A body holding a copy of `node`, its outputs renamed (a body may not shadow outer names)."""
    inner = copy.deepcopy(node)
    outputs = [f"{name}_{k}" for k in range(len(inner.output))]
    for k, output in enumerate(outputs):
        types[output] = types[inner.output[k]]
        inner.output[k] = output
    values = [helper.make_tensor_value_info(n, types[n], None) for n in outputs]
    return helper.make_graph([inner], name, [], values)


def duplicate_names(model: onnx.ModelProto, types: dict[str, int], rng: np.random.Generator) -> str:
    nodes = every_node(model)
    name = nodes[int(rng.integers(len(nodes)))].name if nodes else ""
    for i in rng.choice(len(nodes), size=max(1, len(nodes) // 4), replace=False):
        nodes[int(i)].name = name
    return f"duplicate_names({name[:30]!r})"


def partial_tags(model: onnx.ModelProto, types: dict[str, int], rng: np.random.Generator) -> str:
    """Some nodes carry tag entries from an imagined earlier run: one key, or all three."""
    nodes = every_node(model)
    chosen = rng.choice(len(nodes), size=max(1, len(nodes) // 5), replace=False)
    for i in chosen:
        node = nodes[int(i)]
        module = f"fuzz.block{rng.integers(3)}"
        node.metadata_props.add(key="hierarchy.module", value=module)
        if rng.random() < 0.5:
            node.metadata_props.add(key="hierarchy.tag", value="/" + module.replace(".", "/"))
            node.metadata_props.add(key="hierarchy.source", value=str(rng.choice(["name", "inherited", "tag"])))
    return f"partial_tags({len(chosen)})"


MUTATIONS: dict[str, Callable[[onnx.ModelProto, dict[str, int], np.random.Generator], str]] = {
    "drop_names": drop_names,
    "drop_metadata": drop_metadata,
    "drop_evidence": drop_evidence,
    "rename_tensors": rename_tensors,
    "shuffle": shuffle,
    "wrap_in_if": wrap_in_if,
    "duplicate_names": duplicate_names,
    "partial_tags": partial_tags,
}


def mutate(base: Base, rng: np.random.Generator) -> tuple[onnx.ModelProto, list[str]]:
    """A mutated copy of `base`: 1-4 mutations in random order (repeats allowed)."""
    model = onnx.ModelProto()
    model.CopyFrom(base.model)
    types = dict(base.types)
    names = list(MUTATIONS)
    applied = [MUTATIONS[names[int(i)]](model, types, rng) for i in rng.integers(len(names), size=int(rng.integers(1, 5)))]
    return model, applied


# --------------------------------------------------------------------------------------------
# invariants


def _checker_ok(model: onnx.ModelProto) -> bool:
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception:  # noqa: BLE001 - any refusal counts as "not valid"
        return False
    return True


def _completeness_failures(nodes: list[onnx.NodeProto], summary) -> list[str]:
    """Every node carries each tag key once with a known source, and the report counts them all."""
    failures = []
    for i, node in enumerate(nodes):
        counts = Counter(p.key for p in node.metadata_props if p.key in OWNED_KEYS)
        source_value = next((p.value for p in node.metadata_props if p.key == "hierarchy.source"), None)
        if counts != dict.fromkeys(OWNED_KEYS, 1) or source_value not in SOURCES:
            failures.append(f"complete: node {i} {node.op_type} {node.name[:40]!r} has {dict(counts)} source {source_value!r}")
            break
    if summary.nodes != len(nodes) or summary.nodes != summary.direct + summary.inherited + summary.fallback:
        failures.append(f"complete: report counts {summary.nodes} nodes of {len(nodes)}")
    return failures


def check(model: onnx.ModelProto, work: Path, input_checker_ok: bool | None = None) -> tuple[list[str], bool, int]:
    """Retag `model` through files in `work`; returns (failed invariants, input passed the checker, nodes)."""
    from tagger import retag

    source, output, again = work / "in.onnx", work / "out.onnx", work / "again.onnx"
    data = model.SerializeToString()
    source.write_bytes(data)
    failures: list[str] = []
    try:
        summary = retag(source, output)
        retag(output, again)
    except Exception as exc:  # noqa: BLE001 - the invariant under test
        return [f"crash: {type(exc).__name__}: {exc} @ {traceback.extract_tb(exc.__traceback__)[-1]}"], False, 0
    if source.read_bytes() != data:
        failures.append("input: modified")
    tagged = onnx.ModelProto()
    tagged.ParseFromString(output.read_bytes())
    nodes = every_node(tagged)
    failures += _completeness_failures(nodes, summary)
    expected = onnx.ModelProto()
    expected.CopyFrom(model)
    _strip_owned(expected)
    _strip_owned(tagged)
    if tagged.SerializeToString() != expected.SerializeToString():
        failures.append("lossless: output without the three keys differs from the input")
    if again.read_bytes() != output.read_bytes():
        failures.append("idempotent: a second retag changed bytes")
    if input_checker_ok is None:
        input_checker_ok = _checker_ok(model)
    if input_checker_ok:
        output_model = onnx.load(output)
        try:
            onnx.checker.check_model(output_model, full_check=True)
        except Exception as exc:  # noqa: BLE001
            failures.append(f"checker: {type(exc).__name__}: {str(exc)[:200]}")
    return failures, input_checker_ok, len(nodes)


def fuzz_case(bases: list[Base], index: int, seed: int, work: Path) -> CaseResult:
    """Case `index` of the run seeded `seed`: deterministic given the bases."""
    rng = np.random.default_rng([seed, index])
    base = bases[index % len(bases)]
    model, applied = mutate(base, rng)
    result = CaseResult(index, base.label, applied, depth=_depth(model.graph))
    try:
        result.failures, result.input_checker_ok, result.nodes = check(model, work)
    except Exception as exc:  # noqa: BLE001 - a failure of the harness is reported, not raised
        result.failures = [f"harness: {type(exc).__name__}: {exc}"]
    return result


# --------------------------------------------------------------------------------------------
# bases and the benchmark


def _element_types(model: onnx.ModelProto) -> dict[str, int]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shape inference is a convenience here
        inferred = model
    types: dict[str, int] = {}
    for value in (*inferred.graph.input, *inferred.graph.output, *inferred.graph.value_info):
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    return types


def bases_from(paths: dict[str, Path]) -> list[Base]:
    """Load each model with its weights (so mutated copies are self-contained files)."""
    bases = []
    for label, path in paths.items():
        model = onnx.load(path)
        bases.append(Base(label, model, _element_types(model), _checker_ok(model)))
    return bases


def _worker(args: tuple[list[str], int, int, int, str, str]) -> list[CaseResult]:
    labels, start, stop, seed, work, cache = args
    bases = _load_bases(Path(cache), labels)
    directory = Path(work)
    directory.mkdir(parents=True, exist_ok=True)
    return [fuzz_case(bases, i, seed, directory) for i in range(start, stop)]


def _case_paths(cache: Path) -> dict[str, Path]:
    from bench import cases

    return {
        f"{a}-{e}-{d}": cases.make_case(a, e, d, cache).path
        for a in cases.ARCHS
        for e in cases.EXPORTERS
        for d in cases.DEGRADATIONS
        if cases.supported(a, e, d)
    }


def _load_bases(cache: Path, labels: list[str]) -> list[Base]:
    paths = _case_paths(cache)
    return bases_from({label: paths[label] for label in labels})


def run(cases: int = 5000, seed: int = 0, work: str = "bench/.cache", jobs: int = 2, publish_docs: bool = True) -> None:
    """Fuzz `cases` mutated models; print a summary into docs/robustness.md (exit status 1 on any failure)."""
    import multiprocessing
    import sys
    import tempfile

    from bench.docs import ROOT, publish

    cache = (ROOT / work).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    labels = sorted(_case_paths(cache))  # builds (or finds) every case once, before the workers start
    started = time.perf_counter()
    chunks = [(i, min(cases, i + 100)) for i in range(0, cases, 100)]
    results: list[CaseResult] = []
    with tempfile.TemporaryDirectory() as tmp:
        tasks = [(labels, a, b, seed, f"{tmp}/w{a}", str(cache)) for a, b in chunks]
        with multiprocessing.get_context("spawn").Pool(max(1, jobs)) as pool:
            for done in pool.imap_unordered(_worker, tasks):
                results.extend(done)
                print(f"\r{len(results)}/{cases} cases", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    elapsed = time.perf_counter() - started
    text = summary(results, elapsed, seed)
    print(text)
    if publish_docs:
        command = f"python -m bench.fuzz --cases {cases}" + (f" --seed {seed}" if seed else "")
        publish("fuzz", f"Command: `{command}` ({jobs} processes).\n\n```\n{text}\n```", ("docs/robustness.md",))
    if any(r.failures for r in results):
        raise SystemExit(1)


def summary(results: list[CaseResult], elapsed: float, seed: int) -> str:
    failed = [r for r in results if r.failures]
    by_invariant = Counter(f.split(":", 1)[0] for r in failed for f in r.failures)
    by_mutation = Counter(m.split("(", 1)[0] for r in results for m in r.mutations)
    lines = [
        f"fuzz: {len(results)} cases (seed {seed}) on {len({r.base for r in results})} base models in {elapsed:.0f} s; "
        f"{sum(r.nodes for r in results)} nodes tagged; {sum(r.input_checker_ok for r in results)} inputs passed the full checker",
        "subgraph nesting (depth: cases): " + ", ".join(f"{d}: {n}" for d, n in sorted(Counter(r.depth for r in results).items())),
        f"failures: {len(failed)}" + (f" ({dict(by_invariant)})" if failed else ""),
        "mutations applied: " + ", ".join(f"{k} {v}" for k, v in sorted(by_mutation.items())),
    ]
    for r in failed[:10]:
        lines.append(f"  case {r.index} base {r.base} {r.mutations}: {r.failures[0][:300]}")
    return "\n".join(lines)


if __name__ == "__main__":
    import fire

    fire.Fire(run)
