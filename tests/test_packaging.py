"""The installable package list names every package of the tree (a non-editable install ships only those)."""

from __future__ import annotations

import pytest
from setuptools import find_packages

from tests.conftest import REPO_ROOT


def test_pyproject_lists_every_tagger_and_shim_package():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    declared = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]
    found = find_packages(where=REPO_ROOT, include=["tagger", "tagger.*", "shim", "shim.*"])
    assert sorted(declared) == sorted(found)
