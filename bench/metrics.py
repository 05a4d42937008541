"""Per-row accuracy metrics shared by the benchmarks: exact, sound, wrong, best and reachable.

Every metric compares, node by node, the module a tagger predicted with the true module, over the
nodes that have a truth:

- `exact` - the tag equals the truth;
- `sound` - the tag equals the truth or is one of its ancestors (too shallow, but not false);
- `wrong` = 1 - sound - the tag points into another branch, or the node is untagged;
- `best` - the tag equals the deepest ancestor-or-self of the truth that the degraded file still
  evidences: 100% means the tagger said everything the file allows;
- `reachable` - the truth itself is evidenced: the ceiling of `exact` for any tagger;
- `folded` - of the wrong ones, the nodes an exporter made of two sibling modules: it folded one
  module's affine op (a BatchNorm) into the weighted op before it, so the node computes both; it
  reads the weight of the one (named `<module>.weight`), the exporter records the other as its
  scope. Either module is its truth; the row shows them apart instead of counting them as errors
  of the tagger or hiding them (`folded_modules`);
- `tool-made` - of the wrong ones, the nodes a tool made anew (a name the export does not have) in
  place of a chain of the export's ops, whose truth the benchmark can only take from the output
  name it kept (onnxslim's `..._post_reshape` after the Gemm it made of a MatMul, carrying the
  output of a block's residual reshape or of a norm it removed as an identity): the node does the
  work of several modules, so its truth is either; shown apart like `folded`, never hidden.

What a file "evidences" is computed here from the file alone, independently of the tagger: a
module is evidenced when any initializer name, node name, tensor name or metadata value (node,
graph or model level, which includes the model-level `hierarchy.modules` map) names it, and its
ancestors with it (a path names every prefix). Names are read two ways: dotted words
(`encoder.layer.0.attention.self.query.weight`, metadata lists, JSON maps) name every dotted
prefix that is a module path; TorchScript-style scoped names (`/encoder/layer.0/attention/MatMul`)
name the deepest module their leading segments resolve to, with the exporter's naming quirks undone
against the known modules (`bench.cases` resolver). The root `""` is always evidenced.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Set
from dataclasses import dataclass
from typing import TypeVar

import onnx

__all__ = [
    "Metrics",
    "deepest_evidenced",
    "evidenced_modules",
    "folded_modules",
    "is_sound",
    "measure",
    "node_modules",
    "wrong_cell",
]

MODULE_KEY = "hierarchy.module"

_DOTTED_WORD = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*")

K = TypeVar("K")


@dataclass(frozen=True)
class Metrics:
    """Counts over the nodes with a truth; the shares are fractions of `graded`."""

    graded: int
    exact_count: int
    sound_count: int
    best_count: int
    reachable_count: int
    folded_count: int = 0
    """Wrong nodes whose tag is the other module of an exporter's fold (see the module docstring)."""
    tool_made_count: int = 0
    """Wrong nodes a tool made in place of a chain of the export's ops (see the module docstring)."""

    def _share(self, count: int) -> float:
        return count / self.graded if self.graded else 0.0

    @property
    def exact(self) -> float:
        return self._share(self.exact_count)

    @property
    def sound(self) -> float:
        return self._share(self.sound_count)

    @property
    def wrong(self) -> float:
        return 1.0 - self.sound if self.graded else 0.0

    @property
    def folded(self) -> float:
        return self._share(self.folded_count)

    @property
    def tool_made(self) -> float:
        return self._share(self.tool_made_count)

    @property
    def unexplained(self) -> float:
        """The wrong share that is neither an exporter's fold nor a tool-made node: the tagger's."""
        return max(0.0, self.wrong - self.folded - self.tool_made)

    @property
    def best(self) -> float:
        return self._share(self.best_count)

    @property
    def reachable(self) -> float:
        return self._share(self.reachable_count)

    def __add__(self, other: Metrics) -> Metrics:
        """Pooled counts of two rows (for summaries over rows)."""
        return Metrics(
            self.graded + other.graded,
            self.exact_count + other.exact_count,
            self.sound_count + other.sound_count,
            self.best_count + other.best_count,
            self.reachable_count + other.reachable_count,
            self.folded_count + other.folded_count,
            self.tool_made_count + other.tool_made_count,
        )


EMPTY = Metrics(0, 0, 0, 0, 0)


def is_sound(tag: str | None, truth: str) -> bool:
    """Whether `tag` is `truth` or an ancestor of it (`""`, the root, is everyone's ancestor)."""
    if tag is None:
        return False
    return tag == truth or tag == "" or truth.startswith(tag + ".")


def deepest_evidenced(truth: str, evidenced: Set[str]) -> str:
    """The deepest ancestor-or-self of `truth` in `evidenced` (the root when none is)."""
    parts = truth.split(".") if truth else []
    for k in range(len(parts), 0, -1):
        candidate = ".".join(parts[:k])
        if candidate in evidenced:
            return candidate
    return ""


def measure(
    predicted: Mapping[K, str | None],
    truth: Mapping[K, str],
    evidenced: Set[str],
    folded: Mapping[K, str] | None = None,
    tool_made: Set[K] = frozenset(),
) -> Metrics:
    """Score predicted tags against the truth; nodes absent from `predicted` count as untagged.
    `folded` (`folded_modules`): per node, the module whose weight it reads, for `folded_count`;
    `tool_made` (`bench.cases.tool_made`): the nodes a tool made anew, for `tool_made_count`."""
    exact = sound = best = reachable = fold = made = 0
    for key, true_module in truth.items():
        tag = predicted.get(key)
        exact += tag == true_module
        right = is_sound(tag, true_module)
        sound += right
        best += tag == deepest_evidenced(true_module, evidenced)
        reachable += true_module in evidenced
        folds = not right and tag is not None and tag == (folded or {}).get(key) and _siblings(tag, true_module)
        fold += folds
        made += not right and not folds and key in tool_made
    return Metrics(len(truth), exact, sound, best, reachable, fold, made)


_WEIGHTED_OPS = frozenset(
    {"Conv", "ConvTranspose", "Gemm", "MatMul", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul"}
)
_WEIGHT = re.compile(r"(.+)\.weight(?:_quantized)?")
"""`<module>.weight`, or its int8 copy as onnxruntime's quantizers name it."""


def folded_modules(model: onnx.ModelProto) -> dict[int, str]:
    """Main-graph weighted nodes -> the module whose `<module>.weight` initializer they read."""
    initializers = {t.name for t in model.graph.initializer}
    found: dict[int, str] = {}
    for i, node in enumerate(model.graph.node):
        if node.op_type not in _WEIGHTED_OPS:
            continue
        weights = [m.group(1) for name in node.input if name in initializers and (m := _WEIGHT.fullmatch(name))]
        if len(weights) == 1:
            found[i] = weights[0]
    return found


def wrong_cell(m: Metrics) -> str:
    """The wrong share as the tables print it, folded and tool-made nodes said apart: `37.0% (37.0% folded)`."""
    if not m.graded:
        return "n/a"
    cell = f"{100.0 * m.wrong:.1f}%"
    apart = [f"{100.0 * m.folded:.1f}% folded"] if m.folded_count else []
    apart += [f"{100.0 * m.tool_made:.1f}% tool-made"] if m.tool_made_count else []
    return f"{cell} ({', '.join(apart)})" if apart else cell


def _siblings(a: str, b: str) -> bool:
    return a != b and a.rpartition(".")[0] == b.rpartition(".")[0]


def node_modules(model: onnx.ModelProto) -> dict[int, str | None]:
    """Main-graph node position -> its `hierarchy.module` tag (first entry), None when untagged."""
    tags: dict[int, str | None] = {}
    for i, node in enumerate(model.graph.node):
        tags[i] = next((p.value for p in node.metadata_props if p.key == MODULE_KEY), None)
    return tags


def evidenced_modules(model: onnx.ModelProto, modules: Set[str]) -> set[str]:
    """Modules of `modules` (with their ancestors, and the root) that something in `model` names.

    `modules` is the `named_modules()` path set of the module the file was exported from, in the
    file's own frame (a sub-model file's paths relative to what it wraps).
    """
    from bench.cases import _ScopeResolver  # the same quirk rules the truth is built with

    resolver = _ScopeResolver(set(modules))
    found: set[str] = {""}
    for text in _names_and_values(model):
        for word in _DOTTED_WORD.findall(text):
            parts = word.split(".")
            for k in range(1, len(parts) + 1):
                prefix = ".".join(parts[:k])
                if prefix in modules:
                    found.add(prefix)
        if text.startswith("/"):
            found.add(_deepest_scope(resolver, text))
    return _with_ancestors(found) & (set(modules) | {""})


def _deepest_scope(resolver, name: str) -> str:
    """The module the longest resolvable run of leading `/` segments of `name` names."""
    path = ""
    for segment in name.split("/")[1:]:
        nxt = resolver.child(path, segment)
        if nxt is None:
            break
        path = nxt
    return path


def _with_ancestors(paths: Iterable[str]) -> set[str]:
    out: set[str] = {""}
    for path in paths:
        parts = path.split(".") if path else []
        out.update(".".join(parts[:k]) for k in range(1, len(parts) + 1))
    return out


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _graphs(g)


def _names_and_values(model: onnx.ModelProto) -> Iterator[str]:
    """Every initializer, node and tensor name and every metadata value in the file."""
    for prop in model.metadata_props:
        yield prop.value
    for function in model.functions:
        for node in function.node:
            yield from _node_texts(node)
    for graph in _graphs(model.graph):
        for prop in graph.metadata_props:
            yield prop.value
        yield from (tensor.name for tensor in graph.initializer)
        yield from (sparse.values.name for sparse in graph.sparse_initializer)
        yield from (info.name for info in (*graph.input, *graph.output, *graph.value_info))
        for node in graph.node:
            yield from _node_texts(node)


def _node_texts(node: onnx.NodeProto) -> Iterator[str]:
    yield node.name
    yield from node.input
    yield from node.output
    yield from (prop.value for prop in node.metadata_props)
