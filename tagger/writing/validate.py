"""Structural checks of a model before its tags are written: what is refused, what is only noted.

Runs on the index's plain-Python node views (`tagger.model.index.NodeView`), after the tagging
decisions and before anything is written, so it costs one pass over names already read. It
ensures that:
1. a graph whose nodes form a cycle (main graph, control-flow body or model-local function) is
   refused with an `InputError` naming the nodes of one cycle. Nodes in order are confirmed by
   one linear pass; Kahn's algorithm runs only when some node reads a tensor produced later;
2. a string protobuf could not decode as UTF-8 (it hands those over as `bytes`) is refused with
   an `InputError` saying where: `diagnose` looks for one when tagging failed, and op types
   (which pass through tagging unread as text) are checked before a report shows them;
3. what the ONNX spec forbids but the tagger can live with is tagged and noted in the report:
   node inputs that nothing produces (dangling), nodes out of topological order, tensors
   produced more than once;
4. a model without nodes is valid: there is nothing to tag, and the report says so.
"""

from __future__ import annotations

from collections import deque
from itertools import chain

import onnx

from tagger.errors import InputError
from tagger.model.index import ModelIndex

__all__ = ["check_index", "diagnose", "diagnosis"]

_EXAMPLES = 3


def check_index(index: ModelIndex) -> list[str]:
    """Refuse a cycle in any graph; return report notes for what is only unusual."""
    if not index.nodes:
        return ["the model has no nodes: there is nothing to tag"]
    _check_op_types(index)
    defined: list[set[str]] = []
    dangling: list[str] = []
    unordered: list[str] = []
    twice = 0
    for graph_id in range(len(index.graphs)):
        names, late, count = _in_order_pass(index, graph_id)
        defined.append(names)
        twice += count
        if any(name in names for _, name in late):
            _refuse_cycle(index, graph_id)
            unordered.append(index.graph_label(graph_id))
        dangling += [
            f"{name!r} ({_where(index, graph_id, position)})"
            for position, name in late
            if name not in names and not _visible_outside(index, graph_id, name, defined)
        ]
    notes = []
    if dangling:
        notes.append(
            f"{_count(len(dangling), 'node input reads a tensor', 'node inputs read tensors')} that nothing produces "
            "(no graph input, initializer or node output): "
            f"{', '.join(dangling[:_EXAMPLES])}{', …' if len(dangling) > _EXAMPLES else ''}; "
            "those nodes are tagged from their other evidence"
        )
    if unordered:
        notes.append(
            f"nodes are not in topological order in {', '.join(unordered[:_EXAMPLES])}: "
            "inference assumes execution order, so tags there are less certain"
        )
    if twice:
        notes.append(f"{_count(twice, 'tensor is', 'tensors are')} produced more than once (the graph is not in SSA form)")
    return notes


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _check_op_types(index: ModelIndex) -> None:
    """Op types pass through tagging unread as text, then a report sorts and prints them."""
    if any(type(op) is not str for op in {view.op_type for view in index.views}):
        raise InputError(diagnosis(index.model) or "an op type is not valid UTF-8 (corrupt file?)")


def _in_order_pass(index: ModelIndex, graph_id: int) -> tuple[set[str], list[tuple[int, str]], int]:
    """One pass in node order: every name the graph defines (inputs, initializers, outputs), the
    inputs read before they are defined (position, name), and how many outputs redefine a name."""
    scope = index.graphs[graph_id]
    views = index.views
    defined = set(scope.inputs) | scope.initializers
    defined.add("")  # an omitted optional input or output
    late: list[tuple[int, str]] = []
    twice = 0
    for position, node_id in enumerate(scope.node_ids):
        view = views[node_id]
        if not defined.issuperset(view.input):
            late += [(position, name) for name in view.input if name not in defined]
        if not defined.isdisjoint(view.output):
            twice += sum(1 for name in view.output if name and name in defined)
        defined.update(view.output)
    defined.discard("")
    return defined, late, twice


def _visible_outside(index: ModelIndex, graph_id: int, name: str, defined: list[set[str]]) -> bool:
    """A control-flow body may read any name of the graphs around it."""
    scope = index.graphs[graph_id]
    while scope.kind == "subgraph" and scope.owner is not None:
        graph_id = index.graph_of[scope.owner]
        if name in defined[graph_id]:
            return True
        scope = index.graphs[graph_id]
    return False


def _refuse_cycle(index: ModelIndex, graph_id: int) -> None:
    """Kahn's algorithm over one graph; raise naming one cycle if some nodes never become ready."""
    node_ids = index.graphs[graph_id].node_ids
    views = index.views
    producers: dict[str, list[int]] = {}
    for position, node_id in enumerate(node_ids):
        for name in views[node_id].output:
            if name:
                producers.setdefault(name, []).append(position)
    predecessors = [{p for name in set(views[node_id].input) for p in producers.get(name, ())} for node_id in node_ids]
    successors: list[list[int]] = [[] for _ in node_ids]
    for position, before in enumerate(predecessors):
        for p in before:
            successors[p].append(position)
    waiting = [len(before) for before in predecessors]
    ready = deque(position for position, count in enumerate(waiting) if count == 0)
    done = 0
    while ready:
        position = ready.popleft()
        done += 1
        for after in successors[position]:
            waiting[after] -= 1
            if waiting[after] == 0:
                ready.append(after)
    if done == len(node_ids):
        return
    cycle = _one_cycle(predecessors, {p for p, count in enumerate(waiting) if count > 0})
    shown = " -> ".join(_node_text(index, node_ids[p], p) for p in cycle[:6]) + (" -> …" if len(cycle) > 6 else "")
    raise InputError(f"graph {index.graph_label(graph_id)} is not a DAG: its nodes form a cycle ({shown} -> back to the first)")


def _one_cycle(predecessors: list[set[int]], stuck: set[int]) -> list[int]:
    """Walk back through predecessors that never became ready until a node repeats."""
    position = min(stuck)
    seen: dict[int, int] = {}
    path: list[int] = []
    while position not in seen:
        seen[position] = len(path)
        path.append(position)
        position = min(p for p in predecessors[position] if p in stuck)
    return list(reversed(path[seen[position] :]))


def _node_text(index: ModelIndex, node_id: int, position: int) -> str:
    view = index.views[node_id]
    return f"#{position} {view.op_type!r} {view.name!r}"


def _where(index: ModelIndex, graph_id: int, position: int) -> str:
    return f"read by {_node_text(index, index.graphs[graph_id].node_ids[position], position)} of {index.graph_label(graph_id)}"


def diagnose(model: onnx.ModelProto) -> None:
    """After tagging failed: raise an `InputError` if the model holds a string protobuf could not
    decode (return quietly otherwise: the failure stays an internal error)."""
    message = diagnosis(model)
    if message is not None:
        raise InputError(message)


def diagnosis(model: onnx.ModelProto) -> str | None:
    """Where the first string protobuf could not decode as UTF-8 is, if there is one."""
    for where, text in _model_strings(model):
        if type(text) is not str:
            return f"invalid UTF-8 string {text[:60]!r} in {where} (corrupt file?)"
    return None


def _model_strings(model: onnx.ModelProto):
    for prop in model.metadata_props:
        yield "model metadata", prop.key
        yield "model metadata", prop.value
    graphs = [("main graph", model.graph)]
    for function in model.functions:
        yield "a function", function.name
        yield "a function", function.domain
        yield from (("a function", name) for name in (*function.input, *function.output))
        yield from _node_strings(f"function {function.name!r}", function.node, graphs)
    while graphs:
        label, graph = graphs.pop()
        for value in chain(graph.input, graph.output, graph.value_info):
            yield label, value.name
        for tensor in graph.initializer:
            yield label, tensor.name
        yield from _node_strings(label, graph.node, graphs)


def _node_strings(label: str, nodes, graphs: list):
    for position, node in enumerate(nodes):
        where = f"node #{position} of {label}"
        yield where, node.name
        yield where, node.op_type
        yield where, node.domain
        yield from ((where, name) for name in (*node.input, *node.output))
        for prop in node.metadata_props:
            yield where, prop.key
            yield where, prop.value
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                graphs.append((f"a body of {where}", attribute.g))
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                graphs.extend((f"a body of {where}", g) for g in attribute.graphs)
