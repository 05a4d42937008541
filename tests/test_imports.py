"""A command imports what it runs: `tagger retag` loads neither onnxruntime, graphsurgeon,
extraction, profiling nor auditing's process pool; `import tagger` does not load fire; and the
public names still resolve to what they always were."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
import types

import onnx

import tagger
from tests.graphs import chain_model

_NOT_FOR_RETAG = (
    "onnxruntime",
    "onnx_graphsurgeon",
    "tagger.commands.extract",
    "tagger.commands.profiling",
    "tagger.commands.auditing",
    "tagger.inputs.feeds",
    "multiprocessing",
)


def _modules_after(code: str, *args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_retag_imports_no_other_command(tmp_path):
    source = tmp_path / "in.onnx"
    onnx.save(chain_model(["/a/Relu", "/b/Relu"]), source)
    code = (
        "import json, sys; from tagger.cli import main; "
        "code = main(['retag', sys.argv[1], '--output', sys.argv[2]]); assert code == 0; print(json.dumps(sorted(sys.modules)))"
    )
    loaded = _modules_after(code, str(source), str(tmp_path / "out.onnx"))
    assert (tmp_path / "out.onnx").exists()
    assert not {m for m in loaded if m.split(".")[0] in _NOT_FOR_RETAG or m.startswith(_NOT_FOR_RETAG)}


def test_import_tagger_loads_no_cli_and_no_command_module():
    loaded = _modules_after("import json, sys, tagger; print(json.dumps(sorted(sys.modules)))")
    assert "fire" not in loaded
    assert not {m for m in loaded if m.startswith(_NOT_FOR_RETAG)}


def test_public_names_resolve_to_their_modules_objects():
    from tagger.commands.extract import extract
    from tagger.commands.extract.verify import Verification
    from tagger.commands.profiling import profile

    assert tagger.extract is extract and tagger.Verification is Verification and tagger.profile is profile


def test_no_part_of_tagger_is_named_as_a_public_name():
    """`tagger.extract` and `tagger.numerics` are the functions whatever was imported before: no
    module or package directly in `tagger/` carries a public name, so the import system never binds
    one over the other (the commands' packages live in `tagger/commands/`)."""
    parts = {info.name for info in pkgutil.iter_modules(tagger.__path__)}
    assert parts.isdisjoint(tagger.__all__)
    code = (
        "import json, pkgutil, tagger, importlib; "
        "names = [m.name for m in pkgutil.walk_packages(tagger.__path__, 'tagger.') if m.name != 'tagger.__main__']; "
        "[importlib.import_module(name) for name in names]; "
        "print(json.dumps([n for n in tagger.__all__ if type(getattr(tagger, n)).__name__ == 'module']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    assert type(tagger) is types.ModuleType and callable(tagger.extract) and callable(tagger.numerics)
