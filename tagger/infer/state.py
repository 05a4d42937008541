"""What the rules share in one graph's run (`State`), what a rule module contributes to the run
(`Steps`), and the result (`Inferred`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from tagger.infer.flows import Dataflow
from tagger.infer.graph import Graph
from tagger.infer.tree import Tree

__all__ = ["CERTAIN", "CHOICE", "OPEN", "Flows", "Inferred", "State", "Steps"]

CERTAIN, CHOICE = "certain", "choice"
"""What a rule's result is: certain (it follows from the facts), or a choice deeper than the bound."""
OPEN = -1
"""A `decide` result: the node is this rule's, and it stays open (no later rule looks at it)."""


@dataclass
class Inferred:
    """Per node (graph order): the inferred module (None: nothing known), the bound it was chosen
    in (what fact A makes certain), and whether the module itself is certain."""

    modules: list[str | None]
    bounds: list[str | None]
    certain: list[bool]


@dataclass
class State:
    """One graph's run: module ids per node (-1: none) as the file says them (`evidence`) and as
    decided so far (`labels`), each node's `bounds` and whether its label is `certain`; the rules
    read and write these lists, and nothing else of one another."""

    graph: Graph
    tree: Tree
    evidence: list[int]
    labels: list[int]
    bounds: list[int]
    certain: list[bool]
    ordered: bool
    """Whether the file keeps the exporter's order (fact A's check: `Graph.ordered`)."""
    flow: Dataflow
    combined: set[int] = field(default_factory=set)
    """The nodes rule 3 decided: rule 4a may refine them."""
    sizes_open: bool = False
    """Whether a join of one value with sizes leaves its sides' common ancestor open (`combining.py`):
    the second run of a graph where the first one took such a join's ancestor as certain."""
    sized: set[int] = field(default_factory=set)
    """Joins of one value with sizes that rule 3 placed in their sides' common ancestor (`combining.py`)."""
    shape_joins: dict[int, int] = field(default_factory=dict)
    """Joins of shape values that rule 3 left open, with their sides' lowest common ancestor:
    rule 4a's choice, as context for rules 4-6 (`combining.py`)."""

    @property
    def order_bounds(self) -> bool:
        """Whether the order bounds where a node ran (fact A): the exporter's order, not one a
        tool sorted breadth-first (`tagger.model.producers`), where it still hints at choices."""
        return self.ordered and not self.graph.facts.resorted

    @classmethod
    def start(cls, graph: Graph, tree: Tree, evidence: list[int], sizes_open: bool = False) -> State:
        count = len(evidence)
        flow = Dataflow(graph, tree)
        labels, bounds, certain = list(evidence), [-1] * count, [True] * count
        return cls(graph, tree, evidence, labels, bounds, certain, graph.ordered(), flow, sizes_open=sizes_open)


class Flows(NamedTuple):
    """The flows a `decide` step reads, for every node (`Dataflow.up` on the labels, `Dataflow.down`
    on the evidence): the nearest tagged producers' modules and nodes, and the consumers'."""

    up: list
    up_origins: list
    down: list
    down_origins: list


@dataclass(frozen=True)
class Steps:
    """What one rule module contributes to the run (`tagger.infer.RULES` orders them), each optional:

    - `decide(state, i, bound, flows)`: a certain rule on one untagged node, in the repeated pass of
      rules 1-3 (the first rule that returns a module id, or `OPEN`, decides); `bound` is fact A's
      bound of a node with two producers or more (the root otherwise);
    - `sweep(state)`: a certain rule on the whole graph once those passes settle; returns whether it
      decided anything (then the passes run again);
    - `choose(state, certain_labels)`: a choice on what the certain rules left open, given their labels;
    - `settle(state)`: last, on every decided node (a constant follows its users; what is certain);
    - `may(graph)`: per node, whether `decide` can decide it at all, from what never changes in
      a run (op kinds, constants, writer counts); `decide` is not called where it says False
      (it would return None there). None: any node.
    """

    decide: Callable[[State, int, int, Flows], int | None] | None = None
    may: Callable[[Graph], list[bool]] | None = None
    sweep: Callable[[State], bool] | None = None
    choose: Callable[[State, list[int]], None] | None = None
    settle: Callable[[State], None] | None = None
