"""The layers of `tagger` import one way: no import cycle runs through a subpackage of `tagger`
(`evidence/`, `transfer/`, `tensorbytes/`, ...), and `shim/` uses only `tagger`'s public API.

Every import counts: at module level, inside a function, under `TYPE_CHECKING`, and
`importlib.import_module("tagger....")` with a literal name. A part of `tagger` is a subpackage or a
top-level module, so a cycle through a module (`evidence` -> `tagging` -> `evidence`) is found too.
`python -m tests.test_layering` prints the graph between the parts and every cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import tagger
from tests.conftest import REPO_ROOT

_TAGGER = REPO_ROOT / "tagger"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, int]]:
    """(imported module or `module.name`, line) for every import in `tree`, relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, node.lineno
            yield from ((f"{base}.{alias.name}", node.lineno) for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args:
            if isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                yield node.args[0].value, node.lineno


def _part(module: str) -> str | None:
    """The part of `tagger` a module belongs to (`tagger.evidence.names` -> `tagger.evidence`)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "tagger" and len(parts) > 1 else None


def import_graph() -> dict[str, dict[str, list[str]]]:
    """Part -> the parts it imports -> where (`tagger/evidence/names.py:42`)."""
    graph: dict[str, dict[str, list[str]]] = {}
    parts = _parts()
    for path in sorted(_TAGGER.rglob("*.py")):
        module = _module_name(path)
        source = _part(module)
        if source is None:
            continue  # tagger/__init__.py: the public API names every part, lazily
        for target, line in _imported(ast.parse(path.read_text(encoding="utf-8")), module, path.name == "__init__.py"):
            part = _part(target)
            if part != source and part in parts:  # `from tagger import api`: a part; `... import retag`: a name
                graph.setdefault(source, {}).setdefault(part, []).append(f"{path.relative_to(REPO_ROOT)}:{line}")
    return graph


def _parts() -> set[str]:
    """Every subpackage and top-level module of `tagger`."""
    return {f"tagger.{path.stem}" for path in _TAGGER.glob("*.py") if path.stem != "__init__"} | {
        f"tagger.{path.parent.name}" for path in _TAGGER.glob("*/__init__.py")
    }


def _subpackage(part: str) -> bool:
    return (_TAGGER / part.split(".")[1] / "__init__.py").exists()


def cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """The strongly connected groups of more than one part (Tarjan), each sorted."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(part: str) -> None:
        order[part] = low[part] = len(order)
        stack.append(part)
        for target in graph.get(part, {}):
            if target not in order:
                visit(target)
                low[part] = min(low[part], low[target])
            elif target in stack:
                low[part] = min(low[part], order[target])
        if low[part] == order[part]:
            group = stack[stack.index(part) :]
            del stack[stack.index(part) :]
            if len(group) > 1:
                found.append(sorted(group))

    for part in sorted(graph):
        if part not in order:
            visit(part)
    return found


def _shim_imports() -> Iterator[tuple[str, str]]:
    """(where, what) for every name `shim/` takes from `tagger` that is not in `tagger.__all__`."""
    public = set(tagger.__all__)
    for path in sorted((REPO_ROOT / "shim").rglob("*.py")):
        where = path.relative_to(REPO_ROOT)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "tagger":
                yield from ((f"{where}:{node.lineno}", f"tagger.{a.name}") for a in node.names if a.name not in public)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tagger."):
                yield f"{where}:{node.lineno}", str(node.module)
            elif isinstance(node, ast.Import):
                yield from ((f"{where}:{node.lineno}", a.name) for a in node.names if a.name.startswith("tagger."))
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "tagger":
                if node.attr not in public:
                    yield f"{where}:{node.lineno}", f"tagger.{node.attr}"


def test_no_import_cycle_runs_through_a_subpackage_of_tagger():
    through_packages = [group for group in cycles(import_graph()) if any(_subpackage(part) for part in group)]
    assert through_packages == []


def test_the_graph_sees_every_kind_of_import():
    graph = import_graph()
    assert "tagger.tensorbytes" in graph["tagger.evidence"]  # module level (merged_parameters)
    assert "tagger.pipeline" in graph["tagger.transfer"]  # inside a function, and under TYPE_CHECKING (reference)
    assert "tagger.evidence" not in graph["tagger.tensorbytes"] and "tagger.transfer" not in graph["tagger.evidence"]


def test_a_cycle_between_parts_is_found():
    graph = {"tagger.a": {"tagger.b": []}, "tagger.b": {"tagger.c": []}, "tagger.c": {"tagger.a": []}, "tagger.d": {}}
    assert cycles(graph) == [["tagger.a", "tagger.b", "tagger.c"]]


def test_shim_imports_only_the_public_api_of_tagger():
    assert list(_shim_imports()) == []


if __name__ == "__main__":
    edges = import_graph()
    for source in sorted(edges):
        kind = "package" if _subpackage(source) else "module"
        print(f"{source} ({kind}) -> {', '.join(sorted(edges[source]))}")
    found = cycles(edges)
    print(f"\n{len(edges)} parts import others; cycles: {found or 'none'}")
    for group in found:
        for source in group:
            for target, places in sorted(edges[source].items()):
                if target in group:
                    print(f"  {source} -> {target}: {', '.join(dict.fromkeys(places))}")
    print(f"shim imports outside tagger.__all__: {list(_shim_imports()) or 'none'}")
