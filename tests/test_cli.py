"""The fire CLI: outputs, reports, and one clear error line with a non-zero exit for bad input."""

import json
import subprocess
import sys

import onnx
import pytest

from tests.graphs import chain_model, tags_of


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tagger", *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(chain_model(["/enc/a/Relu", "", "/enc/b/Relu"]), path)
    return path


def test_retag_writes_stem_tagged_beside_the_input_and_a_json_report(model_file, tmp_path):
    before = model_file.read_bytes()
    result = run_cli("retag", model_file, "--report", tmp_path / "r.json")
    assert result.returncode == 0, result.stderr
    assert "3 nodes tagged" in result.stdout
    tagged = onnx.load(tmp_path / "m.tagged.onnx")
    assert [t["hierarchy.module"] for t in tags_of(tagged)] == ["enc.a", "enc", "enc.b"]
    assert json.loads((tmp_path / "r.json").read_text())["inherited"] == 1
    assert model_file.read_bytes() == before


def test_retag_output_and_inplace(model_file, tmp_path):
    assert run_cli("retag", model_file, "--output", tmp_path / "out.onnx").returncode == 0
    assert (tmp_path / "out.onnx").exists()
    assert run_cli("retag", model_file, "--inplace").returncode == 0
    assert tags_of(onnx.load(model_file))[0]["hierarchy.module"] == "enc.a"
    assert not list(tmp_path.glob(".*.tmp"))


def test_report_json_and_markdown_and_tree(model_file):
    data = json.loads(run_cli("report", model_file, "--json").stdout)
    assert data["nodes"] == 3 and data["direct"] == 2
    assert run_cli("report", model_file, "--markdown").stdout.startswith("# Hierarchy coverage")
    tree = run_cli("tree", model_file, "--depth", "1").stdout
    assert "enc" in tree and "  a" not in tree


def _write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.onnx", "no such file"),
        (lambda p: p, "is a directory"),
        (lambda p: _write(p, "text.onnx", b"this is not a model at all \xff\xfe"), "not an ONNX model"),
        (lambda p: _write(p, "empty.onnx", b""), "not an ONNX model"),
    ],
    ids=["missing", "directory", "not-onnx", "empty"],
)
def test_bad_input_gives_one_error_line_and_exit_2(tmp_path, make, message):
    result = run_cli("retag", make(tmp_path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_truncated_model_is_refused_and_left_untouched(model_file, tmp_path):
    data = model_file.read_bytes()
    truncated = _write(tmp_path, "cut.onnx", data[: len(data) // 2])
    result = run_cli("retag", truncated)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert truncated.read_bytes() == data[: len(data) // 2]
    assert not (tmp_path / "cut.tagged.onnx").exists()


def test_external_data_outside_the_model_directory_is_refused(tmp_path):
    model = chain_model(["/a/Add"], {0: "a.bias"})
    init = model.graph.initializer[0]
    init.ClearField("float_data")
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    init.external_data.add(key="location", value="../../etc/passwd")
    path = tmp_path / "evil.onnx"
    path.write_bytes(model.SerializeToString())
    result = run_cli("report", path)
    assert result.returncode == 2 and "unsafe external data location" in result.stderr


def test_output_equal_to_input_requires_inplace(model_file):
    result = run_cli("retag", model_file, "--output", model_file)
    assert result.returncode == 3 and "--inplace" in result.stderr


COMMANDS = ["audit", "diff", "extract", "profile", "report", "retag", "tree"]


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_command_with_a_description_on_stdout(flag):
    result = run_cli(flag)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for command in COMMANDS:
        at = lines.index(f"     {command}")
        assert len(lines[at + 1].strip()) > 20  # its one-line description


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_command_help_is_help_and_writes_nothing(flag, model_file, tmp_path):
    result = run_cli("report", model_file, flag, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "tagger report MODEL" in result.stdout and "<html" not in result.stdout.lower()
    assert "-h, --html" not in result.stdout and "--html" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert "tagger profile MODEL" in run_cli("profile", "-h").stdout


def test_diff_columns_stay_aligned_with_a_100_character_module_path(tmp_path):
    long = "/".join(["encoder", "layer.0", "attention", "self", "a" * 60, "query_projection_with_a_long_name"])
    assert len(long.replace("/", ".")) >= 100
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(chain_model([f"/{long}/Relu", "/enc/b/Relu", "/enc/c/Relu"]), a)
    onnx.save(chain_model(["/enc/x/Relu", "/enc/b/Relu", "/enc/y/Relu"]), b)
    result = run_cli("diff", a, b)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("  ") and " kept " in line]
    assert len(rows) >= 4 and any(long.replace("/", ".") in row for row in rows)
    assert len({row.index(" -> ") for row in rows}) == 1  # one column for the counts
