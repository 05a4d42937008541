"""docs/architecture.md names every module of `tagger/` (at every depth, under its folder: `model/index.py`,
`commands/extract/cut.py`) and `shim/`, and names no module that is gone: the map a newcomer reads
cannot fall behind the code, or keep a module that moved, without a test failing."""

from __future__ import annotations

import re

from tests.conftest import REPO_ROOT


def _named() -> set[str]:
    text = (REPO_ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    return set(re.findall(r"`([\w/]+\.py)`", text))


def test_every_module_is_named_in_the_architecture_page():
    named = _named()
    missing = []
    for package in ("tagger", "shim"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            relative = path.relative_to(REPO_ROOT / package).as_posix()
            if relative == "__main__.py":
                continue  # `python -m tagger`
            spelled = {f"{package}/{relative}"} | ({relative} if package == "tagger" else set())
            if named.isdisjoint(spelled):
                missing.append(f"{package}/{relative}")
    assert missing == [], f"docs/architecture.md does not name: {missing}"


def test_every_module_the_architecture_page_names_exists():
    """A path is relative to `tagger/` (`model/index.py`) or to the repository (`tests/test_layering.py`)."""
    gone = [name for name in sorted(_named()) if not (REPO_ROOT / "tagger" / name).is_file() and not (REPO_ROOT / name).is_file()]
    assert gone == [], f"docs/architecture.md names modules that do not exist: {gone}"


def test_no_page_holds_a_merge_conflict_marker():
    """A merge left half-resolved shows both versions to every reader."""
    pages = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    marked = [page.name for page in pages if re.search(r"^(<{7}|>{7}) ", page.read_text(encoding="utf-8"), re.M)]
    assert marked == []
