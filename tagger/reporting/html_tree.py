"""`tagger report MODEL --html`: the module tree as one static HTML page, for people who would
rather look than read.

The page guarantees:
1. one self-contained file: no script, no external resource; a Content-Security-Policy forbids
   both, so nothing in it can run or call out even if a name got through;
2. every text from the model (file name, module paths, tags) is HTML-escaped after control
   characters are made visible (`tagger.text.html_text`); numbers are the only other content;
3. each module shows its subtree's node count, its own count by kind, a bar of the subtree's
   direct / certain / chosen / fallback shares (`tagger.reporting.certainty`), and the mark of a module
   whose own nodes are mostly chosen; modules nest as `<details>` (the first three levels open),
   children in natural order (`layer.2` before `layer.10`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import TYPE_CHECKING

from tagger.model.paths import ancestors
from tagger.reporting.certainty import KINDS, LEGEND, MARK, Certainty
from tagger.text import html_text, natural, pct

if TYPE_CHECKING:
    from tagger.reporting.coverage_report import CoverageReport

__all__ = ["render_html"]

_OPEN_LEVELS = 3

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.3em; } code { background: #f3f3f3; padding: 0 .25em; }
table.totals { border-collapse: collapse; margin: 1em 0; }
table.totals td, table.totals th { border: 1px solid #ccc; padding: .2em .6em; text-align: right; }
ul.tree, ul.tree ul { list-style: none; padding-left: 1.2em; margin: 0; }
ul.tree > li { padding-left: 0; }
summary, .leaf { cursor: default; white-space: nowrap; padding: 1px 0; }
.leaf { padding-left: 1.05em; }
.name { font-weight: 600; } .cls { color: #555; margin-left: .4em; } .count { color: #333; margin-left: .6em; }
.bar { display: inline-block; width: 12em; height: .8em; margin-left: .8em; background: #eee; vertical-align: middle; }
.bar span { display: inline-block; height: 100%; }
.direct { background: #2e7d32; } .certain { background: #81c784; } .chosen { background: #ffb300; }
.fallback { background: #e53935; }
.own, .shares { color: #555; margin-left: .6em; font-size: .9em; }
.mark { color: #8a5a00; background: #fff3cd; margin-left: .6em; padding: 0 .3em; font-size: .9em; }
.legend span.sw { display: inline-block; width: .9em; height: .9em; margin: 0 .3em 0 1em; vertical-align: middle; }
"""


def render_html(report: CoverageReport) -> str:
    """The page for one coverage report."""
    own = {module: report.certainty(module) for module in report.modules}
    subtree: dict[str, Counter[str]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    for module, count in report.modules.items():
        kinds = {kind: getattr(own[module], kind) for kind in KINDS}
        for path in [*ancestors(module), module]:
            totals[path] += count
            subtree[path].update(kinds)
    children: dict[str, list[str]] = defaultdict(list)
    for path in totals:
        if path:
            children[path.rpartition(".")[0]].append(path)

    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        f"<title>Module tree: {html_text(report.model)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Module tree: <code>{html_text(report.model)}</code></h1>",
        _totals_table(report),
        *[f'<p class="note">{html_text(note)}</p>' for note in report.notes],
        '<p class="legend">Bars: share of the subtree\'s nodes by kind:'
        + "".join(f'<span class="sw {c}"></span>{c}' for c in KINDS)
        + f". Counts: subtree nodes (own nodes), then the own nodes by kind. {html_text(LEGEND)}.</p>",
    ]
    if totals:
        parts.append('<ul class="tree">')
        _module_html("", 0, report.tags, totals, own, subtree, children, parts)
        parts.append("</ul>")
    else:
        parts.append("<p>The model has no nodes.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _totals_table(report: CoverageReport) -> str:
    whole = report.certainty()
    cells = "".join(
        f"<td>{count} ({pct(count, report.nodes)})</td>"
        for count in (report.direct, report.inherited, whole.chosen, report.fallback)
    )
    return (
        '<table class="totals"><tr><th>nodes</th><th>direct</th><th>inherited</th><th>of which chosen</th><th>fallback</th>'
        "<th>certain</th><th>conflicts</th></tr>"
        f"<tr><td>{report.nodes}</td>{cells}<td>{pct(whole.known, report.nodes)}</td><td>{len(report.conflicts)}</td></tr></table>"
    )


def _module_html(path, level, tags, totals, own: dict[str, Certainty], subtree, children, parts) -> None:
    label = path.rpartition(".")[2] if path else "(root)"
    tag = tags.get(path, "")
    segment = tag.rsplit("/", 1)[-1] if tag else ""
    cls = f'<span class="cls">{html_text(segment)}</span>' if segment and segment != label else ""
    counts = subtree[path]
    whole = sum(counts[c] for c in KINDS) or totals[path]
    bar = "".join(f'<span class="{c}" style="width:{100.0 * counts[c] / whole:.2f}%"></span>' for c in KINDS if whole and counts[c])
    shares = " · ".join(f"{c} {pct(counts[c], whole)}" for c in KINDS if counts[c])
    title = html_text(f"{path or '(root)'}  {tag}".strip())
    mine = own.get(path) or Certainty()
    line = (
        f'<span class="name" title="{title}">{html_text(label)}</span>{cls}'
        f'<span class="count">{totals[path]} ({mine.nodes} own)</span>'
        + (f'<span class="own">{mine.counts()}</span>' if mine.nodes else "")
        + f'<span class="bar">{bar}</span><span class="shares">{shares}</span>'
        + (f'<span class="mark">{html_text(MARK)}</span>' if mine.mostly_chosen else "")
    )
    kids = sorted(children.get(path, []), key=natural)
    if not kids:
        parts.append(f'<li><div class="leaf">{line}</div></li>')
        return
    opened = " open" if level < _OPEN_LEVELS else ""
    parts.append(f"<li><details{opened}><summary>{line}</summary><ul>")
    for child in kids:
        _module_html(child, level + 1, tags, totals, own, subtree, children, parts)
    parts.append("</ul></details></li>")
