"""The layers of `tagger` import one way: no import cycle runs through a subpackage, at any level
(`model/`, `evidence/`, `pipeline/`, ... within `tagger`; `extract/`, `numerics/`, `profiling/`
within `tagger/commands/`), and `shim/` uses only `tagger`'s public API.

Every import counts: at module level, inside a function, under `TYPE_CHECKING`, and
`importlib.import_module("tagger....")` with a literal name. The parts of a package are its
subpackages and its own modules, so a cycle through a module (`api` -> `evidence` -> `api`) is
found too; a cycle of modules alone (`reporting/coverage_report` <-> `html_tree`) is allowed.
`python -m tests.test_layering [PACKAGE]` prints the graph between the parts of `tagger` (or of
PACKAGE, `tagger.commands`) and every cycle.
"""

from __future__ import annotations

import ast
import sys
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


def _part(module: str, package: str = "tagger") -> str | None:
    """The part of `package` a module belongs to (`tagger.evidence.names` -> `tagger.evidence`;
    within `tagger.commands`, `tagger.commands.extract.cut` -> `tagger.commands.extract`)."""
    if not module.startswith(f"{package}."):
        return None
    return ".".join(module.split(".")[: package.count(".") + 2])


def _directory(package: str) -> Path:
    return REPO_ROOT.joinpath(*package.split("."))


def import_graph(package: str = "tagger") -> dict[str, dict[str, list[str]]]:
    """Part of `package` -> the parts it imports -> where (`tagger/evidence/names.py:42`)."""
    graph: dict[str, dict[str, list[str]]] = {}
    parts = _parts(package)
    for path in sorted(_directory(package).rglob("*.py")):
        module = _module_name(path)
        source = _part(module, package)
        if source is None:
            continue  # the package's own __init__.py (`tagger`'s: the public API names every part, lazily)
        for target, line in _imported(ast.parse(path.read_text(encoding="utf-8")), module, path.name == "__init__.py"):
            part = _part(target, package)
            if part != source and part in parts:  # `from tagger import api`: a part; `... import retag`: a name
                graph.setdefault(source, {}).setdefault(part, []).append(f"{path.relative_to(REPO_ROOT)}:{line}")
    return graph


def _parts(package: str = "tagger") -> set[str]:
    """Every subpackage and module directly in `package`."""
    directory = _directory(package)
    return {f"{package}.{path.stem}" for path in directory.glob("*.py") if path.stem != "__init__"} | {
        f"{package}.{path.parent.name}" for path in directory.glob("*/__init__.py")
    }


def _packages() -> list[str]:
    """`tagger` and every package in it."""
    return sorted(_module_name(path) for path in _TAGGER.rglob("__init__.py"))


def _subpackage(part: str) -> bool:
    return (_directory(part) / "__init__.py").exists()


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


def test_no_import_cycle_runs_through_a_subpackage_at_any_level():
    through_packages = {
        package: group for package in _packages() for group in cycles(import_graph(package)) if any(map(_subpackage, group))
    }
    assert through_packages == {}


def test_the_graph_sees_every_kind_of_import():
    graph = import_graph()
    assert "tagger.tensorbytes" in graph["tagger.evidence"]  # module level (merged_parameters)
    assert "tagger.evidence" not in graph["tagger.tensorbytes"] and "tagger.transfer" not in graph["tagger.evidence"]
    assert "tagger.pipeline" not in graph["tagger.transfer"]  # the API tags a reference and hands the result in
    reporting = import_graph("tagger.reporting")
    assert "tagger.reporting.html_tree" in reporting["tagger.reporting.coverage_report"]  # inside a function (to_html)
    assert "tagger.reporting.coverage_report" in reporting["tagger.reporting.html_tree"]  # under TYPE_CHECKING
    assert "tagger.commands.extract" in import_graph("tagger.commands")["tagger.commands.numerics"]  # a level down


def test_a_cycle_between_parts_is_found():
    graph = {"tagger.a": {"tagger.b": []}, "tagger.b": {"tagger.c": []}, "tagger.c": {"tagger.a": []}, "tagger.d": {}}
    assert cycles(graph) == [["tagger.a", "tagger.b", "tagger.c"]]


def test_shim_imports_only_the_public_api_of_tagger():
    assert list(_shim_imports()) == []


if __name__ == "__main__":
    edges = import_graph(sys.argv[1] if len(sys.argv) > 1 else "tagger")
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
