"""`--weights CHECKPOINT`: an anonymous initializer holding a checkpoint tensor's values is that
parameter (source `initializer`, as if the file had kept its name).

The fact used: an exporter or tool may rename a weight (dynamo folds the transpose of every
bias-free `Linear` into `val_66`) but keeps its values, up to the transformations
`tagger.transfer.content` handles (identity, reshape, 2-D transpose, a cast down to float16 or
bfloat16, per-tensor 8-bit quantization). A checkpoint names parameters as the model that saved it stores them, the file as
the module tree that was exported: both differences are learnt from the parameters the file does
name. A checkpoint module whose named parameters the file holds under another module (found by
value: transformers 5 saves ViT's `layers.0.attention.q_proj` as
`encoder.layer.0.attention.attention.query`) maps to that module; any other gets the prefix
the file puts before the checkpoint's names (a wrapper's `m.`: the file's
`m.encoder.layer.0.attention.self.query.bias` ends with the checkpoint's name).

A value filling a tensor (a freshly built model's zero biases and all-ones norms) identifies
nothing and is never matched (`tagger.transfer.content`); the file's own names that may stand for
merged parameters (`tagger.evidence.merged_parameters`) anchor nothing.

Tied weights (one value, several parameter names): every name is kept, and the graph decides
for each node reading it: the name whose module shares the longest path with the modules its
neighbours' weights name (`lm_head` beside the final norm, `embed_tokens` beside the input),
their LCA when nothing tells them apart.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from pathlib import Path

from tagger.errors import param as _param
from tagger.evidence import Context
from tagger.evidence.initializers import module_of_parameter, parameter_owners
from tagger.model.index import ModelIndex
from tagger.model.paths import lca, lca_all
from tagger.tensorbytes.checkpoint import checkpoint_tensors
from tagger.tensorbytes.stored import onnx_initializers
from tagger.transfer.composite import candidate_signatures, match_parts, weight_targets
from tagger.transfer.content import match_contents, match_quantized

SOURCE = "initializer"
__all__ = ["SOURCE", "WeightsSource"]


class WeightsSource:
    """Proposes the modules of nodes reading initializers found in a checkpoint."""

    SOURCE = SOURCE
    PARAMETER = "weights"

    def __init__(self, checkpoint: str | Path, base_dir: Path | None) -> None:
        self.checkpoint = Path(checkpoint)
        self.base_dir = base_dir
        self.notes: list[str] = []
        self.decided_by: dict[int, str] = {}
        """Node -> the rank its claim takes (`_STRONG`) where the file names the weight in a converter's words."""
        self.tensors = checkpoint_tensors(self.checkpoint)  # a bad checkpoint fails before any work

    def propose(self, index: ModelIndex, context: Context) -> dict[int, str]:
        parameters = parameter_owners(index)
        named = set(parameters)
        converted = {name for name, owner in parameters.items() if _converter_name(owner, context.op_names)}
        initializers = list(onnx_initializers(index.model, self.base_dir))
        matches = match_contents(initializers, self.tensors)
        quantized = match_quantized((t for t in initializers if t.name not in named), self.tensors)
        matches.update({name: found for name, found in quantized.items() if name not in matches})
        unexplained = {t.name for t in initializers} - (named - converted) - matches.keys()
        targets = weight_targets(index.views, index.nodes, {t.name: t for t in initializers}, unexplained)
        lengths = {length for target in targets for length in target.lengths}
        parts = match_parts(targets, candidate_signatures(self.tensors, lengths)) if targets else {}
        if converted.isdisjoint(matches.keys() | parts.keys()):
            converted = set()  # the file's names are its own: they teach the checkpoint's renames
        else:  # the file speaks a converter's words: every weight found in the checkpoint is its tensor
            converted |= named & matches.keys()
        own = named - converted
        parameters = {name: owner for name, owner in parameters.items() if name in own and name not in context.parameters.merged}
        prefix = _prefix(own, {t.name for t in self.tensors})
        renamed = _module_renames(matches, own) if not converted else {}
        owners = _owners(matches, own, renamed, prefix)
        owners.update(_owners_of_parts(parts, renamed, prefix))
        self.notes.append(_note(self.checkpoint, len(self.tensors), len(owners), len(parts)))
        owners.update(_derived(owners, {t.name for t in initializers} - named))
        for found in owners.values():
            for module in found:
                context.modules.add(module)
        proposals = _proposals(index, owners, parameters)
        self.decided_by = _outranking(index, proposals, owners, converted)
        if self.decided_by and context.tree_origin is None:
            context.adopt_tree(_checkpoint_tree(self.tensors, renamed, prefix), _TREE_ORIGIN)
        return proposals


_TREE_ORIGIN = f"the checkpoint's parameter names ({_param('weights')}; the file's own weight names are a converter's)"
_STRONG = "metadata"
"""The source whose rank a weight found by value in the checkpoint takes over a converter's name:
like the dynamo exporter's metadata, it names the module the values came from."""


def _converter_name(module: str, op_names: frozenset[str]) -> bool:
    """A parameter path with an op type among its segments (`layers.0.attn.q_proj.MatMul.weight`)
    is a converter's name for a weight it built, not a `named_parameters()` path: no module is
    called like an op its parent runs (`names` rule 1)."""
    return any(segment in op_names for segment in module.split("."))


def _owners(matches: dict[str, tuple[str, ...]], own: set[str], renamed: dict[str, str], prefix: str) -> dict[str, list[str]]:
    """Each matched initializer the file does not name itself -> the modules of its tensors."""
    owners: dict[str, list[str]] = {}
    for name, params in matches.items():
        if name in own:
            continue
        modules = [renamed.get(m, prefix + m) for m in dict.fromkeys(map(module_of_parameter, params)) if m is not None]
        if modules:
            owners[name] = modules
    return owners


def _owners_of_parts(parts: dict[str, tuple[str, ...]], renamed: dict[str, str], prefix: str) -> dict[str, list[str]]:
    """A weight made of checkpoint tensors (concatenated) belongs to their modules' common
    caller, which applies them together; a slice of one tensor to that tensor's module."""
    owners: dict[str, list[str]] = {}
    for name, params in parts.items():
        modules = [module_of_parameter(param) for param in params]
        if None not in modules:
            owners[name] = [lca_all([renamed.get(m, prefix + m) for m in modules]) or ""]
    return owners


def _outranking(index: ModelIndex, proposals: dict[int, str], owners: dict[str, list[str]], converted: set[str]) -> dict[int, str]:
    """The nodes reading a weight the file names in a converter's words whose values the
    checkpoint holds: there the checkpoint's module wins over the file's names (`collect`)."""
    found = {name for name in converted if name in owners}
    if not found:
        return {}
    return {node: _STRONG for node in proposals if not found.isdisjoint(index.views[node].input)}


def _checkpoint_tree(tensors: list, renamed: dict[str, str], prefix: str) -> dict[str, str | None]:
    """The modules owning the checkpoint's parameters, and their ancestors."""
    tree: dict[str, str | None] = {"": None}
    for tensor in tensors:
        module = module_of_parameter(tensor.name)
        if module is not None:
            tree[renamed.get(module, prefix + module)] = None
    return tree


def _prefix(named: set[str], checkpoint_names: set[str]) -> str:
    """The path the file puts before the checkpoint's names: the most common difference between a
    parameter the file names and the checkpoint name it ends with."""
    prefixes: Counter[str] = Counter()
    for name in named:
        if name in checkpoint_names:
            prefixes[""] += 1
            continue
        cut = name.find(".")
        while cut >= 0:
            if name[cut + 1 :] in checkpoint_names:
                prefixes[name[: cut + 1]] += 1
                break
            cut = name.find(".", cut + 1)
    return prefixes.most_common(1)[0][0] if prefixes else ""


def _module_renames(matches: dict[str, tuple[str, ...]], named: set[str]) -> dict[str, str]:
    """Checkpoint module -> the file's module, learnt from the weights the file names whose values
    a checkpoint tensor holds: transformers 5 saves some models under their original names
    (ViT's `encoder.layer.0.attention.attention.query` is module `layers.0.attention.q_proj`).
    A checkpoint module seen mapped to two file modules is dropped."""
    seen: dict[str, set[str]] = {}
    for name, params in matches.items():
        if name not in named:
            continue
        ours = module_of_parameter(name)
        for param in params:
            theirs = module_of_parameter(param)
            if theirs is not None and ours is not None and param.rpartition(".")[2] == name.rpartition(".")[2]:
                seen.setdefault(theirs, set()).add(ours)
    return {theirs: next(iter(ours)) for theirs, ours in seen.items() if len(ours) == 1}


def _derived(owners: dict[str, list[str]], anonymous: set[str]) -> dict[str, list[str]]:
    """Initializers a tool derived from a matched one: quantizers name a weight's scale and zero
    point by replacing the suffix of its quantized values (`val_55_quantized`, `val_55_scale`,
    `val_55_zero_point`), so they share its name up to its last `_` before a non-numeric suffix."""
    names = sorted(anonymous - owners.keys())
    found: dict[str, list[str]] = {}
    for name, modules in owners.items():
        cut = name.rfind("_")
        if cut <= 0 or name[cut + 1 :].isdigit():
            continue
        base = name[: cut + 1]
        for other in names[bisect_left(names, base) :]:
            if not other.startswith(base):
                break
            found.setdefault(other, modules)
    return found


def _note(checkpoint: Path, tensors: int, matched: int, parts: int = 0) -> str:
    if matched:
        built = f", {parts} of them built from parts of them (concatenated, sliced or block-quantized)" if parts else ""
        return f"weights: {matched} initializers of the model hold tensors of {checkpoint.name} ({tensors} tensors){built}"
    return f"weights: none of the {tensors} tensors of {checkpoint.name} fits an initializer of the model; no tag changed"


def _proposals(index: ModelIndex, owners: dict[str, list[str]], parameters: dict[str, str]) -> dict[int, str]:
    """Each node reading matched initializers: their module (ties decided by the neighbours)."""
    found: dict[int, list[list[str]]] = {}
    for node_id, view in enumerate(index.views):
        read = [owners[name] for name in view.input if name in owners]
        if read:
            found[node_id] = read
    if not found:
        return {}
    anchors = _anchor_modules(index, owners, parameters)
    proposals: dict[int, str] = {}
    for node_id, read in found.items():
        modules = [choices[0] if len(choices) == 1 else _choose(choices, _around(index, node_id, anchors)) for choices in read]
        counts = Counter(modules).most_common()
        proposals[node_id] = counts[0][0] if len(counts) == 1 or counts[0][1] > counts[1][1] else (lca_all(modules) or "")
    return proposals


def _anchor_modules(index: ModelIndex, owners: dict[str, list[str]], parameters: dict[str, str]) -> dict[int, str]:
    """Nodes whose module a weight names without doubt: the file's own parameter names, and
    checkpoint matches with one name."""
    anchors: dict[int, str] = {}
    for node_id, view in enumerate(index.views):
        for name in view.input:
            owner = parameters.get(name)
            if owner is None and len(owners.get(name, ())) == 1:
                owner = owners[name][0]
            if owner is not None:
                anchors[node_id] = owner
                break
    return anchors


def _around(index: ModelIndex, node_id: int, anchors: dict[int, str], hops: int = 6) -> list[str]:
    """The anchored modules nearest to a node, searching its producers and consumers."""
    producer = {name: i for i, view in enumerate(index.views) for name in view.output}
    readers: dict[str, list[int]] = {}
    for i, view in enumerate(index.views):
        for name in view.input:
            readers.setdefault(name, []).append(i)
    seen = {node_id}
    frontier = [node_id]
    for _ in range(hops):
        following = []
        for node in frontier:
            view = index.views[node]
            neighbours = [producer[i] for i in view.input if i in producer] + [r for o in view.output for r in readers.get(o, ())]
            following += [n for n in neighbours if n not in seen and not seen.add(n)]
        found = [anchors[n] for n in following if n in anchors]
        if found:
            return found
        frontier = following
    return []


def _choose(choices: list[str], neighbours: list[str]) -> str:
    """The choice sharing the longest path with the neighbours; their LCA on a tie."""

    def depth(module: str) -> int:
        return sum(len((lca(module, other) or "").split(".")) if lca(module, other) else 0 for other in neighbours)

    scores = {choice: depth(choice) for choice in choices}
    best = max(scores.values())
    winners = [choice for choice, score in scores.items() if score == best]
    return winners[0] if len(winners) == 1 else (lca_all(winners) or "")
