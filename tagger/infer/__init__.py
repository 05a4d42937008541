"""Inference for nodes without evidence: where in the module tree an untagged node ran.

It rests on three facts every export obeys, and each rule names the one it uses.

- **A. Nesting**: a module's forward is one contiguous stretch of execution order, with its
  children's stretches nested inside; an untagged node's *bound* is certain (`flows.py`).
- **B. A leaf owns what converges into its parameter uses** (`leaf.py`).
- **C. A value produced in one module and consumed in another belongs to neither** (`combining.py`).

The rules run in the order of `RULES`, one module each (its docstring states the rule, the fact
it rests on and its exceptions): the certain rules node by node, the first that decides wins
(`constants.py`: 1, `qdq.py`: 1b, `leaf.py`: 2, `combining.py`: 3).
Rules 1-3 repeat until nothing changes (each decision is context for the next). Then choices:
(`joins.py`: 4a, `choices.py`: 4, 5, 6).
Rules 1-3 and 6 are *certain* (they follow from the facts); rules 4a, 4 and 5 choose a module deeper
than the bound, and say so (`Inferred.certain`, the report's `certain`). Where rule 3 rested on a
premise that may fail (a value joined with sizes, `combining.py`), the graph is inferred again
without it, and what the two runs do not both give as certain is a choice.
The graph and its dataflow by position are `graph.py`, module ids `tree.py`, what the rules share
`state.py`. What each rule won and cost, measured on the benchmarks: `docs/inference.md`.

Nothing here knows a model, a layer name or an op beyond the ONNX definitions of weighted ops,
reshapes and constants.
"""

from __future__ import annotations

import functools
import importlib
import itertools
from collections.abc import Sequence

import numpy as np

from tagger.infer.flows import bound as bound_of
from tagger.infer.graph import Graph, GraphFacts, tensor_shapes
from tagger.infer.state import CERTAIN, CHOICE, Flows, Inferred, State, Steps
from tagger.infer.tree import Tree
from tagger.model.index import NodeView
from tagger.model.paths import lca

__all__ = ["RULES", "GraphFacts", "Inferred", "infer_graph", "tensor_shapes"]

RULES: tuple[tuple[str, str, str], ...] = (
    # (rule, module in tagger.infer, result), in the order they run
    ("1", "constants", CERTAIN),
    ("1b", "qdq", CERTAIN),
    ("2", "leaf", CERTAIN),
    ("3", "combining", CERTAIN),
    ("4a", "joins", CHOICE),
    ("4-6", "choices", CHOICE),
)
"""Each module's `STEPS` (`state.Steps`): a certain rule decides or sweeps before any choice is
made, a choice chooses on what the certain rules left open; every module's `settle` runs last,
in this order."""

_ROUNDS = 4


def infer_graph(nodes: Sequence[NodeView], labels: list[str | None], facts: GraphFacts) -> Inferred:
    """Fill the `None` labels of one graph's nodes (in graph order); None stays where nothing is known."""
    count = len(labels)
    if None not in labels or all(label is None for label in labels):
        return Inferred(list(labels), [None] * count, [True] * count)
    tree = Tree(facts.containers, facts.sequences)
    graph = Graph(nodes, facts)
    ids = {label: tree.id(label) for label in dict.fromkeys(labels) if label is not None}  # numbered in order of appearance
    known = list(map(ids.get, labels, itertools.repeat(-1)))
    state = State.start(graph, tree, list(known))
    inferred = _run(state)
    if state.sized:  # rule 3 took a join of a value with sizes as certain: only what holds without it is
        _certain_where_both_agree(inferred, _run(State.start(graph, tree, known, sizes_open=True)), known)
    return inferred


def _certain_where_both_agree(inferred: Inferred, other: Inferred, known: list[int]) -> None:
    """Keep `inferred`'s modules; a node's module stays certain only where `other` (the same graph
    with a premise withdrawn) gives it too, as certain; elsewhere it is a choice within both bounds."""
    for i, module in enumerate(inferred.modules):
        if known[i] >= 0 or module is None or not inferred.certain[i]:
            continue
        if module != other.modules[i] or not other.certain[i]:
            bounds = [b for b in (inferred.bounds[i], other.bounds[i], other.modules[i], module) if b is not None]
            inferred.bounds[i] = functools.reduce(lca, bounds)
            inferred.certain[i] = inferred.bounds[i] == module


@functools.cache
def _steps() -> tuple[tuple[str, Steps], ...]:
    """Each rule's kind and steps, in `RULES` order (a certain rule never chooses, a choice never decides)."""
    found = []
    for rule, module, kind in RULES:
        steps = importlib.import_module(f"{__name__}.{module}").STEPS
        if (kind == CHOICE) != (steps.decide is None and steps.sweep is None):
            raise TypeError(f"rule {rule} ({module}) is a {kind} and must have steps of that kind")
        found.append((kind, steps))
    return tuple(found)


def _run(state: State) -> Inferred:
    steps = _steps()
    decide = _dispatch(state, [s for kind, s in steps if kind == CERTAIN and s.decide is not None])
    sweeps = [s.sweep for kind, s in steps if kind == CERTAIN and s.sweep is not None]
    _facts_rounds(state, decide)
    if [sweep for sweep in sweeps if sweep(state)]:  # every sweep runs
        _facts_rounds(state, decide)
    labels = state.labels
    if any(label >= 0 for label in labels):
        certain = list(labels)
        for choose in [s.choose for kind, s in steps if kind == CHOICE and s.choose is not None]:
            choose(state, certain)
    for settle in [s.settle for _, s in steps if s.settle is not None]:
        settle(state)
    paths = state.tree.paths
    return Inferred(
        [paths[m] if m >= 0 else None for m in labels],
        [paths[b] if b >= 0 else None for b in state.bounds],
        state.certain,
    )


def _dispatch(state: State, certain: list[Steps]) -> tuple[list[int], list[tuple]]:
    """Per node, which certain rules' `decide` can decide it (`Steps.may`, in `RULES` order): a
    key into the distinct tuples of them. Most nodes are no constant, no QDQ op and have one
    producer: a rule that would return None at once is not called, in every pass."""
    keys = np.zeros(len(state.labels), dtype=np.int64)
    for bit, steps in enumerate(certain):
        may = steps.may(state.graph) if steps.may is not None else True
        keys |= np.asarray(may, dtype=np.int64) << bit
    table = [tuple(s.decide for bit, s in enumerate(certain) if key >> bit & 1) for key in range(1 << len(certain))]
    return keys.tolist(), table


def _facts_rounds(state: State, decide) -> None:
    """The certain rules' passes, until one decides nothing (at most `_ROUNDS`)."""
    for _ in range(_ROUNDS):
        if not _facts_pass(state, decide):
            break


def _facts_pass(state: State, decide) -> bool:
    """The certain rules on every untagged node (the first that decides wins); returns whether
    anything was decided."""
    labels = state.labels
    up, up_origins = state.flow.up(labels)
    down, down_origins = state.flow.down(state.evidence)
    before, after = state.flow.neighbours(labels)
    flows = Flows(up, up_origins, down, down_origins)
    decided: dict[int, int] = {}
    writers, root = state.graph.writers, state.tree.root
    keys, table = decide  # the rules that can decide each node (`_dispatch`)
    for i in [i for i, label in enumerate(labels) if label < 0 and (before[i] >= 0 or after[i] >= 0)]:
        # only rule 3 reads the bound, and only for a node with two producers or more
        bound = bound_of(state, i, before, after, up, down) if len(writers[i]) > 1 else root
        for rule in table[keys[i]]:
            choice = rule(state, i, bound, flows)
            if choice is not None:
                if choice >= 0:
                    decided[i] = choice
                break
    for i, module in decided.items():
        labels[i] = module
        state.bounds[i] = module
    return bool(decided)
