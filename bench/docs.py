"""Write a benchmark's table into the docs between markers, so figures and command stay together."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def publish(name: str, text: str, files: tuple[str, ...] = ("README.md",)) -> None:
    """Replace `<!-- {name}:start -->…<!-- {name}:end -->` in each file (if the markers exist)."""
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    for file in files:
        path = ROOT / file
        if not path.exists():
            continue
        content = path.read_text(encoding="utf-8")
        updated, count = pattern.subn(lambda m: m.group(1) + text.rstrip() + "\n" + m.group(2), content)
        if count:
            path.write_text(updated, encoding="utf-8")
