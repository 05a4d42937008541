"""Every bad option value is bad input: one `tagger: error: --NAME ...` line and exit 2, nothing written.
The library's own errors name its parameters (`max_fallback`); only the command line spells them as flags."""

from __future__ import annotations

import ast
import inspect
import pickle
import re
import subprocess
import sys

import onnx
import pytest

from tagger import InputError, ParameterError, audit, report, retag
from tagger.cli.arguments import error_line
from tagger.errors import MissingDependency
from tests.conftest import REPO_ROOT
from tests.graphs import chain_model

BAD_OPTIONS = {
    "tree-depth-negative": (["tree", "{model}", "--depth", "-1"], "--depth"),
    "tree-depth-text": (["tree", "{model}", "--depth", "deep"], "--depth"),
    "profile-depth-negative": (["profile", "{model}", "--depth", "-1"], "--depth"),
    "profile-runs-zero": (["profile", "{model}", "--runs", "0"], "--runs"),
    "profile-warmup-negative": (["profile", "{model}", "--warmup", "-1"], "--warmup"),
    "profile-dim-zero": (["profile", "{model}", "--dim", "0"], "--dim"),
    "profile-threads-text": (["profile", "{model}", "--threads", "many"], "--threads"),
    "profile-trace-without-path": (["profile", "{model}", "--trace"], "--trace"),
    "profile-optimize-unknown": (["profile", "{model}", "--optimize", "fast"], "--optimize"),
    "profile-provider-missing": (["profile", "{model}", "--provider", "NoSuch"], "--provider"),
    "profile-timeline-without-path": (["profile", "{model}", "--timeline"], "--timeline"),
    "profile-perfetto-without-path": (["profile", "{model}", "--perfetto"], "--perfetto"),
    "profile-node-data-without-path": (["profile", "{model}", "--node_data"], "--node_data"),
    "profile-perfetto-and-timeline": (["profile", "{model}", "--perfetto", "{tmp}/a", "--timeline", "{tmp}/b"], "--timeline"),
    "profile-compare-when-off": (["profile", "{model}", "--optimize", "off", "--compare_unoptimized"], "--compare_unoptimized"),
    "extract-module-without-value": (["extract", "{model}", "--module"], "--module"),
    "extract-tag-list": (["extract", "{model}", "--tag", "[a,b]"], "--tag"),
    "extract-module-and-tag": (["extract", "{model}", "--module", "enc", "--tag", "*"], "--module"),
    "extract-depth-without-all": (["extract", "{model}", "--module", "enc", "--depth", "1"], "--depth"),
    "extract-all-depth-negative": (["extract", "{model}", "--all", "--depth", "-1", "--out_dir", "{tmp}/out"], "--depth"),
    "extract-all-without-depth": (["extract", "{model}", "--all", "--out_dir", "{tmp}/out"], "--all"),
    "retag-output-without-path": (["retag", "{model}", "--output"], "--output"),
    "retag-inplace-and-output": (["retag", "{model}", "--inplace", "--output", "{tmp}/o.onnx"], "--inplace"),
    "retag-report-suffix": (["retag", "{model}", "--report", "{tmp}/r.txt"], "--report"),
    "audit-min-direct-over-100": (["audit", "{model}", "--min_direct", "120"], "--min_direct"),
    "audit-max-fallback-text": (["audit", "{model}", "--max_fallback", "some"], "--max_fallback"),
    "audit-workers-zero": (["audit", "{model}", "--workers", "0"], "--workers"),
    "audit-flag-before-path": (["audit", "--json", "{model}"], "--json"),
}


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(chain_model(["/enc/a/Relu", "", "/enc/b/Relu"]), path)
    return path


@pytest.mark.parametrize("bad", BAD_OPTIONS, ids=list(BAD_OPTIONS))
def test_every_option_error_exits_2_with_one_line(bad, model, tmp_path):
    args, option = BAD_OPTIONS[bad]
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = [a.format(model=model, tmp=tmp_path) for a in args]
    result = subprocess.run([sys.executable, "-m", "tagger", *argv], capture_output=True, text=True, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("tagger: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert option in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_the_product_takes_no_inference_strategy():
    """The accuracy benchmark's baselines live in `bench/baselines.py`, not in the API."""
    for call in (retag, report):
        assert "strategy" not in inspect.signature(call).parameters


def test_a_missing_dependency_is_bad_input_with_the_install_line():
    error = MissingDependency("profiling", "onnxruntime")
    assert error.exit_code == 2
    assert str(error) == "profiling needs onnxruntime (pip install onnxruntime)"


def test_a_failed_verification_has_its_own_documented_exit_code(tmp_path):
    from tagger import ExtractAllReport, ExtractReport, ModelsFailed, Verification, VerificationFailed
    from tagger.errors import EXIT_CODES

    failed = Verification(False, 1, 0, 0.5, ["y: max |diff| 0.5"])
    one = ExtractReport("m.onnx", "o.onnx", "enc", None, 2, 0, [], [], 0, [], False, failed)
    with pytest.raises(VerificationFailed, match="verification failed for module enc"):
        one.check()
    assert VerificationFailed.exit_code == 6 and 6 in EXIT_CODES
    every = ExtractAllReport("m.onnx", 1, "out", "out/index.json", [one], {"dec": "no boundary outputs"})
    with pytest.raises(VerificationFailed):  # a wrong model outweighs a missing one
        every.check()
    one.verification = Verification(True, 1, 1, 0.0)
    with pytest.raises(ModelsFailed, match="1 module could not be extracted"):
        every.check()


def test_a_library_error_names_the_parameter_and_the_command_line_its_flag(model, tmp_path):
    with pytest.raises(ParameterError) as caught:
        audit(model, max_fallback=120)
    error = caught.value
    assert error.parameter == "max_fallback" and error.exit_code == 2
    assert str(error) == "max_fallback must be a percentage between 0 and 100, got 120"
    assert error_line(error) == "--max_fallback must be a percentage between 0 and 100, got 120"
    assert error_line(pickle.loads(pickle.dumps(error))) == error_line(error)  # as a worker process raised it
    with pytest.raises(InputError) as caught:
        retag(model, inplace=True, output=tmp_path / "o.onnx")
    assert str(caught.value) == "inplace and output exclude each other"
    assert error_line(caught.value) == "--inplace and --output exclude each other"


_ERRORS = {"InputError", "OutputError", "ParameterError", "Refused", "TaggerError", "VerificationFailed", "ModelsFailed"}
_FLAG = re.compile(r"(?<![\w-])--[a-z]")


def _library_modules() -> list:
    """Every module of `tagger/` but the command line's own (`tagger/cli/`)."""
    return [path for path in sorted((REPO_ROOT / "tagger").rglob("*.py")) if path.parent.name != "cli"]


def _error_texts(tree: ast.AST) -> list[tuple[int, str]]:
    """The literal text of every error the module raises or builds (a call to an error type)."""
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", None) in _ERRORS]
    return [(c.lineno, t.value) for c in calls for t in ast.walk(c) if isinstance(t, ast.Constant) and isinstance(t.value, str)]


def _texts(tree: ast.AST) -> list[tuple[int, str]]:
    """Every literal text of the module a user may read (errors, report notes and lines, advice):
    all but docstrings and `EXIT_CODES`, the command line's documented exit codes."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):  # a docstring, or an attribute's docstring after it
            skipped |= {id(s.value) for s in body if isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)}
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == "EXIT_CODES" for target in node.targets):
            skipped |= {id(c) for c in ast.walk(node.value)}
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped
    ]


def test_no_library_error_spells_a_command_line_flag():
    spelled = []
    for path in _library_modules():
        for line, text in _error_texts(ast.parse(path.read_text(encoding="utf-8"))):
            if _FLAG.search(text):
                spelled.append(f"{path.relative_to(REPO_ROOT)}:{line}: {text}")
    assert spelled == []


def test_no_report_note_of_the_library_spells_a_command_line_flag():
    """Notes, advice and report lines name parameters with `param` (`tagger.text.spelled`), never
    `--flag`: the Python API reads `pass reference or weights`, the command line `--reference`."""
    spelled = []
    for path in _library_modules():
        for line, text in _texts(ast.parse(path.read_text(encoding="utf-8"))):
            if _FLAG.search(text):
                spelled.append(f"{path.relative_to(REPO_ROOT)}:{line}: {text}")
    assert spelled == []


def test_a_report_note_names_the_parameter_and_the_command_line_its_flag(tmp_path, capsys):
    from tagger.cli import main

    path = tmp_path / "m.onnx"
    onnx.save(chain_model(["/enc/a/Relu", "", "", "", "/enc/b/Relu"]), path)  # mostly inferred, names unchecked
    notes = report(path).notes
    assert any(note.endswith("placed by inference only; pass reference or weights, or export with shim.export") for note in notes)
    assert "(give modules FILE, written by shim.write_modules(model, FILE))" in notes[-1]
    assert not any(_FLAG.search(note) or "\ue000" in note for note in notes)
    assert main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    assert "pass --reference or --weights, or export with shim.export" in out
    assert "(give --modules FILE, written by shim.write_modules(model, FILE))" in out
    assert report(path).notes == notes  # the command line's spelling ends with it
