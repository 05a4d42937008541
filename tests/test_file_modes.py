"""Written files get the mode an ordinary write gives: new ones `0o666 & ~umask`, replaced ones
their old mode, so a model tagged in a shared cache or a container stays readable by others."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

DYNAMO = ("bert", "dynamo", "none")
"""A dynamo export: its `model.onnx.data` is copied beside an output in another directory."""


def run_cli(*args, umask: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "tagger", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        preexec_fn=lambda: os.umask(umask),
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def model(built_cases, tmp_path) -> Path:
    """A private copy of the dynamo export (model and data file), both 0644."""
    source = built_cases[DYNAMO].path
    directory = tmp_path / "in"
    directory.mkdir()
    for file in source.parent.iterdir():
        shutil.copy(file, directory / file.name)
        os.chmod(directory / file.name, 0o644)
    return directory / source.name


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_output_report_and_copied_data_get_the_umask_mode(model, tmp_path, umask):
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("retag", model, "--output", out / "tagged.onnx", "--report", out / "report.md", umask=umask)
    assert result.returncode == 0, result.stderr
    written = sorted(out.iterdir())
    assert [p.name for p in written] == ["model.onnx.data", "report.md", "tagged.onnx"]
    assert {p.name: mode(p) for p in written} == dict.fromkeys((p.name for p in written), 0o666 & ~umask)


@pytest.mark.parametrize("before", [0o644, 0o640, 0o600])
def test_inplace_keeps_the_input_mode(model, before):
    os.chmod(model, before)
    result = run_cli("retag", model, "--inplace", umask=0o077)
    assert result.returncode == 0, result.stderr
    assert mode(model) == before
    assert not list(model.parent.glob(".*.tmp"))


def test_an_existing_output_keeps_its_mode_and_extract_gets_the_umask_mode(model, tmp_path):
    existing = tmp_path / "existing.onnx"
    existing.write_bytes(b"old")
    os.chmod(existing, 0o640)
    assert run_cli("retag", model, "--output", existing, umask=0o022).returncode == 0
    assert mode(existing) == 0o640
    extracted = model.with_name("layer0.onnx")
    result = run_cli("extract", model, "--module", "m.encoder.layer.0", "--output", extracted, umask=0o022)
    assert result.returncode == 0, result.stderr
    assert mode(extracted) == 0o644
