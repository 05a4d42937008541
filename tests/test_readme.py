"""The README a newcomer reads: short, its two commands first, its example the real output, every link alive.

Benchmarks write their tables between `<!-- name:start -->` / `<!-- name:end -->` markers
(`bench.docs.publish`); a call whose markers are missing writes nothing, silently, so the markers
each call names are checked here too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from bench import example
from bench.docs import ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

# The two commands of the quick start, exactly: CI (.ci/run) and newcomers run them as written.
COMMANDS = [
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && tagger retag data/bert-tiny-shim.onnx"
    " --report bert-tiny-shim.report.md && tagger tree data/bert-tiny-shim.tagged.onnx --depth 4",
    'python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e ".[test]" && python -m pytest',
]

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^(```|~~~)")


def _block(text: str, name: str) -> str:
    match = re.search(rf"<!-- {name}:start -->\n(.*?)<!-- {name}:end -->", text, re.S)
    assert match, f"no {name} markers"
    return match.group(1).rstrip("\n")


def _prose(text: str) -> str:
    """The text outside fenced code blocks (a `[x](y)` in code is no link)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(lines)


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, each space a hyphen."""
    anchors, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line.lstrip()):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"#{1,6} (.*)", line)):
            anchors.add(re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-"))
    return anchors


def test_readme_is_short():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 200


def test_readme_opens_with_the_two_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    first_block = lines[lines.index("```bash") + 1 :]
    first_block = first_block[: first_block.index("```")]
    assert [line for line in first_block if line and not line.startswith("#")] == COMMANDS
    assert lines.index("```bash") <= 3  # right under the title


def test_readme_example_is_the_real_output_of_its_commands():
    assert _block(README.read_text(encoding="utf-8"), "example") == example.block(), "run: python -m bench.example"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in _LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def _publish_calls() -> list[tuple[str, str | None, tuple[str, ...]]]:
    """(bench module, marker name or None when computed, files) of every publish() call in bench/."""
    calls = []
    for module in sorted((ROOT / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "publish":
                name = node.args[0].value if isinstance(node.args[0], ast.Constant) else None
                files = ast.literal_eval(node.args[2]) if len(node.args) > 2 else ("README.md",)
                calls.append((module.name, name, tuple(files)))
    return calls


def test_every_publish_call_finds_its_markers():
    calls = _publish_calls()
    assert len(calls) >= 12
    for module, name, files in calls:
        for file in files:
            text = (ROOT / file).read_text(encoding="utf-8")
            if name is None:  # bench.accuracy: accuracy, accuracy-fresh
                assert re.search(r"<!-- accuracy[\w-]*:start -->", text), (module, file)
            else:
                assert f"<!-- {name}:start -->" in text and f"<!-- {name}:end -->" in text, (module, name, file)


def test_each_marker_is_in_one_page_once():
    seen: dict[str, list[str]] = {}
    for page in PAGES:
        for name in re.findall(r"<!-- ([\w-]+):start -->", page.read_text(encoding="utf-8")):
            seen.setdefault(name, []).append(str(page.relative_to(ROOT)))
    assert {name: where for name, where in seen.items() if len(where) > 1} == {}
    assert "accuracy" in seen and "accuracy-fresh" in seen
