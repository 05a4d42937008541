"""Rules 4-6: what the certain rules left open. Rules 4 and 5 are choices (a module deeper than the
bound); rule 6, the bound itself, is certain. They rest on fact A (`flows.py`: the bound, the
next tagged node) and fact B (`leaf.py`: a weighted op is a leaf's).

  4. A node fed by a single module runs in that module's caller (the parent of a leaf, past module
     lists, which run no op) while the caller is still running: the next tagged node is inside it,
     or the node's result goes no further than the caller's caller (not when the producer is a
     list entry's own op and the result goes past the list: after an entry the list's caller
     takes the running value on). Not for a node that adds an
     unnamed weight-like initializer (a folded parameter or buffer, not a weighted op's own
     weight): it brings in data of a module the file does not name, not only the producer's
     result; nor for a node reading one of the model's arguments (data from outside every module:
     a post-LN layer's residual join of its input with its attention's output). A weighted op on
     a module's result (its weight a leaf's of its own) is put in the producer's caller only when
     the next tagged node is inside it, not because its result goes to a sibling (a
     cross-attention's k/v projections on an encoder's output or its final norm's, hoisted next
     to it) - except after a list entry's leaf (below). Nor, after the
     last tagged node, from the first weighted op on: its weight is a leaf's of its own, and
     nothing after it says the producer's caller is still running (an output head on a tied or
     transposed weight runs after the model body, in another module; in a fresh export whose
     merged parameters name nothing, the whole body does). Likewise, anywhere in the graph, the
     result's going no further than the caller's caller does not count for a node behind an
     untagged weighted op (in dataflow, between it and its producer): it reads the output of a
     leaf the file does not name (fact B), which may run anywhere in the bound, so nothing says
     the producer's caller is still running (a fresh export naming only the embedding and the
     pooler: the whole encoder in between is no longer the embeddings'; a norm op applying a
     weight the file does not name - a fresh export's merged norm parameters - is such a leaf's
     work too, and past it with nothing named after, nothing says the caller runs on either:
     BertModel's mask work on its embeddings' output). Except when that caller
     is an entry of a module list: the list's caller only hands the running value from entry to
     entry (rule 4a), so what follows an entry's named leaf up to the next entry is that entry's
     or the next one's (a LLaMA layer's MLP on unnamed weights after its named norm) - unless the
     value goes into an entry of another list (below: the next module is that entry). Nor for a
     node reading a value its producer's caller has already handed out (a tagged node outside the
     caller reads it too): a module hands its caller only what it returns, so the node may read
     it after the return, in the caller's caller (BertModel takes the shape of its embeddings'
     output to build the mask of a dynamic-shape export). Nor for a node reading its producer's
     value only through its shape (a `Shape` and what is computed from it, beside values no
     tagged node made): a shape is read wherever the value is held (ALBERT's and CLIP's masks,
     built from their embeddings' output shape); a shape taken to reshape that same value goes
     with the reshape (`shape_reads.shapes_with_their_reshape`). Nor past a list entry's own op or its
     leaf's output toward another entry of the list: the list's caller hands the value from
     entry to entry (a node between nn.TransformerEncoderLayer's norm2 and the next layer).
     Likewise the result's going no further does not count for a node ahead of an unnamed
     leaf's work (in dataflow, between it and its nearest tagged consumers: a product or a norm
     on an unnamed weight, an op computing with an unnamed weight-like initializer): it prepares
     the input of a module the file does not name, which may run anywhere in the bound
     (PoolFormer's GroupNorm, its scale folded, after the patch embedding's conv; LeViT's
     attention before its projection's unnamed Linear) - except after a list entry, whose
     caller hands the value to the next entry or returns it, unless the value goes into an
     entry of another list (PoolFormer's encoder zips its patch embeddings with its blocks).
     In a file whose order says nothing (`Graph.ordered`) there is no next tagged node, and
     nothing else says the caller is still running past an unnamed leaf's work: a node behind or
     ahead of one is left to rules 5 and 6, list entry or not (a fresh PVT's first attention,
     after onnxruntime's quantizer re-sorted the file, went to the patch embedding before it).
  5. A node that reads nothing tagged inside its bound (it works on values passed in, like a
     mask) and whose nearest tagged consumers are one module that has already started (the next
     tagged node is inside it) prepares their input inside it (in its caller, if a leaf). A node
     fed from inside the bound is left to rule 6: its producer's module may still be running.
     Nor a node ahead of an untagged weighted op (between it and those consumers): it prepares
     the input of a leaf the file does not name, whose place is unknown (an attention mask
     reaching the pooler only through the encoder's unnamed projections is not the pooler's);
     nor one ahead of an untagged join of two modules' values (fact C): it feeds the join,
     whose place rule 6 leaves at the bound.
  6. Otherwise the bound - widened to include the consumers when the node depends on nothing
     tagged and feeds nothing inside the bound (a tool moved a mask computation).

Out of reach (ResNet after a strip: best 74.1%, every miss sound): a chain of parameter-free ops
between one module's last tagged node and the next module's first (stem Conv -> Relu -> MaxPool
-> first block; a block's last Relu before the next stage; ReduceMean -> Flatten -> classifier)
may be split anywhere on the tree path between the two, and real libraries split the same graph
differently (torchvision's stem relu and maxpool are children of the model itself and it
flattens in the model's own forward; transformers' ResNet has them in `embedder` and
`classifier.0`): only the bound is certain,
and a deeper choice is wrong for one of them.

A node made of graph inputs alone, shared by separate stretches and out of place (fact A in
`flows.py`), goes, as a choice, to the lowest module holding every tagged node (`_moved_and_shared`);
not in a file a tool sorted breadth-first (`tagger.model.producers`), where no place is where a
node ran: there the first op of the model's main chain reads as such a value (EfficientNet's
stem padding, read by every block through the unnamed stem, went to the encoder, the lowest
module holding the only named ones).
`settle` marks a tool's fused op a choice (`_fused_ops_uncertain`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tagger.infer import shape_reads
from tagger.infer.flows import bound as bound_of
from tagger.infer.state import State, Steps

__all__ = ["STEPS"]


@dataclass
class _Memo:
    """What one pass remembers: `_moved_and_shared`'s verdicts, by (consumers' module, first and
    last consumer), and the lowest module holding every tagged node (`_holder_of_all`)."""

    stretches: dict[tuple[int, int, int], bool] = field(default_factory=dict)
    holder: int | None = None


def _choices_pass(state: State, certain_labels: list[int]) -> None:
    """Rules 4-6 on what the facts left open (flows read the joins of rule 4a; the order's
    neighbours only what is certain)."""
    labels = state.labels
    up, origins = state.flow.up(labels)
    down, users = state.flow.down(labels)
    before, after = state.flow.neighbours(certain_labels)
    t = state.tree
    result = list(labels)
    cut = _tail_cut(state, after)
    memo = _Memo()
    behind, ahead = _unnamed_leaves(state, labels)
    joined = _joins_ahead(state, labels, up)
    shapes = shape_reads.shape_only(state, labels, up)
    for i, label in enumerate(labels):
        if label >= 0:
            continue
        bound = bound_of(state, i, before, after, up, down)
        nxt = after[i] if state.ordered else -1
        tail = state.ordered and nxt < 0 and i >= cut
        leaves = (behind[i], ahead[i], joined[i])
        module, certain = _choose(state, i, up[i], down[i], nxt, bound, tail, leaves, origins, shapes[i])
        result[i] = module
        state.bounds[i] = bound if t.within(module, bound) else module
        state.certain[i] = certain
        if state.ordered and not up[i] and down[i]:  # made of graph inputs alone: a tool may have moved it
            if state.order_bounds and _moved_and_shared(state, memo, i, before, after, down[i], users[i]):
                result[i] = module = _holder_of_all(state, memo, labels)
            state.bounds[i], state.certain[i] = t.root, module == t.root
    shape_reads.shapes_with_their_reshape(state, result, shapes)
    state.labels[:] = result


def _moved_and_shared(state: State, memo: _Memo, i: int, before, after, consumed, users: tuple[int, ...]) -> bool:
    """Whether a node made of graph inputs alone has a result shared by separate stretches
    (`_shared`) and a position that cannot be where it ran: its tagged consumers lie outside
    the stretch it sits in (a tool moved it), or it sits inside its consumers' module, which
    cannot compute in one stretch what another stretch of it reads. Such a value exists
    before the first of them, computed by whichever module received the graph inputs
    (BertModel builds the mask every layer reads); its consumers do not say which, nor does
    its position: only the root is certain (onnxruntime's optimizer moves a dynamic-shape
    BERT's mask chain into the first layer, and ALBERT's into its shared layer)."""
    t = state.tree
    b, a = before[i], after[i]
    here = t.lca(b, a) if b >= 0 and a >= 0 else t.root
    reach = t.lca_all(consumed)
    if all(t.within(m, here) for m in consumed) and not t.within(here, reach):
        return False  # its position holds its consumers, from outside them: not moved
    return _shared(state, memo, reach, consumed, users)


def _holder_of_all(state: State, memo: _Memo, labels: list[int]) -> int:
    """The lowest module holding every tagged node of the graph (memoised per pass)."""
    if memo.holder is None:
        memo.holder = state.tree.lca_all({label for label in labels if label >= 0})
    return memo.holder if memo.holder >= 0 else state.tree.root


def _shared(state: State, memo: _Memo, reach: int, consumed, users: tuple[int, ...]) -> bool:
    """Whether the tagged consumers `users` (in modules `consumed`, below `reach`) lie in
    separate stretches: two entries of a module list, or two calls of one module (a tagged
    node outside `reach` lies between the first and the last of them)."""
    t = state.tree
    if len(consumed) > 1 and t.is_sequence(reach):
        return True
    key = (reach, min(users), max(users))
    found = memo.stretches.get(key)
    if found is None:
        span = np.asarray(state.labels[key[1] : key[2] + 1])
        found = any(not t.within(int(m), reach) for m in np.unique(span[span >= 0]))
        memo.stretches[key] = found
    return found


def _tail_cut(state: State, after) -> int:
    """The first weighted op after the last tagged node (or the end): from there on, the work
    of a leaf the file does not name has run, so nothing says the last named module's caller
    is still running."""
    weighted = state.graph.weighted
    for i in range(len(weighted)):
        if after[i] < 0 and weighted[i]:
            return i
    return len(weighted)


def _unnamed_leaves(state: State, labels: list[int]) -> tuple[list[bool], list[bool]]:
    """Per node, whether an untagged weighted op (or a norm op applying an unnamed weight: a
    fresh export's merged norm parameters; or any op computing with an unnamed weight-like
    initializer: a GroupNorm's folded scale, a layer scale) lies between it and its nearest
    tagged producers (behind), and between it and its nearest tagged consumers (ahead), in
    dataflow through untagged nodes. Such an op is the work of a module the file does not name
    (fact B: an op applying a parameter is that parameter's module's), which may run anywhere
    inside the bound: behind it a node reads that module's output, not its producer's; ahead of
    it a node prepares that module's input, not only its tagged consumers'. A `Concat` placing a
    stored tensor beside the value (a class token) computes nothing with it and counts as none."""
    count = len(labels)
    graph = state.graph
    weights = graph.facts.weights
    applied = [
        not w and node.op_type != "Concat" and not weights.isdisjoint(node.input)
        for w, node in zip(graph.weighted, graph.nodes, strict=True)
    ]
    leaves = [
        (w or n or a) and label < 0 for w, n, a, label in zip(graph.weighted, graph.normed, applied, labels, strict=True)
    ]
    if not any(leaves):
        return [False] * count, [False] * count  # every weighted op on an unnamed weight is tagged
    return _reach(state.graph.writers, leaves, labels, range(count)), _reach(
        state.graph.readers, leaves, labels, range(count - 1, -1, -1)
    )


def _joins_ahead(state: State, labels: list[int], up) -> list[bool]:
    """Per untagged node, whether an untagged join lies between it and its nearest tagged
    consumers: a node whose nearest tagged producers are two modules or more (fact C: it belongs
    to neither). What reaches the consumers through it is the join's input, placed with the join,
    not an input the consumers' module prepares (the shape BERT's self-attention reshapes its
    context to, joined with that context, before the output Linear reads it)."""
    joins = [label < 0 and flow is not None and len(flow) > 1 for label, flow in zip(labels, up, strict=True)]
    if not any(joins):
        return [False] * len(labels)
    return _reach(state.graph.readers, joins, labels, range(len(labels) - 1, -1, -1))


def _reach(links, leaves: list[bool], labels: list[int], order) -> list[bool]:
    """Per untagged node, whether a `leaves` node lies among its `links` (writers or readers),
    through untagged nodes only; `order` visits every node after its links."""
    found = [False] * len(labels)
    past = list(leaves)  # a leaf, or an untagged node with a leaf beyond it
    for i in order:
        if labels[i] < 0:
            for j in links[i]:
                if past[j]:
                    found[i] = past[i] = True
                    break
    return found


def _brings_data(state: State, i: int) -> bool:
    """A non-weighted op reading an unnamed weight-like initializer (a folded parameter or
    buffer), or one of the model's arguments: it does not only carry its producer's result on,
    it adds data of a module the file does not name, or from outside every module (a residual
    join of a layer's input with its attention's output)."""
    g = state.graph
    inputs = g.nodes[i].input
    return (not g.weighted[i] and not g.facts.weights.isdisjoint(inputs)) or not g.facts.arguments.isdisjoint(inputs)


def _choose(
    state: State,
    i: int,
    produced,
    consumed,
    nxt: int,
    bound: int,
    tail: bool = False,
    leaves: tuple[bool, bool, bool] = (False, False, False),
    origins=None,
    shape_only: bool = False,
) -> tuple[int, bool]:
    """Rules 4-6 for one node; `leaves`: whether an unnamed leaf's weighted op lies behind it
    and ahead of it (`_unnamed_leaves`), and an untagged join ahead of it (`_joins_ahead`);
    `origins`: every node's nearest tagged producers; `shape_only`: whether it reads them only
    through their shape (`shape_reads.shape_only`)."""
    behind, ahead, joined = leaves
    t = state.tree
    inside = [m for m in produced if t.within(m, bound)] if produced else []
    if len(inside) == 1 and len(produced) == 1 and not _brings_data(state, i):  # rule 4
        module = inside[0]
        caller = t.parent(module) if t.leaf[module] else module
        # a product: its weight is a leaf's of its own (fact B); after a list entry's leaf, the
        # list's caller only hands the value on, so what follows up to the next entry is the entry's
        weighted = state.graph.weighted[i] and (caller == module or not _list_entry(state, caller))
        own = caller == module and not t.leaf[module]  # the module's own op, not a child's
        entry = _list_entry(state, caller)
        unplaced = not state.ordered and (behind or ahead)  # no order says the caller still runs
        handed_on = entry and not _into_another_list(state, caller, consumed)  # to the list's next entry
        behind = behind and not handed_on
        prepares = ahead and not handed_on
        returned = _handed_out(state, i, origins, caller)
        tail = tail or ((behind or shape_only) and nxt < 0)  # nothing named after: nothing says it runs on
        next_only = weighted or behind or prepares or returned or shape_only
        ends_entry = own or t.leaf[module]  # the caller's own op, or its child leaf's output
        if not unplaced and _still_open(state, caller, nxt, consumed, tail, next_only, own, ends_entry) and t.within(caller, bound):
            return caller, caller == bound
    if consumed and len(consumed) == 1 and not inside and not ahead and not joined:  # rule 5
        (module,) = consumed
        target = t.parent(module) if t.leaf[module] else module
        if (nxt < 0 or t.within(nxt, target)) and t.within(target, bound):
            return target, target == bound
    if not produced and consumed and not any(t.within(m, bound) for m in consumed):  # rule 6, widened
        return t.lca(bound, t.lca_all(consumed)), True
    return bound, True


def _handed_out(state: State, i: int, origins, caller: int) -> bool:
    """Whether a value node `i` reads (its tagged producer's, or what an input carries on from it) has
    left `caller`: a module hands its caller only its return values, so node `i` may read it
    after the return, in the caller's caller (BertModel takes the embeddings' output's shape to
    build the mask of a dynamic-shape export). A value has left `caller` when a tagged node
    outside it reads the value, or when a join reads it together with the value of a tagged node
    outside `caller` that ran after `i`'s producer: while `caller` runs, only its own subtree's
    ops run, so it had returned before that node (fact A's order), and the join after it
    (EfficientNet's squeeze-and-excitation scales its block's activation, Wav2Vec2's encoder adds
    its positional conv to the projection's output: neither is the producer's caller's)."""
    labels, readers, t = state.labels, state.graph.readers, state.tree
    mine = origins[i] or ()
    carried = [w for w in state.graph.writers[i] if labels[w] < 0 and origins[w]]  # the producer's value on its way
    values = set(mine).union(carried)
    last = max(mine, default=-1)
    for v in values:
        for r in readers[v]:
            if r == i:
                continue
            if labels[r] >= 0:
                if not t.within(labels[r], caller):
                    return True
            elif state.ordered and any(q > last and not t.within(labels[q], caller) for q in origins[r] or ()):
                return True
    return False


def _still_open(
    state: State,
    module: int,
    nxt: int,
    consumed,
    tail: bool = False,
    next_only: bool = False,
    own: bool = False,
    ends_entry: bool = False,
) -> bool:
    """Whether `module` may still be running: the next tagged node is inside it, or the node's
    result goes no further than its caller (it is the module's own output). After the last
    tagged node of an ordered graph nothing says the module is still running, so
    only the second reason counts from the first weighted op on (`tail`): its weight belongs to a
    leaf of its own, and an output head whose weight the file does not name (a tied or
    transposed `lm_head`) runs after the last named module, in another one; so does a whole
    model body whose names a merge left on one module (a fresh export: `merged_parameters`).
    With `next_only` only the first reason counts (a product on a container's result, a
    node behind an unnamed leaf's weighted op: `_unnamed_leaves`, or one reading a value its
    producer's caller already returned: `_handed_out`)."""
    t = state.tree
    if (nxt < 0 and not tail) or (nxt >= 0 and t.within(nxt, module)):
        return True
    if next_only or not consumed or module == t.root:
        return False
    users = t.lca_all(consumed)
    if own and _leaves_its_list(state, module, users):
        return False
    if ends_entry and _list_entry(state, module) and _another_entry(state, module, users):
        return False  # the next entry's: the list's caller hands the value from entry to entry
    return t.within(users, t.parent(module))


def _list_entry(state: State, module: int) -> bool:
    """Whether `module` is an entry of a module list."""
    holder = state.tree.paths[module].rpartition(".")[0]
    return bool(holder) and state.tree.is_sequence(state.tree.id(holder))


def _into_another_list(state: State, entry: int, consumed) -> bool:
    """Whether the value goes from list entry `entry` into an entry of another module list (one
    of its nearest tagged consumers lies in one): its caller runs more than one list (PoolFormer's
    encoder zips its patch embeddings with its blocks), so the hand-off is from one list to the
    other, not from entry to entry."""
    t = state.tree
    holder = t.paths[entry].rpartition(".")[0]
    for module in consumed or ():
        while module != t.root and not t.within(entry, module):
            if _list_entry(state, module):
                if t.paths[module].rpartition(".")[0] != holder:
                    return True
                break
            module = t.parent(module)
    return False


def _another_entry(state: State, entry: int, users: int) -> bool:
    """Whether `users` may lie in another entry of the list that holds `entry`: inside the list
    and not inside `entry`. Users at the list itself count: the list runs no op, so a node tagged
    with it ran in some entry (a later read of a merged clone's weight, `evidence.clones`)."""
    t = state.tree
    holder = t.id(t.paths[entry].rpartition(".")[0])
    return t.within(users, holder) and not t.within(users, entry)


def _leaves_its_list(state: State, module: int, users: int) -> bool:
    """Whether `module` is an entry of a module list and `users` lie outside that list: after
    an entry the list's caller takes the running value on, so a node between the entry's
    last tagged node and a module after the list may as well be that caller's or open that
    module (Swin's patch merging slices the last block's output)."""
    t = state.tree
    holder = t.paths[module].rpartition(".")[0]
    if not holder:
        return False
    lists = t.id(holder)
    return t.is_sequence(lists) and not t.within(users, lists)


def _fused_ops_uncertain(state: State) -> None:
    """A tool's fused op (a non-standard domain: onnxruntime's `SkipLayerNormalization`) sits
    where its first op was but may compute a later module's ops too: facts A and C, which
    read one node as one op, bound nothing about it. Its inferred tag stays, as a choice."""
    root, labels = state.tree.root, state.labels
    for i in [i for i, node in enumerate(state.graph.nodes) if node.domain and node.domain != "ai.onnx"]:
        if state.evidence[i] < 0 and labels[i] >= 0:
            state.bounds[i], state.certain[i] = root, labels[i] == root


STEPS = Steps(choose=_choices_pass, settle=_fused_ops_uncertain)
