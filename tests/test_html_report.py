"""`tagger report --html`: a static page of the module tree; nothing from the model becomes markup."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import onnx

from tagger import report
from tests.graphs import chain_model

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "code", "table", "tr", "th", "td", "p", "span", "ul", "li",
             "details", "summary", "div"}  # fmt: skip


class Page(HTMLParser):
    """The elements and the text of a page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)
        self.text.extend(value for name, value in attrs if name == "title" and value)

    def handle_data(self, data):
        self.text.append(data)


def test_names_from_the_model_never_become_markup(tmp_path):
    hostile = "enc<img src=x onerror=alert(1)>"
    model = chain_model([f"/{hostile}/a&amp;\"q'/Relu", "", f"/{hostile}/b<script>x()<\\script>/Relu"])
    path = tmp_path / "m<b>odel.onnx"
    onnx.save(model, path)
    page = report(path).to_html()
    parsed = Page(page)
    assert parsed.tags <= PAGE_TAGS
    assert parsed.attributes <= {"lang", "charset", "http-equiv", "content", "class", "style", "title", "open"}
    text = "".join(parsed.text)
    assert hostile in text and "a&amp;\"q'" in text and "m<b>odel.onnx" in text  # shown as text, intact
    assert "<img" not in page and "<script" not in page


def test_the_tree_shows_every_module_with_its_counts_and_shares(built_cases):
    case = built_cases[("bert", "dynamo", "strip_all")]
    result = report(case.path)
    page = result.to_html()
    counts = re.findall(r'<span class="count">(\d+) \((\d+) own\)</span>', page)
    assert len(counts) == len({m for path in result.modules for m in _with_ancestors(path)})
    assert counts[0] == (str(result.nodes), str(result.modules.get("", 0)))  # the root first
    assert sum(int(own) for _, own in counts) == result.nodes
    widths = [float(w) for w in re.findall(r'class="(?:direct|certain|chosen|fallback)" style="width:([\d.]+)%"', page)]
    whole = result.certainty()
    assert whole.chosen > 0  # the root's bar shows all three kinds present in a stripped export
    assert widths[:3] == [round(100 * count / result.nodes, 2) for count in (whole.direct, whole.certain, whole.chosen)]


def test_cli_report_html_prints_the_page(built_cases):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    path = built_cases[("bert", "torchscript", "none")].path
    command = [sys.executable, "-m", "tagger", "report", str(path), "--html"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0 and result.stdout.startswith("<!doctype html>") and result.stdout.endswith("</html>\n")


def _with_ancestors(path: str) -> list[str]:
    parts = path.split(".") if path else []
    return [".".join(parts[:k]) for k in range(len(parts) + 1)]
