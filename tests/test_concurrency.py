"""Several `tagger retag` processes at once, and a process killed in the middle of writing.

Outputs are written to a temporary file in the output directory and renamed into place, so a
reader never sees a partial output, and a killed process leaves the output path as it was. What
a SIGKILL cannot clean up is its own temporary file: a hidden `.<output name>.<random>.tmp`
beside the output (documented in docs/robustness.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import onnx
import pytest

from bench.docs import ROOT
from tagger import retag
from tests.graphs import chain_model, tags_of

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _tagger(*argv: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tagger", *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
    )


def _finish(process: subprocess.Popen) -> None:
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.fixture
def dynamo_export(built_cases, tmp_path) -> Path:
    """A default dynamo export (model.onnx + model.onnx.data) in a directory of its own."""
    case = built_cases[("bert", "dynamo", "none")]
    directory = tmp_path / "in"
    directory.mkdir()
    for name in ("model.onnx", "model.onnx.data"):
        shutil.copy2(case.path.parent / name, directory / name)
    return directory / "model.onnx"


def test_two_processes_on_one_input_with_different_outputs_both_succeed(dynamo_export, tmp_path):
    before = _files(dynamo_export.parent)
    elsewhere = tmp_path / "out"
    elsewhere.mkdir()
    a = dynamo_export.with_name("a.onnx")  # beside the input: shares model.onnx.data
    b = elsewhere / "b.onnx"  # elsewhere: copies model.onnx.data
    processes = [_tagger("retag", dynamo_export, "--output", a), _tagger("retag", dynamo_export, "--output", b)]
    for process in processes:
        _finish(process)
    assert a.read_bytes() == b.read_bytes()
    assert _files(dynamo_export.parent) == {**before, "a.onnx": a.read_bytes()}
    assert (elsewhere / "model.onnx.data").read_bytes() == before["model.onnx.data"]
    onnx.checker.check_model(str(b), full_check=True)


def test_two_processes_writing_into_one_other_directory_share_one_data_copy(dynamo_export, tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    processes = [_tagger("retag", dynamo_export, "--output", target / f"{n}.onnx") for n in ("a", "b", "c")]
    for process in processes:
        _finish(process)
    assert sorted(os.listdir(target)) == ["a.onnx", "b.onnx", "c.onnx", "model.onnx.data"]
    assert (target / "model.onnx.data").read_bytes() == dynamo_export.with_name("model.onnx.data").read_bytes()


def test_two_processes_writing_one_output_leave_one_complete_file(tmp_path):
    source = tmp_path / "m.onnx"
    onnx.save(chain_model(["/enc/a/Relu", "", "/enc/b/Relu"]), source)
    processes = [_tagger("retag", source) for _ in range(2)]
    for process in processes:
        _finish(process)
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.tagged.onnx"]
    onnx.checker.check_model(str(tmp_path / "m.tagged.onnx"), full_check=True)


# A retag whose output stream writes half of what it is given, then the process SIGKILLs itself.
_DIES_MID_WRITE = textwrap.dedent(
    """
    import os, signal, sys

    real_fdopen = os.fdopen

    class Dying:
        def __init__(self, stream):
            self.stream = stream
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return False
        def write(self, data):
            self.stream.write(data[: len(data) // 2])
            self.stream.flush()
            os.fsync(self.stream.fileno())
            print(len(data), file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    def fdopen(fd, mode="r", *args, **kwargs):
        stream = real_fdopen(fd, mode, *args, **kwargs)
        return Dying(stream) if "w" in mode else stream

    os.fdopen = fdopen
    from tagger.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize("situation", ["new-output", "previous-output", "inplace"])
def test_a_process_killed_mid_write_leaves_no_partial_output(situation, tmp_path):
    source = tmp_path / "m.onnx"
    onnx.save(chain_model(["/enc/a/Relu", "", "/enc/b/Relu"]), source)
    output = tmp_path / ("m.onnx" if situation == "inplace" else "m.tagged.onnx")
    if situation == "previous-output":
        output.write_bytes(b"the previous output")
    before = _files(tmp_path)
    argv = ["retag", str(source), *(["--inplace"] if situation == "inplace" else [])]
    result = subprocess.run([sys.executable, "-c", _DIES_MID_WRITE, *argv], capture_output=True, text=True, env=ENV)
    assert result.returncode == -signal.SIGKILL, result.stderr
    payload = int(result.stderr.split()[-1])
    leftovers = [name for name in os.listdir(tmp_path) if name not in before]
    assert len(leftovers) == 1 and leftovers[0].startswith(f".{output.name}.") and leftovers[0].endswith(".tmp")
    assert (tmp_path / leftovers[0]).stat().st_size == payload // 2  # it died in the middle of the write
    assert _files(tmp_path).items() >= before.items()  # the input and any previous output: untouched
    assert output.exists() == (situation != "new-output")


@pytest.mark.parametrize("inplace", [True, False])
def test_only_an_output_that_replaces_the_input_waits_for_the_disk(inplace, tmp_path, monkeypatch):
    """`--inplace` is the one write that could lose the user's model on a power loss: it is
    flushed (fsync) before the rename; other outputs can be made again and are not."""
    source = tmp_path / "m.onnx"
    onnx.save(chain_model(["/enc/a/Relu", "/enc/b/Relu"]), source)
    flushed: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (flushed.append(fd), real_fsync(fd))[1])
    if inplace:
        retag(source, inplace=True)
    else:
        retag(source)
    assert len(flushed) == (1 if inplace else 0)
    assert tags_of(onnx.load(source if inplace else tmp_path / "m.tagged.onnx"))[0]["hierarchy.module"] == "enc.a"
