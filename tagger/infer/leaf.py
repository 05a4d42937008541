"""Rule 2: inside one leaf. Certain.

It rests on fact B:

**B. A leaf owns what converges into its parameter uses.** A module without children that has
parameters (a `Linear`, a norm) runs its ops from its input to its last parameter use. So a node
lying between two uses of one leaf belongs to it; a matrix product on an unnamed weight whose
result goes straight into a leaf's parameter use is that leaf's (a `Linear`'s MatMul before its
bias Add); the ops that fork from one value and converge into a leaf applying parameters
(a weighted op, a norm, a parameter read), reading nothing else, are
the leaf's (a decomposed RMSNorm: `Pow -> ReduceMean -> ... -> Mul(x, .) -> Mul(weight)`) -
unless the fork's value is the whole output of another tagged leaf (an activation between two
Linears has the same shape and may run in the first leaf, the caller, or a module between).
Nor into a matrix product's input (a Linear runs no reduction before its product), nor through
a product into a norm op (a norm normalizes its input first, so no product runs before it in its
leaf: Swinv2's bias-free `reduction` Linear before its norm, a projection `quantize_dynamic` made a
fork of before onnxruntime's fused residual norm), nor into a
lookup's indices: an Embedding's forward is `F.embedding(input, weight)` alone, so the indices it
looks up are its caller's (MPNet's and RoBERTa's position ids, a cumulative sum of the padding
mask multiplied by that mask: a fork converging into the position embedding's lookup).

  2. (B) Inside one leaf: between two of its uses; a join of its own branches (not of two weighted
     ops on one value: slices of its one product, a converter's q, k, v of a fused `qkv_proj`; nor
     of a branch that reached the leaf through another leaf's product or norm: one call applies
     its own weights only); a weighted op on an unnamed weight feeding its parameter use when that
     use reads nothing else computed (a bias Add, not a fused residual norm) - also for a module
     with children applying a parameter of its own (fact B holds per parameter use:
     `nn.MultiheadAttention`'s `in_proj_bias`; a use that applies no parameter, an activation
     module's, says nothing); a fork converging into it; a Reshape/Flatten pair
     wrapping a 2-D `Gemm` (the Linear applied to N-D input; a flatten with no restore after is
     the caller's, and a restore that gives the value another shape than was flattened - more
     dimensions, or other leading ones - is a caller's reshape a tool merged into it: which
     caller, the reshape does not say, so rule 2 leaves it to the bound).

`decide` runs it node by node (with the other certain rules, `tagger.infer.RULES`); the fork
converging into a leaf (`_diamonds`) is a `sweep` over every call of every leaf, once those passes settle.
"""

from __future__ import annotations

from collections.abc import Container

from tagger.infer.graph import NORMS, PRODUCTS, RESHAPES, RESIDUAL_NORMS, SAME_SHAPE, SHAPE_READS, WEIGHTED_OPS
from tagger.infer.state import Flows, State, Steps

__all__ = ["STEPS"]

_NORM_OPS = NORMS | RESIDUAL_NORMS
"""Ops that normalize their input before applying a norm's parameters: no product runs before
them in their leaf."""
_LEAF_REACH = 64
_GEMM_CHAIN = 8


def decide(state: State, i: int, bound: int, flows: Flows) -> int | None:
    return _inside_leaf(state, i, flows.up[i], flows.up_origins[i], flows.down[i], flows.down_origins[i], flows.up_origins)


def _inside_leaf(state: State, i, produced, produced_from, consumed, consumed_by, origins) -> int | None:
    """Rule 2 (fact B): the leaf whose ops this node lies among, if any."""
    g = state.graph
    if g.op[i] in RESHAPES:
        wrapped = _gemm_wrap(state, i)
        if wrapped is not None:
            return wrapped
    if g.weighted[i]:
        owner = _weight_into_use(state, i)
        if owner is not None:
            return owner
    consumer_leaf = _single_leaf(state, consumed)
    if consumer_leaf is not None and produced is not None and consumer_leaf in produced:
        if not _one_parameter(state, produced_from, consumed_by):
            return consumer_leaf  # between two uses of one leaf (two reads of one parameter: two calls)
    if produced is not None and len(produced_from) >= 2 and _branches(state, i, origins) >= 2:
        leaf = _single_leaf(state, produced)
        if leaf is not None and not _split_products(state, produced_from) and not _past_unnamed_leaf(state, i):
            return leaf  # joins one leaf's own branches (a quantized MatMul's rescale), itself
    return None


def _branches(state: State, i: int, origins) -> int:
    """How many different branches node `i` joins: inputs that carry different tagged nodes'
    values (a tagged writer, or the tagged nodes its value comes from). A chain after a join
    carries the join's producers on but joins nothing (the Reshape after a quantized Conv that
    read its leaf's weight and bias dequantized), and nor does a node joining two paths of one
    value forked after it (PoolFormer's pooling minus its input)."""
    labels = state.labels
    found = {(j,) if labels[j] >= 0 else origins[j] for j in state.graph.writers[i]}
    found.discard(None)
    return len(found)


def _past_unnamed_leaf(state: State, i: int) -> bool:
    """Whether a branch into node `i` reaches its tagged producers through another leaf's work: an
    untagged weighted op or norm applying an unnamed weight (fact B: that op is its weight's
    module's), or more untagged ops than one leaf runs (`_LEAF_REACH`). One call of a leaf applies
    its own weights only, so such branches are not its own: a fresh decoder's first layer, its
    projections on unnamed weights, reads the embedding's quantized rows, and joins the residual
    (the same rows dequantized) after the whole attention."""
    g, labels = state.graph, state.labels
    seen: set[int] = set()
    stack = [j for j in g.writers[i] if labels[j] < 0]
    while stack:
        j = stack.pop()
        if j in seen:
            continue
        if g.weighted[j] or g.normed[j] or len(seen) >= _LEAF_REACH:
            return True
        seen.add(j)
        stack.extend(k for k in g.writers[j] if labels[k] < 0)
    return False


def _single_leaf(state: State, modules) -> int | None:
    if modules is not None and len(modules) == 1:
        (module,) = modules
        if state.tree.leaf[module] and module != state.tree.root:
            return module
    return None


def _one_parameter(state: State, firsts, seconds) -> bool:
    """Whether a node of `firsts` and one of `seconds` read the same parameter: two calls."""
    parameters = state.graph.facts.parameters
    if not parameters or not firsts or not seconds:
        return False
    nodes = state.graph.nodes
    read = parameters.intersection(name for i in firsts for name in nodes[i].input)
    return any(not read.isdisjoint(nodes[k].input) for k in seconds)


def _split_products(state: State, producers) -> bool:
    """Whether two of `producers` are weighted ops on one computed value: a leaf applies its
    weight once, so they are slices of its one product (a converter's q, k, v of a fused
    `qkv_proj`), and what joins them runs after the leaf returned, in its caller."""
    g = state.graph
    facts = g.facts
    seen: set[int] = set()
    for k in producers:
        inputs = g.nodes[k].input
        if g.op[k] in PRODUCTS and (not facts.weights.isdisjoint(inputs) or not facts.parameters.isdisjoint(inputs)):
            inputs = {j for j in g.writers[k] if not g.constant[j]}
            if not seen.isdisjoint(inputs):
                return True
            seen |= inputs
    return False


def _weight_into_use(state: State, i: int) -> int | None:
    """A matrix product on an unnamed weight whose result goes straight into one parameter use
    of a leaf (or of a module applying its own parameter) that reads nothing else computed: a
    Linear's MatMul before its bias Add (a use that reads a parameter: fact B is about leaves that
    apply parameters, and a bias-free Linear's product feeds its caller's activation module, a
    leaf without any - LLaMA's `gate_proj` into `act_fn`; not a fused residual norm, which also reads the residual;
    not a norm op or another product: a leaf applies its weight once, and a norm normalizes its
    input before its parameters - SwiftFormer's depthwise conv, its BatchNorm folded in by the
    TorchScript exporter, before the pointwise conv)."""
    g, labels = state.graph, state.labels
    if len({labels[k] for k in g.readers[i]}) != 1:
        return None
    use = g.readers[i][0]
    if state.evidence[use] < 0 or g.op[use] in _NORM_OPS or g.op[use] in PRODUCTS:
        return None  # a norm normalizes first, a product is a weight applied again: another leaf's
    if not all(j == i or g.constant[j] for j in g.writers[use]):
        return None
    facts = g.facts
    if facts.parameters.isdisjoint(g.nodes[use].input) and facts.weights.isdisjoint(g.nodes[use].input):
        return None  # no parameter use: a leaf without parameters (an activation module) applies no weight
    owner = _single_leaf(state, {labels[use]})
    return owner if owner is not None else _own_parameter_use(state, use)


def _own_parameter_use(state: State, use: int) -> int | None:
    """The module of tagged node `use` when it reads a parameter of that module's own (not of a
    child): the module applies it itself, as a leaf does (`nn.MultiheadAttention`'s
    `in_proj_bias`, added after the MatMul on its `in_proj_weight`)."""
    module = state.evidence[use]
    path = state.tree.paths[module]
    own = any(name.rpartition(".")[0] == path for name in state.graph.nodes[use].input if name in state.graph.facts.parameters)
    return module if own and module != state.tree.root else None


def _gemm_wrap(state: State, i: int) -> int | None:
    """A Reshape/Flatten next to a tagged `Gemm` (2-D only: a Linear on N-D input is wrapped in
    a flatten before and a restore after) is the Gemm's leaf. A flatten with no restore after
    the Gemm is the caller's (a `Flatten` module before a classifier). A tool may merge the
    restore with a caller's next reshape; the merged node computes that caller's value (a split
    into heads: a higher rank than was flattened), and which caller the reshape alone does not
    say (BERT's attention splits heads right after its query; Swinv2's block reverses its
    windows after the attention's output module returned), so rule 2 leaves it. One flatten
    read by the Gemms of several Linears (onnxslim merges the equal flattens of q, k and v)
    flattens for each of them: their common caller's."""
    g, evidence, t = state.graph, state.evidence, state.tree
    named = {evidence[k] for k in g.readers[i] if g.op[k] == "Gemm"}
    if len(named) > 1:  # one flatten for several Linears (a tool merged their equal ones)
        return None if -1 in named else t.lca_all(named)  # one of them unnamed: their caller is unknown
    for k in g.readers[i]:
        if g.op[k] == "Gemm" and evidence[k] >= 0 and _single_leaf(state, {evidence[k]}) is not None:
            restored = any(g.op[r] in RESHAPES for r in g.readers[k])
            return evidence[k] if restored else t.parent(evidence[k])  # alone: a Flatten of the caller
    for j in g.writers[i]:
        if g.op[j] == "Gemm" and evidence[j] >= 0 and _single_leaf(state, {evidence[j]}) is not None:
            flattens = _flattens(state, j)
            if flattens and all(_reshaped_elsewise(state, f, i) for f in flattens):
                return None  # the restore merged with a reshape of some caller's: which one, the choices say
            return evidence[j]
    return None


def _flattens(state: State, gemm: int) -> list[int]:
    """The flattens a Linear's input went through: the one before the `Gemm`, or before an
    unbroken chain of 2-D ops on one computed value each - `Gemm`s and ops that keep their input's
    shape, a norm's scale and shift on constants included (onnxslim drops the restore and flatten
    between two Linears; onnx-simplifier flattens once and runs MobileBERT's bottleneck, its norms
    and projections, in 2-D)."""
    g = state.graph
    node = gemm
    for _ in range(_GEMM_CHAIN):
        writers = [w for w in g.writers[node] if not g.constant[w]]
        flattens = [w for w in writers if g.op[w] in RESHAPES]
        if flattens:
            return flattens
        if len(writers) != 1 or not _keeps_2d(g.op[writers[0]]):
            return []
        node = writers[0]
    return []


def _reshaped_elsewise(state: State, flatten: int, reshape: int) -> bool:
    """Whether `reshape`, after the Linear, gives its value another shape than `flatten` took
    from it: a restore gives the leading dimensions back (the last is the Linear's features), so
    a higher rank (a split into heads) or other recorded leading dimensions at the same rank
    (ConvBERT's kernel view) are a caller's reshape that a tool merged into the restore. A lower
    rank is not: the flatten may be the merged one (an attention's heads merged, then
    flattened for its output Linear, whose restore is its own)."""
    restored, flattened = _rank_out(state, reshape), _rank_in(state, flatten)
    if restored is None or flattened is None:
        return False
    if restored != flattened:
        return restored > flattened  # a lower rank: the flatten may be the merged one (heads merged, then flattened)
    shapes = state.graph.facts.reshaped
    before, after = shapes.get(_recorded_input(state, flatten, shapes)), shapes.get(state.graph.nodes[reshape].output[0])
    return before is not None and after is not None and before[:-1] != after[:-1]  # the last: the Linear's features


_SCALING = frozenset({"Add", "Sub", "Mul", "Div"})
"""Element-wise ops: on one computed value and constants (a norm's scale and shift), its rank."""


def _keeps_2d(op: str) -> bool:
    """An op whose result has its one computed input's rank (with constants beside it)."""
    return op == "Gemm" or op in SAME_SHAPE or op in _SCALING


def _recorded_input(state: State, node: int, recorded: Container[str]) -> str | None:
    """The node's first input if the file records it in `recorded`, else that of the value an op
    that keeps its input's shape (a norm, an activation, a cast) was applied to; None if none is."""
    g = state.graph
    for _ in range(_GEMM_CHAIN):
        name = g.nodes[node].input[0]
        if name in recorded:
            return name
        writer = next((w for w in g.writers[node] if name in g.nodes[w].output), None)
        if writer is None or g.op[writer] not in SAME_SHAPE:
            return None
        node = writer
    return None


def _rank_in(state: State, node: int) -> int | None:
    """The rank of a node's first input (`_recorded_input`)."""
    ranks = state.graph.facts.ranks
    name = _recorded_input(state, node, ranks)
    return None if name is None else ranks[name]


def _rank_out(state: State, node: int) -> int | None:
    view = state.graph.nodes[node]
    rank = state.graph.facts.ranks.get(view.output[0])
    if rank is None and len(view.input) > 1:
        rank = state.graph.facts.shape_lengths.get(view.input[1])
    return rank


def _diamonds(state: State) -> bool:
    """Rule 2's fork converging into a leaf, for every call of every leaf with parameter uses."""
    labels = state.labels
    leaves = _applying_parameters(state)
    decided = False
    for leaf, own, start in _calls(state, leaves) if leaves else ():
        for d in _diamond(state, leaf, own, start):
            if labels[d] < 0:
                labels[d] = leaf
                state.bounds[d] = leaf
                decided = True
    return decided


def _applying_parameters(state: State) -> set[int]:
    """The leaves some node of which, tagged by evidence, applies a parameter: a weighted op or a
    norm, or an op reading a parameter or a weight-like initializer. Fact B is about those: a leaf
    without parameters (an activation module) has no parameter use for ops to converge into, and
    a quantizer's fork (the product and its scale, joined before a ReLU) is not its work."""
    g, t = state.graph, state.tree
    held = g.facts.parameters | g.facts.weights
    found: set[int] = set()
    for i, label in enumerate(state.evidence):
        if label < 0 or label in found or not t.leaf[label] or label == t.root:
            continue
        if g.op[i] in PRODUCTS or g.op[i] in NORMS or not held.isdisjoint(g.nodes[i].input):
            found.add(label)
    return set(found)


def _diamond(state: State, leaf: int, own: list[int], start: int) -> set[int]:
    """The untagged nodes whose every result ends in the leaf's nodes, taken from the last value
    that forks into two of them (a decomposed norm's input) - when they read nothing else (an
    attention's probabilities also read the values: no diamond) and the fork is not another
    leaf's whole output. A value read by a `Shape` forks nothing: a dynamic reshape of it reads
    its shape wherever it runs."""
    g, t, labels = state.graph, state.tree, state.labels
    members = set(own)
    region = _converging(state, members, start)
    if not region:
        return region  # nothing converges into the leaf (most calls): no fork to look for
    fed = [k for k in members if not region.isdisjoint(g.writers[k])]
    if any(_feeds_weighted_op(state, k, members) for k in fed):
        return set()  # it converges into a matrix product's input: a Linear runs no reduction before it
    if any(g.op[k] in _NORM_OPS for k in fed) and any(g.op[r] in PRODUCTS for r in region):
        return set()  # a product into a norm op: the product is another leaf's
    if any(_looks_up(state, k, region) for k in members):
        return set()  # it converges into a lookup's indices: an Embedding's forward is the lookup alone
    entries = {w for r in region for w in g.writers[r]}
    inside = region | members
    forks = [f for f in region | entries if sum(1 for k in g.readers[f] if k in inside and g.op[k] not in SHAPE_READS) >= 2]
    if not forks:
        return set()
    fork = max(forks)
    diamond = _after(state, fork, region)
    if not all(w == fork or w in diamond or g.constant[w] for d in diamond for w in g.writers[d]):
        return set()
    other = labels[fork]
    if other >= 0 and other != leaf and t.leaf[other] and all(k in diamond for k in g.readers[fork]):
        return set()  # another leaf's whole output: post-processed by it, by the caller, or by this leaf
    return diamond


def _looks_up(state: State, k: int, region: set[int]) -> bool:
    """Whether leaf node `k` is a lookup in a stored table (a `Gather` of an initializer) at
    indices computed in `region`."""
    g = state.graph
    found = g.lookup(k)
    if found is None:
        return False
    table, indices = found
    stored = table in g.facts.parameters or table in g.facts.weights
    return stored and any(w in region and indices in g.nodes[w].output for w in g.writers[k])


def _feeds_weighted_op(state: State, k: int, members: set[int]) -> bool:
    """Whether leaf node `k` is a weighted op, or the flatten before one (a Linear on N-D input)."""
    g = state.graph
    if g.op[k] in WEIGHTED_OPS:
        return True
    readers = g.readers[k]
    return g.op[k] in RESHAPES and bool(readers) and all(r in members and g.op[r] in WEIGHTED_OPS for r in readers)


def _calls(state: State, members: Container[int]):
    """Each leaf's nodes split into calls: runs of tagged nodes with no other module's between.
    With each, the position before which its ops are not looked for: a leaf's ops lie close
    before its parameter use (`_LEAF_REACH` nodes bounds the walk; tools that group ops by
    type, like onnxruntime's quantizer, put other modules' tagged nodes in between)."""
    run: list[int] = []
    current = -1
    for i, label in enumerate(state.labels):
        if label < 0:
            continue
        if label != current:
            if current in members:
                yield current, run, run[0] - _LEAF_REACH
            current, run = label, []
        run.append(i)
    if current in members:
        yield current, run, run[0] - _LEAF_REACH


def _converging(state: State, own: set[int], start: int) -> set[int]:
    """Untagged nodes after `start` all of whose readers are in `own` or in the result (walked
    backwards; by fact A the leaf's stretch holds no other module's tagged node). When the leaf's
    own nodes already apply its weight (a product or a norm op), the walk stops at an op applying
    a weight the file does not name: a leaf applies one weight, so that op is the parameter use of
    a leaf of its own, which ran before this call, and so did all that feeds it (LeViT's attention
    before its projection's unnamed Linear and named BatchNorm). A leaf whose named nodes only add
    a bias may own the unnamed product before them (a quantized Linear's `MatMulInteger`)."""
    g, labels = state.graph, state.labels
    applies = any(g.op[i] in PRODUCTS or g.op[i] in NORMS for i in own)
    region: set[int] = set()
    frontier = [w for i in own for w in g.writers[i]]
    while frontier:
        w = frontier.pop()
        if w <= start or w in region or w in own or labels[w] >= 0 or g.constant[w]:
            continue
        if applies and (g.weighted[w] or g.normed[w]):
            continue
        readers = g.readers[w]
        if readers and all(k in region or k in own for k in readers):
            region.add(w)
            frontier.extend(g.writers[w])
    return region


def _after(state: State, fork: int, region: set[int]) -> set[int]:
    """The nodes of `region` reachable from `fork`."""
    g = state.graph
    found: set[int] = set()
    frontier = [k for k in g.readers[fork] if k in region]
    while frontier:
        k = frontier.pop()
        if k not in found:
            found.add(k)
            frontier.extend(r for r in g.readers[k] if r in region)
    return found


STEPS = Steps(decide=decide, sweep=_diamonds)
