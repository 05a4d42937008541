"""`tagger nodes MODEL --module PATH`: a module's node names, in the form onnxruntime's quantizers take.

`onnxruntime.quantization.quantize_dynamic` and `quantize_static` take `nodes_to_exclude` and
`nodes_to_quantize` as lists of node names and match them on `node.name`. The rules:

1. **Selection.** The nodes of `module` and everything below it (`""`: the whole model), or the
   nodes whose `hierarchy.tag` matches the glob `tag`: the rule of `extract` (`tagger.commands.selection`),
   on the tags the file holds, or decided in memory when a node has none (`tagger.commands.nodetags`).
   `op_types` keeps the nodes of those op types. A selection without nodes, or an op type neither
   the model nor ONNX has (`Matmul`), is an `InputError` (exit 2) naming what is near it.
2. **Listed.** Each name once, in the model's node order: main graph, then If/Loop/Scan bodies
   (onnxruntime quantizes a body only with `extra_options={"EnableSubgraph": True}` in the
   QOperator format, the format of `quantize_dynamic`, and then matches its nodes by the same
   names; the QDQ format never quantizes bodies).
3. **Not listed, counted.** A node without a name (an empty name in `nodes_to_exclude` would
   match every unnamed node of the model, inside the module or not); a node inside a model-local
   function (the quantizers never look into functions). The text listing also leaves out names
   holding control characters (escaped they would match nothing; `--json` has them exactly).
4. **Said.** `notes()` gives one line per caveat: nodes left out (rule 3); listed names that
   nodes outside the selection bear too (the quantizers would treat those alike); listed nodes
   in bodies; and listed nodes whose tag is chosen (`tagger.reporting.certainty`): their membership rests
   on the tagger's choices, which `--reference` or `--modules` replace with evidence.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from tagger.commands.nodetags import ModelTags, NodeTag, model_tags
from tagger.commands.options import check_names
from tagger.commands.selection import not_selected, selects
from tagger.errors import InputError, ParameterError, param
from tagger.model.index import ModelIndex
from tagger.model.modelio import load_model
from tagger.text import spelled, terminal
from tagger.transfer.module_tree import read_module_tree

__all__ = ["ListedNode", "NodeList", "module_nodes"]


@dataclass(frozen=True)
class ListedNode:
    """One listed node: its name (what the quantizers match), op type, graph, tag and its kind."""

    name: str
    op_type: str
    graph: str
    """`main`, or the body as its owner and attribute (`If optimum::if/then_branch`)."""
    module: str
    tag: str
    kind: str
    """`direct`, `certain`, `chosen` or `fallback` (`tagger.reporting.certainty`)."""


@dataclass
class NodeList:
    """The nodes of one selection that the quantizers can be given, and what was left out."""

    model: str
    selection: str
    """`module m.encoder.layer.0`, `module (root)` or `tag /BertModel/*`."""
    op_types: list[str] | None
    nodes: list[ListedNode]
    unnamed: int = 0
    """Selected nodes without a name (not listed)."""
    in_functions: int = 0
    """Selected nodes inside model-local functions (not listed)."""
    shared_names: list[str] = field(default_factory=list)
    """Listed names that a node outside the selection bears too."""
    retagged: bool = False
    """The tags were decided in memory (a node of the file had none)."""

    @property
    def names(self) -> list[str]:
        """Every listed name once, in node order: `nodes_to_exclude=...names`."""
        return list(dict.fromkeys(node.name for node in self.nodes))

    @property
    def chosen(self) -> int:
        return sum(node.kind == "chosen" for node in self.nodes)

    @property
    def unprintable(self) -> list[str]:
        """Names a terminal listing would show escaped (`tagger.text.terminal`): left out of `to_text`."""
        return [name for name in self.names if terminal(name) != name]

    def to_text(self) -> str:
        """One name per line (the printable ones), nothing else: `nodes_to_exclude=open(f).read().splitlines()`."""
        return "".join(f"{name}\n" for name in self.names if terminal(name) == name)

    def to_dict(self) -> list[dict]:
        return [asdict(node) for node in self.nodes]

    def to_json(self) -> str:
        """A JSON list, one object per listed node (`name`, `op_type`, `graph`, `module`, `tag`, `kind`)."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def notes(self, text: bool = True) -> list[str]:
        """One line per caveat (module docstring, rule 4), for stderr; `text`: the listing is the text one."""
        lines = self._left_out(text)
        if self.shared_names:
            shared = _count(len(self.shared_names), "listed name", "also names", "also name")
            lines.append(
                f"warning: {shared} nodes outside {self.selection} (first: {terminal(self.shared_names[0])}): "
                "the quantizers match by name and treat those alike"
            )
        bodies = sum(node.graph != "main" for node in self.nodes)
        if bodies:
            lines.append(
                f"note: {_count(bodies, 'listed node', 'lies', 'lie')} in If/Loop/Scan bodies: quantize_dynamic "
                "(QOperator) quantizes bodies, and excludes these names there, only with "
                "extra_options={'EnableSubgraph': True}; QDQ never quantizes bodies"
            )
        if self.chosen:
            how = "give" if self.retagged else "retag MODEL with"
            lines.append(
                f"warning: {self.chosen} of the {len(self.nodes)} listed nodes are in {self.selection} by the tagger's choice "
                f"(chosen tags), not by evidence: {how} {param('reference')} ORIG.onnx or {param('modules')} FILE to decide them "
                "from evidence"
            )
        if not self.nodes and self.op_types:
            lines.append(f"note: no listable node of {self.selection} has op type {', '.join(self.op_types)}")
        return [terminal(spelled(line)) for line in lines]

    def _left_out(self, text: bool) -> list[str]:
        lines = []
        if self.unnamed:
            lines.append(
                f"warning: {_count(self.unnamed, 'node', 'has', 'have')} no name and {_verb(self.unnamed, 'is', 'are')} not "
                f"listed ({self.selection}): the quantizers match nodes by name, so it takes names to exclude or choose them"
            )
        if self.in_functions:
            lines.append(
                f"note: {_count(self.in_functions, 'node', 'lies', 'lie')} inside model-local functions, not listed "
                f"({self.selection}): the quantizers never quantize inside functions"
            )
        if text and self.unprintable:
            lines.append(
                f"warning: {_count(len(self.unprintable), 'name', 'holds', 'hold')} control characters, not printed "
                f"(escaped, they would match nothing): {param('json')} lists them exactly"
            )
        return lines


def _count(n: int, word: str, one: str = "", many: str = "") -> str:
    """`1 node has`, `2 nodes have`: a count, its noun and a verb that agrees."""
    text = f"{n} {word}" if n == 1 else f"{n} {word}s"
    return f"{text} {_verb(n, one, many)}" if one else text


def _verb(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def module_nodes(
    model: str | os.PathLike,
    module: str | None = None,
    tag: str | None = None,
    op_types: str | Collection[str] | None = None,
    reference: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    modules: str | os.PathLike | None = None,
) -> NodeList:
    """The names of the nodes of `module` (dotted path, `""` = the whole model) and below, or of
    the nodes whose `hierarchy.tag` matches the glob `tag`, for onnxruntime's quantizers
    (`quantize_dynamic(..., nodes_to_exclude=module_nodes(path, "m.encoder.layer.0").names)`);
    `op_types` (a list, or names separated by commas) keeps those op types. Untagged models are tagged in memory, with `reference`,
    `weights` and `modules` as for `retag`. See the module docstring for the rules."""
    from tagger.api import transfer_sources

    if (module is None) == (tag is None):
        raise InputError(f"give exactly one of {param('module')} PATH or {param('tag')} PATTERN")
    for name, value in (("module", module), ("tag", tag)):
        if value is not None and not isinstance(value, str):
            raise ParameterError(name, f"must be a string, got {value!r}")
    op_types = check_names("op_types", op_types)  # "MatMul,Gemm" or a list
    source = Path(model)
    proto = load_model(source)
    tree = None if modules is None else read_module_tree(modules)
    tags = model_tags(proto, transfer_sources(reference, weights, source.parent), source.parent, tree)
    selected = [i for i, node in enumerate(tags.nodes) if selects(node.module, node.tag, module, tag)]
    if not selected:
        raise InputError(not_selected((n.module for n in tags.nodes), (n.tag for n in tags.nodes), module, tag))
    wanted = _op_types(tags.nodes, op_types, source.name)
    if wanted is not None:
        selected = [i for i in selected if tags.nodes[i].op_type in wanted]
    label = f"tag {tag}" if module is None else (f"module {module}" if module else "module (root)")
    return _listing(tags, selected, label, sorted(wanted) if wanted is not None else None, source.name)


def _op_types(nodes: list[NodeTag], op_types: Collection[str] | None, name: str) -> set[str] | None:
    """The op types asked for. One the model lacks is fine when ONNX defines it (`MatMul,Gemm,Conv`
    fits any model); otherwise it is refused, with a close spelling (`Matmul`: MatMul)."""
    if op_types is None:
        return None
    present = sorted({node.op_type for node in nodes})
    for op_type in op_types:
        if op_type not in present and not onnx.defs.has(op_type):
            known = present + sorted({schema.name for schema in onnx.defs.get_all_schemas()} - set(present))
            close = difflib.get_close_matches(op_type, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise InputError(f"no node of {name} has op type {op_type!r}, and ONNX defines no such operator{hint}")
    return set(op_types)


def _listing(tags: ModelTags, selected: list[int], label: str, op_types: list[str] | None, name: str) -> NodeList:
    in_function = _function_graphs(tags.index)
    result = NodeList(name, label, op_types, [], retagged=tags.retagged)
    for i in selected:
        node = tags.nodes[i]
        if tags.index.graph_of[i] in in_function:
            result.in_functions += 1
        elif not node.name:
            result.unnamed += 1
        else:
            result.nodes.append(ListedNode(node.name, node.op_type, node.graph, node.module, node.tag, node.kind))
    listed = set(result.names)
    inside = set(selected)
    outside = (node for i, node in enumerate(tags.nodes) if i not in inside and tags.index.graph_of[i] not in in_function)
    shared = {node.name for node in outside if node.name in listed}
    result.shared_names = [n for n in result.names if n in shared]
    return result


def _function_graphs(index: ModelIndex) -> set[int]:
    """The graphs inside model-local functions: function bodies and the bodies nested in them."""
    found: set[int] = set()
    for graph_id, scope in enumerate(index.graphs):  # an owner's graph comes before its bodies
        if scope.kind == "function" or (scope.owner is not None and index.graph_of[scope.owner] in found):
            found.add(graph_id)
    return found
