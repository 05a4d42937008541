"""Hostile models and paths: nothing outside the model's directory is opened, no output is
written through a symbolic link, and no name from a model reaches a terminal or a Markdown page
unescaped. Asserted with guards (audit hook, inotify, forbidden loaders), not by inspection.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from tagger import InputError, OutputError, report, retag
from tagger.cli import main
from tests.graphs import chain_model, tags_of
from tests.guards import OpenWatch, onnx_loaders_forbidden, opened_files

# --------------------------------------------------------------------------------------------
# external data that points out of the model's directory


def _external_model(location: str) -> onnx.ModelProto:
    model = chain_model(["/a/Add"], {0: "a.bias"})
    bias = model.graph.initializer[0]
    bias.ClearField("raw_data")
    bias.ClearField("float_data")
    bias.data_location = TensorProto.EXTERNAL
    bias.external_data.add(key="location", value=location)
    bias.external_data.add(key="length", value="16")
    return model



def _constant_outside(model: onnx.ModelProto, location: str) -> onnx.ModelProto:
    """`model` with a `Constant` whose tensor attribute lies in external data at `location`: the
    initializers' `location` entries no longer account for every `location` the file spells."""
    value = onnx.helper.make_tensor("c", TensorProto.FLOAT, [4], [0.0] * 4)
    value.ClearField("float_data")
    value.data_location = TensorProto.EXTERNAL
    value.external_data.add(key="location", value=location)
    value.external_data.add(key="length", value="16")
    model.graph.node.insert(0, onnx.helper.make_node("Constant", [], ["c"], name="/a/Constant", value=value))
    return model


def test_an_unsafe_location_in_a_node_attribute_is_refused_beside_safe_initializers(tmp_path):
    """The locations are read from the initializers alone only when their entries are every
    `location` the file's bytes spell (`modelio.external_locations`): a tensor attribute's is not missed."""
    model_dir = tmp_path / "models" / "m"
    model_dir.mkdir(parents=True)
    (model_dir / "weights.bin").write_bytes(np.zeros(4, np.float32).tobytes())
    path = model_dir / "model.onnx"
    path.write_bytes(_constant_outside(_external_model("weights.bin"), "../../etc/passwd").SerializeToString())
    with pytest.raises(InputError, match="unsafe external data location"):
        retag(path, tmp_path / "out.onnx")

@pytest.fixture
def decoy(tmp_path) -> Path:
    """A secret file beside (not inside) the model directory `tmp_path/models/m`."""
    secret = tmp_path / "secret" / "passwd"
    secret.parent.mkdir()
    secret.write_bytes(np.full(4, 0.5, np.float32).tobytes())
    (tmp_path / "models" / "m").mkdir(parents=True)
    return secret


def _locations(decoy: Path) -> dict[str, str]:
    return {
        "climb": "../../secret/passwd",
        "climb-through-subdir": "sub/../../../secret/passwd",
        "absolute": str(decoy),
        "etc-passwd": "../../etc/passwd",
        "symlink-inside": "weights.bin",  # a link in the model directory to the decoy
    }


@pytest.mark.parametrize("kind", ["climb", "climb-through-subdir", "absolute", "etc-passwd", "symlink-inside"])
def test_unsafe_external_data_is_refused_before_any_file_outside_is_opened(kind, decoy, tmp_path, monkeypatch):
    model_dir = tmp_path / "models" / "m"
    location = _locations(decoy)[kind]
    if kind == "symlink-inside":
        (model_dir / location).symlink_to(decoy)
    path = model_dir / "model.onnx"
    path.write_bytes(_external_model(location).SerializeToString())
    good = tmp_path / "good.onnx"
    onnx.save(chain_model(["/a/Relu"]), good)
    report(good)  # warm up: lazy imports open files too, and they are not under test
    _cli("report", str(good))

    watch = OpenWatch(decoy)
    try:
        with onnx_loaders_forbidden(monkeypatch), opened_files() as opened:
            for call in (lambda: report(path), lambda: retag(path), lambda: retag(path, tmp_path / "out.onnx")):
                with pytest.raises(InputError, match="unsafe external data location"):
                    call()
            assert main(["report", str(path)]) == 2
        assert watch.events() == 0, "the decoy outside the model directory was opened or read"
    finally:
        watch.close()
    outside = [p for p in opened if not Path(p).resolve().is_relative_to(model_dir.resolve())]
    assert outside == [], f"opened outside the model directory: {outside}"
    assert {Path(p).resolve() for p in opened} == {path.resolve()}
    assert {p.name for p in model_dir.iterdir()} == {"model.onnx"} | ({location} if kind == "symlink-inside" else set())
    assert not (tmp_path / "out.onnx").exists()


def test_the_guards_see_what_they_guard(decoy, tmp_path, monkeypatch):
    """Controls: the audit hook records Python opens, inotify sees C++ reads, the loaders are fenced."""
    watch = OpenWatch(decoy)
    try:
        with opened_files() as opened:
            decoy.read_bytes()
        assert str(decoy) in opened and watch.events() > 0
        model_dir = tmp_path / "models" / "m"
        (model_dir / "weights.bin").write_bytes(decoy.read_bytes())
        watch.events()
        onnx.save(_external_model("weights.bin"), model_dir / "model.onnx")
        with onnx_loaders_forbidden(monkeypatch), pytest.raises(AssertionError, match="onnx loader"):
            onnx.load(model_dir / "model.onnx")
    finally:
        watch.close()


# --------------------------------------------------------------------------------------------
# outputs and symbolic links


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "m.onnx"
    onnx.save(chain_model(["/enc/a/Relu", "", "/enc/b/Relu"]), path)
    return path


def test_an_output_symlink_is_refused_without_force_and_its_target_never_written(model_file, tmp_path):
    target = tmp_path / "precious.onnx"
    target.write_bytes(b"precious")
    link = tmp_path / "m.tagged.onnx"
    link.symlink_to(target)
    with pytest.raises(OutputError, match="symbolic link"):
        retag(model_file)
    assert link.is_symlink() and target.read_bytes() == b"precious"
    retag(model_file, force=True)
    assert not link.is_symlink() and target.read_bytes() == b"precious"
    assert tags_of(onnx.load(link))[0]["hierarchy.module"] == "enc.a"


def test_a_dangling_output_symlink_is_refused_too(model_file, tmp_path):
    (tmp_path / "out.onnx").symlink_to(tmp_path / "nowhere" / "x.onnx")
    with pytest.raises(OutputError, match="symbolic link"):
        retag(model_file, tmp_path / "out.onnx")
    assert not (tmp_path / "nowhere").exists()


def test_inplace_on_a_symlinked_model_needs_force_and_then_replaces_only_the_link(model_file, tmp_path):
    link = tmp_path / "link.onnx"
    link.symlink_to(model_file)
    before = model_file.read_bytes()
    with pytest.raises(OutputError, match="symbolic link"):
        retag(link, inplace=True)
    retag(link, inplace=True, force=True)
    assert model_file.read_bytes() == before and not link.is_symlink()


def test_a_previous_output_is_overwritten_without_force(model_file, tmp_path):
    output = tmp_path / "m.tagged.onnx"
    output.write_bytes(b"an older output")
    retag(model_file)
    assert tags_of(onnx.load(output))[2]["hierarchy.module"] == "enc.b"


def test_a_symlinked_output_directory_is_fine(model_file, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    retag(model_file, tmp_path / "alias" / "out.onnx")
    assert (real / "out.onnx").is_file()


# --------------------------------------------------------------------------------------------
# names from the model in terminal and Markdown output

HOSTILE = "x\x1b[31mRED\x1b]0;title\x07\u202eevil\u2066\r\nINJECTED | col `code` <script>alert(1)</script> [a](http://x) # h"
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _hostile_model() -> onnx.ModelProto:
    """Hostile text everywhere a report shows model text: module paths (from names and metadata,
    in conflict), node names (fallback listing), an op type, a dangling tensor (a note)."""
    model = chain_model([f"/enc/{HOSTILE}/Relu", HOSTILE, "/enc/b/Relu", "Relu_9"])
    model.graph.node[2].metadata_props.add(key="pkg.torch.onnx.name_scopes", value=repr(["", "enc", f"enc.{HOSTILE}2", "relu"]))
    model.graph.node[1].op_type = f"Op{HOSTILE}"
    model.graph.node[1].domain = "com.example"
    model.graph.node[3].input[0] = f"ghost{HOSTILE}"
    return model


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def hostile_file(tmp_path) -> Path:
    path = tmp_path / "hostile.onnx"
    path.write_bytes(_hostile_model().SerializeToString())
    return path


def _assert_terminal_safe(text: str) -> None:
    assert not _CONTROL.search(text), f"control character in output: {_CONTROL.search(text)!r}"
    assert not any(line.startswith("INJECTED") for line in text.splitlines()), "a newline from a name split a line"


@pytest.mark.parametrize("argv", [("report",), ("tree",), ("retag",)], ids=["report-text", "tree", "retag-summary"])
def test_terminal_output_escapes_escape_sequences_bidi_and_newlines(argv, hostile_file):
    code, out, err = _cli(*argv, str(hostile_file))
    assert code == 0, err
    assert "\\x1b[31mRED" in out or argv[0] == "retag"  # visible, not interpreted
    _assert_terminal_safe(out + err)


def test_markdown_report_escapes_markdown_and_html(hostile_file):
    code, out, _ = _cli("report", str(hostile_file), "--markdown")
    assert code == 0
    _assert_terminal_safe(out)
    fenced = out.split("```")
    outside = "".join(fenced[0::2])  # Markdown text (the module tree sits in a code fence)
    assert "<script>" not in outside and "\\<script\\>" in outside
    assert "[a](http" not in outside and "`code`" not in outside
    for line in outside.splitlines():
        if line.startswith("| Op"):  # the by-op row of the hostile op type: 4 cells, 5 unescaped pipes
            assert len(re.findall(r"(?<!\\)\|", line)) == 5, line
    assert "INJECTED" in out  # escaped, not dropped


def test_error_lines_about_hostile_models_stay_one_safe_line(tmp_path):
    model = chain_model([f"/enc/{HOSTILE}/Relu", HOSTILE])
    model.graph.node[0].input[0] = model.graph.node[1].output[0]  # a cycle naming both nodes
    path = tmp_path / "cycle.onnx"
    path.write_bytes(model.SerializeToString())
    code, out, err = _cli("retag", str(path))
    assert code == 2 and out == "" and err.count("\n") == 1 and "not a DAG" in err
    _assert_terminal_safe(err)


def test_json_keeps_the_names_exactly(hostile_file):
    import json

    code, out, _ = _cli("report", str(hostile_file), "--json")
    data = json.loads(out)
    assert code == 0 and any(HOSTILE in module for module in data["modules"])


def test_hostile_names_are_still_tagged_losslessly(hostile_file, tmp_path):
    retag(hostile_file, tmp_path / "out.onnx")
    tagged = onnx.load(tmp_path / "out.onnx")
    assert tags_of(tagged)[2]["hierarchy.module"] == f"enc.{HOSTILE}2"  # from metadata, verbatim
    for node in tagged.graph.node:
        del node.metadata_props[len(node.metadata_props) - 3 :]
    assert tagged.SerializeToString() == hostile_file.read_bytes()
