"""`tagger audit`: many models in parallel, one row each, thresholds and exit codes for CI jobs.

The directory holds real exports: a TorchScript BERT (every node has direct evidence), a dynamo
BERT stripped of names and metadata (partially tagged: most nodes only by inheritance), a
dynamo export copied without its external data file, a truncated model and a text file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tagger import audit
from tagger.errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "tagger", *map(str, args)], capture_output=True, text=True, env=env, check=False)


@pytest.fixture(scope="module")
def models(built_cases, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("audit")
    good = root / "good"
    good.mkdir()
    shutil.copy(built_cases[("bert", "torchscript", "none")].path, good / "bert-torchscript.onnx")
    partial = root / "partial" / "deeper"
    partial.mkdir(parents=True)
    shutil.copy(built_cases[("bert", "dynamo", "strip_all")].path, partial / "bert-stripped.onnx")
    broken = root / "broken"
    broken.mkdir()
    shutil.copy(built_cases[("bert", "dynamo", "none")].path, broken / "no-weights-file.onnx")
    data = built_cases[("vit", "torchscript", "none")].path.read_bytes()
    (broken / "truncated.onnx").write_bytes(data[: len(data) // 3])
    (broken / "notes.onnx").write_text("not a model\n")
    (broken / "readme.txt").write_text("not audited: no .onnx suffix\n")
    return root


def test_directories_are_searched_recursively_for_onnx_files_in_path_order(models):
    result = audit(models, workers=1)
    assert [Path(r.path).relative_to(models).as_posix() for r in result.rows] == [
        "broken/no-weights-file.onnx",
        "broken/notes.onnx",
        "broken/truncated.onnx",
        "good/bert-torchscript.onnx",
        "partial/deeper/bert-stripped.onnx",
    ]


def test_bad_files_are_failed_rows_and_the_rest_is_still_audited(models):
    result = audit(models, workers=2)
    errors = {Path(r.path).name: r.error for r in result.rows}
    assert "external data file 'model.onnx.data' is missing" in errors["no-weights-file.onnx"]
    assert "not an ONNX model" in errors["notes.onnx"] and "ONNX model" in errors["truncated.onnx"]
    audited = {Path(r.path).name: r for r in result.rows if r.error is None}
    assert set(audited) == {"bert-torchscript.onnx", "bert-stripped.onnx"}
    assert audited["bert-torchscript.onnx"].direct == audited["bert-torchscript.onnx"].nodes > 0
    stripped = audited["bert-stripped.onnx"]
    assert 0 < stripped.direct < stripped.nodes == stripped.direct + stripped.inherited + stripped.fallback
    assert result.exit_code == 5


def test_parallel_and_serial_audits_agree(models):
    def rows(workers):
        return [{k: v for k, v in r.to_dict().items() if k != "seconds"} for r in audit(models, workers=workers).rows]

    assert rows(2) == rows(1)


def test_cli_exit_0_when_every_model_meets_the_thresholds(models):
    result = run_cli("audit", models / "good", "--min-direct", 95, "--max_fallback", 0)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ok ") and "147 nodes" in lines[0] and lines[1].startswith("total: 1 model,")


def test_cli_exit_4_when_a_model_misses_a_threshold_with_json_lines(models):
    result = run_cli("audit", models / "good", models / "partial", "--min_direct", 95, "--json", "--workers", 2)
    assert result.returncode == 4
    assert result.stderr.strip() == "tagger: error: 1 of 2 models missed a coverage threshold"
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["kind"] for r in records] == ["model", "model", "total"]
    good, partial, total = records
    assert good["ok"] and good["direct_pct"] == 100.0
    assert not partial["ok"] and partial["missed"] == [f"direct {partial['direct_pct']:.1f}% < 95%"]
    assert total["nodes"] == good["nodes"] + partial["nodes"] and total["exit_code"] == 4 and total["workers"] == 2


def test_cli_exit_5_when_a_file_fails_even_if_others_miss_thresholds(models):
    result = run_cli("audit", models, "--min_direct", 95)
    assert result.returncode == 5
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    lines = result.stdout.splitlines()
    assert sum(line.startswith("FAILED ") for line in lines) == 3
    assert sum(line.startswith("MISSED ") for line in lines) == 1
    assert lines[-1].startswith("total: 5 models, 2 audited, 3 failed, 1 missed a threshold")


def test_without_thresholds_only_failed_files_fail_the_audit(models):
    assert run_cli("audit", models / "partial").returncode == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (("--min_direct", 120), "--min_direct must be a percentage"),
        (("--workers", 0), "--workers must be an integer >= 1"),
    ],
)
def test_bad_options_exit_2(models, args, message):
    result = run_cli("audit", models / "good", *args)
    assert result.returncode == 2 and message in result.stderr


def test_a_path_without_models_is_bad_input(tmp_path):
    with pytest.raises(InputError, match="no ONNX models"):
        audit(tmp_path)
    assert run_cli("audit", tmp_path).returncode == 2


def test_the_report_renders_as_json_lines_and_markdown(models):
    result = audit(models / "good", models / "partial", min_direct=95, workers=1)
    records = [json.loads(line) for line in result.to_json().splitlines()]
    assert records[-1] == {**result.totals(), "seconds": records[-1]["seconds"]}
    text = result.to_markdown()
    assert text.startswith("# Hierarchy audit") and "Exit code 4." in text and "**missed**: direct" in text


def test_min_certain_fails_a_model_with_chosen_tags_and_passes_at_zero(models):
    strict = run_cli("audit", models / "good", models / "partial", "--min_certain", 100, "--json")
    assert strict.returncode == 4, strict.stderr
    good, partial, total = (json.loads(line) for line in strict.stdout.splitlines())
    assert good["ok"] and good["certain_pct"] == 100.0 and good["chosen"] == 0
    assert partial["chosen"] > 0 and partial["missed"] == [f"certain {partial['certain_pct']:.1f}% < 100%"]
    assert total["min_certain"] == 100.0 and total["chosen"] == partial["chosen"]
    assert run_cli("audit", models / "good", models / "partial", "--min_certain", 0).returncode == 0


def test_the_certain_share_is_on_every_line_of_text_and_markdown(models):
    result = audit(models / "good", models / "partial", workers=1)
    partial = result.rows[1]
    share = f"certain {100 * (partial.direct + partial.inherited - partial.chosen) / partial.nodes:.1f}%"
    lines = result.to_text().splitlines()
    assert share in lines[1] and "certain 100.0%" in lines[0] and "; certain " in lines[2]
    table = result.to_markdown().splitlines()
    assert "| certain |" in table[4] and all(row.count("|") == table[4].count("|") for row in table[4:])


SUGGESTED_MIN_CERTAIN = 95
"""The threshold README suggests: every TorchScript export of the benchmark models measured
97.1-100% certain, with or without a tool that keeps names; stripped ones 7.4-80.4%."""


def test_the_suggested_min_certain_passes_torchscript_exports_and_the_shim_and_fails_stripped_exports(built_cases):
    exports = [case.path for (_, exporter, how), case in built_cases.items() if exporter == "torchscript" and "strip" not in how]
    exports += [REPO_ROOT / "data" / "bert-tiny-shim.onnx", REPO_ROOT / "data" / "bert-tiny-torchscript.onnx"]
    passed = audit(*exports, min_certain=SUGGESTED_MIN_CERTAIN, workers=1)
    assert passed.exit_code == 0, [(r.path, r.missed) for r in passed.rows if not r.ok]
    stripped = [case.path for (_, exporter, how), case in built_cases.items() if exporter == "torchscript" and how == "strip_all"]
    failed = audit(*stripped, min_certain=SUGGESTED_MIN_CERTAIN, workers=1)
    assert failed.exit_code == 4 and all(row.missed for row in failed.rows)
