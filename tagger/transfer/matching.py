"""Match the nodes of a model to the nodes of its reference (the same model before a tool ran).

Tools rewrite graphs but keep most of what they do not rewrite: tensor names (onnxslim, the
quantizers and graphsurgeon keep them; a fused node writes the tensor of the last node it
replaced), node names, and the values of weights (`tagger.transfer.content`). Quantizers derive
the names of what they add from the tensor they quantize (`x_QuantizeLinear`, `w_quantized`,
`y_output_quantized`). A node is matched by the strongest of these rules, tried in order:

1. **name**: a reference node has the node's name;
2. **output**: a reference node writes one of the node's outputs; else a reference tensor has the
   node's name (onnxslim names a node after a tensor it replaced the computation of);
3. **weight**: the node reads an initializer that the reference has, under its name or, renamed,
   with the same values, and exactly one reference node of its op type reads it: that node (a
   constant many nodes read, such as a shape, identifies none of them);
4. **derived**: its name or an output's name is a reference tensor or node name plus a suffix
   after `_`, `/`, `:` or `.` (the longest such prefix wins): it takes that tensor's module
   (its producer's, or for a weight or input the LCA of its consumers');
5. **structure**: a node left over whose matched producer (or consumer) has exactly one reference
   consumer (producer) of the node's op type not matched yet takes that node; repeated;
6. **fused**: a node still left over replaced the reference nodes between its nearest matched
   producers and consumers (reachable from the images of the first and reaching the images of
   the second): it takes their LCA (onnxruntime's `SkipLayerNormalization`, `Attention`, a QDQ
   pair around a fused op). With no reference node between them it is not matched: inference
   places it among its matched neighbours.

A node matched by name or output (rules 1-2) writes the value its reference node wrote, so it
belongs where that value was computed, fused or not: `onnxruntime`'s `BiasGelu` writes the GELU's
output and is the activation's, though it also adds the bias of the `Linear` before it. Such a
node's reference module was decided with all the evidence the tool deleted (`Matching.images`).

`Matching.kept_edges` counts the connections between name-matched nodes that the reference has
too: a reference that is another model matches names by chance (`val_12` is in every dynamo
export), between nodes that its graph does not connect.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from tagger.model.index import ModelIndex, dataflow
from tagger.model.paths import lca_all

__all__ = ["Matching", "match_graphs"]

_SEPARATORS = "_/:."
_STRUCTURE_ROUNDS = 8
_MAX_CUTS = 16
"""Suffixes tried per name (the last separators): tools append one or two; a hostile name with
many separators then costs linear time, not quadratic."""
_BETWEEN_LIMIT = 256
"""Reference nodes visited from one side when looking for what a fused node replaced."""


@dataclass
class Matching:
    """Each matched node's module, and how it was matched."""

    modules: dict[int, str] = field(default_factory=dict)
    rules: Counter[str] = field(default_factory=Counter)
    images: dict[int, int] = field(default_factory=dict)
    """The reference node of each node matched by name or output (rules 1-2)."""
    anchored: int = 0
    """Nodes matched by name or output (rules 1-2)."""
    agreeing: int = 0
    """Of those, the nodes whose reference node has their op type."""
    weights: int = 0
    """Target initializers found in the reference (by name with the same shape, or by content)."""
    edges: int = 0
    """Dataflow edges between two name-matched nodes."""
    kept_edges: int = 0
    """Of those, the edges the reference has between the two nodes' reference nodes."""


@dataclass
class _Reference:
    """The reference's tensors and nodes, looked up by name."""

    index: ModelIndex
    modules: Sequence[str | None]
    producer: dict[str, int]
    consumers: dict[str, list[int]]
    by_name: dict[str, int]
    initializers: frozenset[str]

    @classmethod
    def of(cls, index: ModelIndex, modules: Sequence[str | None]) -> _Reference:
        producer, consumers = dataflow(index.views)
        names: Counter[str] = Counter(view.name for view in index.views if view.name)
        by_name = {view.name: i for i, view in enumerate(index.views) if view.name and names[view.name] == 1}
        initializers = frozenset(name for scope in index.graphs for name in scope.initializers)
        return cls(index, modules, producer, consumers, by_name, initializers)

    def tensor_module(self, name: str) -> str | None:
        """A tensor's module: its producer's; for a weight or an input, its consumers' LCA."""
        node = self.producer.get(name)
        if node is not None:
            return self.modules[node]
        users = [self.modules[i] for i in self.consumers.get(name, ()) if self.modules[i] is not None]
        return lca_all(users) if users else None

    def known(self, name: str) -> bool:
        return name in self.producer or name in self.consumers or name in self.by_name


_Flow = tuple[dict[str, int], dict[str, list[int]]]
"""A graph's producer of each tensor and its readers, by position (`tagger.model.index.dataflow`)."""


def match_graphs(
    target: ModelIndex,
    reference: ModelIndex,
    reference_modules: Sequence[str | None],
    renamed: dict[str, tuple[str, ...]],
    shared_weights: int = 0,
) -> Matching:
    """Match every node of `target` it can (rules in the module docstring). `reference_modules`
    are the reference's decided modules by node (None: not transferable); `renamed` maps target
    initializers to reference initializers with their values; `shared_weights` counts target
    initializers found in the reference under their own name."""
    ref = _Reference.of(reference, reference_modules)
    flow = dataflow(target.views)  # the target's producers and consumers, for rules 2, 5 and 6
    result = Matching(weights=shared_weights + len(renamed))
    images: dict[int, int] = {}
    initializers = frozenset(name for scope in target.graphs for name in scope.initializers)
    for node_id, view in enumerate(target.views):
        image = ref.by_name.get(view.name) if view.name else None
        rule = "name"
        if image is None:
            image = next((ref.producer[o] for o in view.output if o in ref.producer), None)
            rule = "output"
        if image is None and view.name in ref.producer:
            image, rule = ref.producer[view.name], "name"
        if image is not None:
            images[node_id] = image
            result.images[node_id] = image
            result.anchored += 1
            result.agreeing += reference.views[image].op_type == view.op_type
            _claim(result, node_id, reference_modules[image], rule)
    result.edges, result.kept_edges = _edges_kept(target, ref, images, flow[0])  # between name-matched nodes only
    for node_id, view in enumerate(target.views):
        if node_id in images:
            continue
        image = _by_weight(view.op_type, [i for i in view.input if i in initializers], ref, renamed)
        if image is not None:
            images[node_id] = image
            _claim(result, node_id, reference_modules[image], "weight")
            continue
        module = _by_derived_name(view.name, view.output, ref)
        if module is not None:
            _claim(result, node_id, module, "derived")
    _by_structure(target, ref, images, result, flow)
    _by_fusion(target, ref, images, result, flow)
    return result


def _edges_kept(target: ModelIndex, ref: _Reference, images: dict[int, int], producer: dict[str, int]) -> tuple[int, int]:
    """(dataflow edges between name-matched nodes, through unmatched ones such as the quantizers'
    Q/DQ pairs; those the reference has directly between their reference nodes): a tool rewires a
    few edges, while names shared by chance with another model connect unrelated nodes."""
    views, ref_views = target.views, ref.index.views
    edges = kept = 0
    for node_id, image in images.items():
        reads = set(ref_views[image].input)
        sources = _nearest(node_id, lambda n: [producer[i] for i in views[n].input if i in producer], images, limit=16)
        for source in sources:
            edges += 1
            kept += not reads.isdisjoint(ref_views[images[source]].output)
    return edges, kept


def _claim(result: Matching, node_id: int, module: str | None, rule: str) -> None:
    if module is not None:
        result.modules[node_id] = module
        result.rules[rule] += 1


def _by_weight(op_type: str, weights: list[str], ref: _Reference, renamed: dict[str, tuple[str, ...]]) -> int | None:
    """The reference node of this op type that reads one of the node's weights, when exactly one
    does: a constant many nodes read (a shape, an axis, a scale) identifies none of them."""
    for weight in weights:
        users = {
            i
            for name in ((weight,) if weight in ref.initializers else renamed.get(weight, ()))
            for i in ref.consumers.get(name, ())
            if ref.index.views[i].op_type == op_type
        }
        if len(users) == 1:
            return users.pop()
    return None


def _by_derived_name(name: str, outputs: Sequence[str], ref: _Reference) -> str | None:
    """The module of the longest reference name that `name` or an output extends by a suffix."""
    best: str | None = None
    for candidate in (name, *outputs):
        cuts = [i for i, char in enumerate(candidate) if char in _SEPARATORS][-_MAX_CUTS:]
        for cut in reversed(cuts):
            if cut > 0 and ref.known(candidate[:cut]):
                if best is None or cut > len(best):
                    best = candidate[:cut]
                break
    if best is None:
        return None
    node = ref.by_name.get(best)
    return ref.modules[node] if node is not None else ref.tensor_module(best)


def _by_structure(target: ModelIndex, ref: _Reference, images: dict[int, int], result: Matching, flow: _Flow) -> None:
    """Rule 5: walk from matched neighbours to the one unmatched reference node of the same op."""
    producer, consumers = flow
    taken = set(images.values())
    for _ in range(_STRUCTURE_ROUNDS):
        found = 0
        for node_id, view in enumerate(target.views):
            if node_id in images or node_id in result.modules:
                continue
            image = _structural_image(view, producer, consumers, images, ref, taken)
            if image is not None:
                images[node_id] = image
                taken.add(image)
                _claim(result, node_id, ref.modules[image], "structure")
                found += 1
        if not found:
            return


def _structural_image(view, producer, consumers, images, ref: _Reference, taken: set[int]) -> int | None:
    ref_views = ref.index.views
    options: set[int] = set()
    for name in view.input:
        source = producer.get(name)
        if source in images:
            for output in ref_views[images[source]].output:
                options.update(i for i in ref.consumers.get(output, ()) if ref_views[i].op_type == view.op_type)
    for name in view.output:
        for user in consumers.get(name, ()):
            if user in images:
                for tensor in ref_views[images[user]].input:
                    node = ref.producer.get(tensor)
                    if node is not None and ref_views[node].op_type == view.op_type:
                        options.add(node)
    options -= taken
    return options.pop() if len(options) == 1 else None


def _by_fusion(target: ModelIndex, ref: _Reference, images: dict[int, int], result: Matching, flow: _Flow) -> None:
    """Rule 6: the LCA of the reference nodes between a left-over node's matched neighbours."""
    producer, readers = flow
    for node_id in range(len(target.views)):
        if node_id in images or node_id in result.modules:
            continue
        ups = _nearest(node_id, lambda n: [producer[i] for i in target.views[n].input if i in producer], images)
        downs = _nearest(node_id, lambda n: [r for o in target.views[n].output for r in readers.get(o, ())], images)
        between = _between(ref, {images[n] for n in ups}, {images[n] for n in downs})
        modules = [ref.modules[i] for i in between if ref.modules[i] is not None]
        if modules:
            _claim(result, node_id, lca_all(modules), "fused")


def _nearest(start: int, step, images: dict[int, int], limit: int = 64) -> set[int]:
    """The nearest matched nodes from `start` in one direction, through unmatched ones."""
    found: set[int] = set()
    seen = {start}
    frontier = [start]
    while frontier and len(seen) < limit:
        following = []
        for node in frontier:
            for neighbour in step(node):
                if neighbour in seen:
                    continue
                seen.add(neighbour)
                if neighbour in images:
                    found.add(neighbour)
                else:
                    following.append(neighbour)
        frontier = following
    return found


def _between(ref: _Reference, ups: set[int], downs: set[int]) -> set[int]:
    """Reference nodes reachable from `ups` that reach `downs` (both excluded)."""
    if not ups or not downs:
        return set()
    views = ref.index.views
    forward = _reach(ups, lambda n: [r for o in views[n].output for r in ref.consumers.get(o, ())], downs)
    backward = _reach(downs, lambda n: [ref.producer[i] for i in views[n].input if i in ref.producer], ups)
    return (forward & backward) - ups - downs


def _reach(starts: set[int], step, stops: set[int]) -> set[int]:
    seen: set[int] = set()
    frontier = list(starts)
    while frontier and len(seen) < _BETWEEN_LIMIT:
        node = frontier.pop()
        for neighbour in step(node):
            if neighbour not in seen and neighbour not in stops and neighbour not in starts:
                seen.add(neighbour)
                frontier.append(neighbour)
    return seen
