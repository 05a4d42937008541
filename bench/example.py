"""Refresh the README's example: the real output of two commands on the model shipped in data/.

python -m bench.example

The block between the README's example markers is the commands' stdout, run from the project
root, cut only where the shown command cuts it (`| head -n N`). tests/test_readme.py runs the
same commands and fails when the README's block differs, so the example cannot go stale.
"""

from __future__ import annotations

import os
import subprocess
import sys

from bench.docs import ROOT, publish

MODEL = "data/bert-tiny.onnx"
REPORT = ("report", MODEL)
TREE = ("tree", MODEL, "--depth", "4")
CUT_BEFORE = "by op type"  # the report's per-op table and its repeat of the tree are left out


def run(*args: str) -> str:
    """One `tagger` command's stdout, as a user gets it from the project root."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run(
        [sys.executable, "-m", "tagger", *args], cwd=ROOT, env=env, capture_output=True, text=True, encoding="utf-8", check=True
    )
    return done.stdout


def block() -> str:
    """The README's example block: both commands with their output."""
    report = run(*REPORT).splitlines()
    head = report[: next(i for i, line in enumerate(report) if line.startswith(CUT_BEFORE))]
    while head and not head[-1].strip():
        head.pop()
    tree = run(*TREE).rstrip("\n").splitlines()
    return "\n".join(
        [
            "```console",
            f"$ tagger {' '.join(REPORT)} | head -n {len(head)}",
            *head,
            f"$ tagger {' '.join(TREE)}",
            *tree,
            "```",
        ]
    )


def main() -> None:
    text = block()
    publish("example", text)
    print(text)


if __name__ == "__main__":
    main()
