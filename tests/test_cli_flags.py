"""The CLI checks every argument against the command's signature before it runs anything.

fire runs a command first and only then complains about what it could not use: a mistyped
flag let `retag` overwrite MODEL.tagged.onnx and then printed a multi-line fire error. These
tests run `tagger.cli.main` on real small models and compare the directory before and after.
"""

from __future__ import annotations

import inspect
import shutil
import subprocess
import sys

import pytest

from tagger.cli import Commands, main
from tests.conftest import REPO_ROOT

# command -> (argv with one mistyped flag, the flag fire would have taken, the same argv corrected)
MISTYPED = {
    "retag": (["retag", "{m}", "--outptu", "{tmp}/out.onnx"], "--output", ["retag", "{m}", "--output", "{tmp}/out.onnx"]),
    "report": (["report", "{m}", "--jsno"], "--json", ["report", "{m}", "--json"]),
    "tree": (["tree", "{m}", "--dpeth", "1"], "--depth", ["tree", "{m}", "--depth", "1"]),
    "extract": (
        ["extract", "{m}", "--modul", "m.encoder.layer.0", "--output", "{tmp}/layer.onnx"],
        "--module",
        ["extract", "{m}", "--module", "m.encoder.layer.0", "--output", "{tmp}/layer.onnx"],
    ),
    "nodes": (
        ["nodes", "{s}", "--modul", "m.encoder.layer.0", "--op_types", "MatMul"],
        "--module",
        ["nodes", "{s}", "--module", "m.encoder.layer.0", "--op_types", "MatMul"],
    ),
    "audit": (["audit", "{tmp}", "--max_falback", "0"], "--max_fallback", ["audit", "{tmp}", "--max_fallback", "0", "--workers=1"]),
    "diff": (["diff", "{m}", "{s}", "--refrence", "{m}"], "--reference", ["diff", "{m}", "{s}", "--reference", "{m}"]),
    "profile": (["profile", "{m}", "--rusn", "1"], "--runs", ["profile", "{m}", "--runs", "1", "--warmup", "0"]),
    "numerics": (
        ["numerics", "{m}", "{s}", "--node_dta", "{tmp}/nd.json"],
        "--node_data",
        ["numerics", "{m}", "{s}", "--node_data", "{tmp}/nd.json"],
    ),
}


@pytest.fixture
def models(tmp_path):
    """Two real small models in a directory of their own: m.onnx (bert-tiny) and s.onnx (its shim export)."""
    shutil.copy(REPO_ROOT / "data" / "bert-tiny.onnx", tmp_path / "m.onnx")
    shutil.copy(REPO_ROOT / "data" / "bert-tiny-shim.onnx", tmp_path / "s.onnx")
    return tmp_path


def files(directory):
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def run(argv, directory, capsys):
    """main(argv) with {m}, {s} and {tmp} filled in: (exit code, stdout, stderr)."""
    code = main([a.format(m=directory / "m.onnx", s=directory / "s.onnx", tmp=directory) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_command_has_a_mistyped_flag_case():
    public = {name for name, _ in inspect.getmembers(Commands, inspect.isfunction) if not name.startswith("_")}
    assert public == set(MISTYPED)


@pytest.mark.parametrize("command", MISTYPED)
def test_a_mistyped_flag_exits_2_before_writing_or_printing_anything(command, models, capsys):
    argv, meant, _ = MISTYPED[command]
    typo = next(arg for arg in argv if arg.startswith("--"))
    before = files(models)
    code, out, err = run(argv, models, capsys)
    assert code == 2
    assert out == ""
    assert err == f"tagger: error: unknown flag {typo} for {command}; did you mean {meant}?\n"
    assert files(models) == before  # no output, inputs byte for byte


@pytest.mark.parametrize("command", MISTYPED)
def test_the_corrected_flag_runs(command, models, capsys):
    _, _, argv = MISTYPED[command]
    code, out, err = run(argv, models, capsys)
    assert code == 0, err
    assert out and err == ""


def test_retag_with_a_mistyped_flag_prints_one_line_as_a_process(models):
    """The lead case of the issue, through `python -m tagger`: no fire usage text, no .tagged.onnx."""
    command = [sys.executable, "-m", "tagger", "retag", str(models / "m.onnx"), "--outptu", str(models / "x.onnx")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, check=False)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "tagger: error: unknown flag --outptu for retag; did you mean --output?\n"
    assert sorted(p.name for p in models.iterdir()) == ["m.onnx", "s.onnx"]


@pytest.mark.parametrize(
    "argv, line",
    [
        (["retagg", "{m}"], "unknown command retagg; did you mean retag?"),
        (["zzz"], "unknown command zzz; the commands: audit, diff, extract, nodes, numerics, profile, report, retag, tree"),
        (["retag"], "missing MODEL for retag; usage: tagger retag MODEL [flags]"),
        (["diff", "{m}"], "missing B for diff; usage: tagger diff A B [flags]"),
        (["retag", "{m}", "{s}"], "unexpected argument {s} for retag; usage: tagger retag MODEL [flags]"),
        (["tree", "{m}", "--zzzzzz"], "unknown flag --zzzzzz for tree; see tagger tree --help"),
        (["audit", "{m}", "{s}", "--max-falback=0"], "unknown flag --max-falback for audit; did you mean --max_fallback?"),
        (["extract", "{m}", "--nopul_producers"], "unknown flag --nopul_producers for extract; did you mean --nopull_producers?"),
        (["extract", "{m}", "--nopull_producers", "{s}"], "--nopull_producers takes no value, got {s}"),
        (["extract", "{m}", "--nopull_producers=1"], "--nopull_producers takes no value, got 1"),
        (["tree", "{m}", "--nodepth"], "unknown flag --nodepth for tree; did you mean --depth?"),
        (["profile", "{m}", "-m"], "ambiguous flag -m for profile: --model or --markdown"),
        (["retag", "{m}", "-", "--output", "{tmp}/o.onnx"], "--output after the separator -: nothing takes arguments there"),
        (["retag", "{m}", "--", "--outptu"], "--outptu after --: only fire's own flags go there (--help, --completion, --trace)"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_a_wrong_call_exits_2_with_one_line_before_anything_runs(argv, line, models, capsys):
    before = files(models)
    code, out, err = run(argv, models, capsys)
    assert (code, out) == (2, "")
    assert err == "tagger: error: " + line.format(m=models / "m.onnx", s=models / "s.onnx") + "\n"
    assert files(models) == before


@pytest.mark.parametrize(
    "argv, written",
    [
        (["retag", "--model", "{m}", "--output={tmp}/o.onnx", "--noinplace"], "o.onnx"),  # a positional by flag, =, --noX
        (["retag", "{m}", "-o", "{tmp}/o.onnx", "-"], "o.onnx"),  # fire's one-letter shortcut, a trailing separator
        (["extract", "{m}", "--all", "--depth", "1", "--out-dir", "{tmp}/d", "--nopull_producers"], "d"),  # - for _
    ],
)
def test_what_fire_accepts_still_runs(argv, written, models, capsys):
    code, _, err = run(argv, models, capsys)
    assert code == 0, err
    assert (models / written).exists()


def test_repeated_dims_and_audits_paths_reach_the_command(models, capsys):
    """Past the flag check, the command's own value checks answer (so the check let them through)."""
    _, _, err = run(["extract", "{m}", "--dim", "a=1", "--dim=b=2"], models, capsys)
    assert err == "tagger: error: --inputs and --dim go with --verify\n"
    code, out, err = run(["audit", "{m}", "{s}", "--json", "--workers", "1"], models, capsys)
    assert (code, err) == (0, "") and out.count("\n") == 3  # two models and the total


def test_help_after_the_fire_separator_is_help_and_runs_nothing(models, capsys):
    code, out, _ = run(["retag", "{m}", "--", "--help"], models, capsys)
    assert code == 0 and "tagger retag MODEL" in out
    assert sorted(files(models)) == ["m.onnx", "s.onnx"]


@pytest.mark.parametrize("command", MISTYPED)
def test_help_shows_plain_types_and_an_example(command, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "Optional[" not in text and "Type: '" not in text
    assert "Type: str" in text  # MODEL, A, PATHS
    assert f"Example: tagger {command} " in text
    assert not any(line.lstrip().startswith("-") and ", --" in line for line in text.splitlines())  # no -x, --xyz shortcuts
