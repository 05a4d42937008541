"""The producer matrix (`bench.producers`): its rows say what a user meets, and a producer whose
environment is missing is skipped with the reason instead of failing the run.

One real row is measured end to end on the onnxruntime-genai output shipped in data/genai/llama
with the checkpoint it was built from (tests/data/genai): the tags, and every command run as a
user runs it. The Olive, genai and optimum environments are never needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import producer_builds, producers

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "tests" / "data" / "genai"


def test_producers_whose_environment_is_missing_are_skipped_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(producer_builds, "OLIVE_PYTHON", tmp_path / "no-olive" / "python")
    monkeypatch.setattr(producer_builds, "GENAI_PYTHON", tmp_path / "no-genai" / "python")
    monkeypatch.setattr(producer_builds, "GENAI_CACHE", tmp_path / "no-cache")
    olive = producer_builds.produce("olive", tmp_path)
    genai = producer_builds.produce("genai", tmp_path)
    assert len(olive) == len(producer_builds.OLIVE_VARIANTS) and all(isinstance(s, producer_builds.Skipped) for s in olive)
    assert "Olive not installed" in str(olive[0]) and "set OLIVE_PYTHON" in str(olive[0])
    assert len(genai) == len(producer_builds.GENAI_FAMILIES) * len(producer_builds.GENAI_VARIANTS)
    assert all("onnxruntime-genai not installed" in str(s) for s in genai)
    assert not any(tmp_path.glob("producers-*"))  # nothing built for a producer that cannot run


@pytest.fixture(scope="module")
def genai_row() -> producers.Row:
    layers = json.loads((CHECKPOINT / "config.json").read_text())["num_hidden_layers"]
    path = ROOT / "data" / "genai" / "llama" / "model.onnx"
    produced = producer_builds.Produced(
        "genai builder", "llama", "fp32-fused", path, frozenset(json.loads((CHECKPOINT / "modules.json").read_text())),
        path, "genai", weights=CHECKPOINT / "model.safetensors", modules_file=CHECKPOINT / "modules.json",
        extra={"layers": layers},
    )  # fmt: skip
    return producers.measure(produced, run_commands=True)


def test_a_genai_row_runs_every_command_and_names_hf_modules_with_the_checkpoint(genai_row):
    assert genai_row.loads == "yes"
    assert {name: code for name, (code, _) in genai_row.commands.items()} == dict.fromkeys(producers.COMMANDS, 0)
    assert genai_row.unexpected == []
    assert genai_row.evidence["weights"].endswith("/ 0.0%") and genai_row.evidence["reference"] == "–"
    assert genai_row.scores.graded == genai_row.nodes


def test_a_row_marks_more_than_one_percent_wrong_and_an_unexpected_exit_code(genai_row):
    """The builder's own names, unchecked, put nodes in wrong branches (issue 22): bold; so is an
    exit code other than 0 on a file onnxruntime loads."""
    line = producers.format_row(genai_row)
    assert genai_row.scores.wrong > 0.01 and f"**{100 * genai_row.scores.wrong:.1f}%**" in line
    failing = producers.Row("p", "f", "v", loads="yes", commands={"profile": (2, "refused")})
    refused = producers.Row("p", "f", "v", loads="no: Type Error", commands={"profile": (2, "refused"), "retag": (0, "")})
    assert failing.unexpected == ["profile"] and refused.unexpected == []
