"""Refresh the README's example report from the model shipped in data/.

python -m bench.example
"""

from __future__ import annotations

from bench.docs import ROOT, publish
from tagger import report

MODEL = ROOT / "data" / "bert-tiny.onnx"


def main() -> None:
    result = report(MODEL)
    lines = result.to_markdown().splitlines()
    head = lines[: lines.index("## By op type")]
    tree = result.tree(depth=4, legend=True)
    text = "\n".join(
        [
            "`tagger report data/bert-tiny.onnx --markdown` (abridged):",
            "",
            *[line.replace("# ", "### ", 1) if line.startswith("# ") else line.replace("## ", "#### ", 1) for line in head],
        ]
        + ["#### Module tree (`tagger tree data/bert-tiny.onnx --depth 4`)", "", "```", tree, "```"]
    )
    publish("example", text)
    print(text)


if __name__ == "__main__":
    main()
