"""Bad and unusual inputs through the real CLI: the exit code and message line each one gets.

    python -m bench.robustness          # runs every case, prints the table, writes docs/robustness.md

`CASES` is the one list of inputs: `tests/test_bad_inputs.py` runs the same cases, asserts each
expectation (exit code, message, input untouched, nothing written on failure) and refreshes
the table in docs/robustness.md from its own runs, so the documented messages are the real ones.
Each case builds its files in a fresh directory and runs `tagger.cli.main` in this process (the
very function `python -m tagger` runs; the tests also compare a few against a subprocess).
Paths in messages are shown relative to that directory.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["BadInput", "CASES", "Outcome", "run", "table", "main"]


@dataclass(frozen=True)
class BadInput:
    """One input the CLI must answer clearly; `build` makes its files and returns the argv."""

    id: str
    what: str
    build: Callable[[Path], list[str]]
    exit_code: int
    message: str
    """A fragment of the answer: the stderr line on failure, a stdout line on success."""


@dataclass(frozen=True)
class Outcome:
    argv: list[str]
    exit_code: int
    stdout: str
    stderr: str
    changed: list[str]
    """Files present before the run whose bytes changed or that disappeared."""
    created: list[str]
    """Files the run created."""

    def answer(self, fragment: str) -> str:
        """The line to document: the stderr line, or the stdout line holding `fragment`."""
        if self.stderr.strip():
            return self.stderr.strip()
        lines = self.stdout.splitlines()
        return next((line for line in lines if fragment in line), lines[0] if lines else "")


# --------------------------------------------------------------------------------------------
# models


def _value(name: str, dtype: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, [4])


def _chain(names=("/enc/a/Relu", "/enc/b/Relu", "/enc/c/Relu")) -> onnx.ModelProto:
    """x -> Relu -> Relu -> Relu -> y, with scoped names."""
    tensors = ["x", *(f"t{i}" for i in range(len(names) - 1)), "y"]
    nodes = [helper.make_node("Relu", [tensors[i]], [tensors[i + 1]], name=n) for i, n in enumerate(names)]
    graph = helper.make_graph(nodes, "chain", [_value("x")], [_value("y")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _with_initializer(location: str | None = None) -> onnx.ModelProto:
    """x + enc.bias -> y; with `location`, the bias is external data at that location."""
    bias = numpy_helper.from_array(np.full((4,), 0.5, np.float32), "enc.bias")
    if location is not None:
        bias.ClearField("raw_data")
        bias.data_location = TensorProto.EXTERNAL
        bias.external_data.add(key="location", value=location)
        bias.external_data.add(key="offset", value="0")
        bias.external_data.add(key="length", value="16")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "enc.bias"], ["y"], name="/enc/Add")], "bias", [_value("x")], [_value("y")], [bias]
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _save(model: onnx.ModelProto | bytes, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    return path


def _graph_offset(model: onnx.ModelProto) -> int:
    """Where the graph field starts in the serialized model (it follows ir_version only)."""
    return len(onnx.ModelProto(ir_version=model.ir_version).SerializeToString())


def _flip(data: bytes, offset: int, bit: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ (1 << bit)]) + data[offset + 1 :]


def _nested_ifs(levels: int) -> onnx.ModelProto:
    """`If` nodes nested `levels` deep (each then-branch holds the next `If`)."""

    def leaf(i: int) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node("Identity", ["x"], [f"e{i}"])], f"e{i}", [], [_value(f"e{i}")])

    body = leaf(0)
    for i in range(1, levels):
        node = helper.make_node("If", ["c"], [f"y{i}"], name=f"/deep/If_{i}", then_branch=body, else_branch=leaf(i))
        body = helper.make_graph([node], f"b{i}", [], [_value(f"y{i}")])
    graph = helper.make_graph(list(body.node), "main", [_value("x"), _value("c", TensorProto.BOOL)], list(body.output))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _cycle() -> onnx.ModelProto:
    model = _chain()
    model.graph.node[0].input[0] = "t1"  # a reads b's output, b reads a's
    return model


def _self_loop() -> onnx.ModelProto:
    model = _chain(("/enc/a/Relu",))
    model.graph.node[0].input[0] = "y"
    return model


def _cycle_in_body() -> onnx.ModelProto:
    body = helper.make_graph(
        [helper.make_node("Add", ["x", "q"], ["p"], name="/blk/p"), helper.make_node("Relu", ["p"], ["q"], name="/blk/q")],
        "then",
        [],
        [_value("q")],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], name="/blk/If", then_branch=body, else_branch=body)],
        "main",
        [_value("x"), _value("c", TensorProto.BOOL)],
        [_value("y")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _empty_graph() -> onnx.ModelProto:
    graph = helper.make_graph([], "empty", [_value("x")], [_value("x")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _dangling() -> onnx.ModelProto:
    model = _chain()
    model.graph.node[1].input[0] = "ghost"
    return model


def _unknown_domain() -> onnx.ModelProto:
    model = _chain()
    model.graph.node[1].op_type = "Mystery"
    model.graph.node[1].domain = "com.example.unknown"
    return model


def _unsorted() -> onnx.ModelProto:
    model = _chain()
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend([nodes[2], nodes[0], nodes[1]])
    return model


def _produced_twice() -> onnx.ModelProto:
    model = _chain()
    model.graph.node[1].output[0] = "t0"
    model.graph.node[2].input[0] = "t0"
    return model


# --------------------------------------------------------------------------------------------
# cases: each builds its files under `root` and returns the CLI arguments


def _missing(root: Path) -> list[str]:
    return ["retag", str(root / "missing.onnx")]


def _directory(root: Path) -> list[str]:
    (root / "models").mkdir()
    return ["retag", str(root / "models")]


def _file(name: str, data: bytes) -> Callable[[Path], list[str]]:
    return lambda root: ["retag", str(_save(data, root / name))]


def _model(name: str, make: Callable[[], onnx.ModelProto], *extra: str) -> Callable[[Path], list[str]]:
    return lambda root: ["retag", str(_save(make(), root / name)), *extra]


def _truncated_half(root: Path) -> list[str]:
    data = _chain().SerializeToString()
    return ["retag", str(_save(data[: len(data) // 2], root / "half.onnx"))]


def _truncated_after_graph(root: Path) -> list[str]:
    model = _chain()
    graph_end = len(onnx.ModelProto(ir_version=model.ir_version, graph=model.graph).SerializeToString())
    return ["retag", str(_save(model.SerializeToString()[:graph_end], root / "cut.onnx"))]


def _flipped_length(root: Path) -> list[str]:
    model = _chain()
    data = _flip(model.SerializeToString(), _graph_offset(model) + 1, 6)  # the graph's length prefix
    return ["retag", str(_save(data, root / "flipped.onnx"))]


def _flipped_name(root: Path) -> list[str]:
    data = _chain().SerializeToString()
    data = _flip(data, data.index(b"/enc/b/Relu") + 2, 7)  # 'n' -> 0xee: not UTF-8
    return ["retag", str(_save(data, root / "flipped.onnx"))]


def _external(location: str, data_file: bool = False) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        model_dir = root / "models" / "m"
        if data_file:
            _save(np.full((4,), 0.5, np.float32).tobytes(), model_dir / location)
        return ["retag", str(_save(_with_initializer(location), model_dir / "model.onnx"))]

    return build


def _external_symlink(root: Path) -> list[str]:
    secret = _save(np.full((4,), 0.5, np.float32).tobytes(), root / "outside" / "secret.bin")
    model_dir = root / "models"
    model_dir.mkdir()
    (model_dir / "weights.bin").symlink_to(secret)
    return ["retag", str(_save(_with_initializer("weights.bin"), model_dir / "model.onnx"))]


def _output_missing_dir(root: Path) -> list[str]:
    return ["retag", str(_save(_chain(), root / "m.onnx")), "--output", str(root / "nowhere" / "out.onnx")]


def _output_directory(root: Path) -> list[str]:
    (root / "out.onnx").mkdir()
    return ["retag", str(_save(_chain(), root / "m.onnx")), "--output", str(root / "out.onnx")]


def _output_symlink(force: bool) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        target = _save(b"precious", root / "elsewhere" / "precious.onnx")
        (root / "m.tagged.onnx").symlink_to(target)
        return ["retag", str(_save(_chain(), root / "m.onnx")), *(["--force"] if force else [])]

    return build


def _output_is_input(root: Path) -> list[str]:
    source = _save(_chain(), root / "m.onnx")
    return ["retag", str(source), "--output", str(source)]


def _inplace_and_output(root: Path) -> list[str]:
    return ["retag", str(_save(_chain(), root / "m.onnx")), "--inplace", "--output", str(root / "o.onnx")]


def _mistyped_flag(root: Path) -> list[str]:
    return ["retag", str(_save(_chain(), root / "m.onnx")), "--outptu", str(root / "o.onnx")]


def _unknown_command(root: Path) -> list[str]:
    return ["retagg", str(_save(_chain(), root / "m.onnx"))]


def _report_suffix(root: Path) -> list[str]:
    return ["retag", str(_save(_chain(), root / "m.onnx")), "--report", str(root / "r.txt")]


def _report_symlink(root: Path) -> list[str]:
    target = _save(b"precious", root / "elsewhere" / "notes.md")
    (root / "r.md").symlink_to(target)
    return ["retag", str(_save(_chain(), root / "m.onnx")), "--report", str(root / "r.md")]


CASES: tuple[BadInput, ...] = (
    BadInput("missing-path", "a path that does not exist", _missing, 2, "no such file"),
    BadInput(
        "missing-directory",
        "a path in a directory that does not exist (the input's error comes first)",
        lambda root: ["retag", str(root / "nowhere" / "m.onnx")],
        2,
        "no such file",
    ),
    BadInput("directory", "a directory", _directory, 2, "is a directory"),
    BadInput("empty-file", "an empty file (0 bytes)", _file("empty.onnx", b""), 2, "not an ONNX model"),
    BadInput("text-file", "a text file", _file("notes.onnx", b"name,value\nlr,0.1\n"), 2, "not an ONNX model"),
    BadInput(
        "random-bytes", "4 KiB of random bytes", _file("noise.onnx", np.random.default_rng(0).bytes(4096)), 2, "not an ONNX model"
    ),
    BadInput("no-graph", "a protobuf ModelProto without a graph", _file("nograph.onnx", b"\x08\x08"), 2, "no graph"),
    BadInput("truncated-half", "a model cut in half", _truncated_half, 2, "protobuf parse failed"),
    BadInput(
        "truncated-after-graph",
        "a model cut right after its graph (opset_import and later fields gone)",
        _truncated_after_graph,
        2,
        "no opset_import",
    ),
    BadInput("bit-flip-length", "one bit flipped in the graph's length prefix", _flipped_length, 2, "protobuf parse failed"),
    BadInput("bit-flip-utf8", "one bit flipped in a node name (no longer UTF-8)", _flipped_name, 2, "invalid UTF-8 string"),
    BadInput(
        "nesting-too-deep",
        "`If` bodies nested 33 deep (beyond protobuf's decoding depth)",
        _model("deep.onnx", lambda: _nested_ifs(33)),
        2,
        "MaxDepth",
    ),
    BadInput("external-data-missing", "external data whose file is missing", _external("model.onnx.data"), 2, "is missing"),
    BadInput(
        "external-data-traversal",
        "external data at `../../etc/passwd`",
        _external("../../etc/passwd"),
        2,
        "unsafe external data location",
    ),
    BadInput(
        "external-data-absolute", "external data at `/etc/passwd`", _external("/etc/passwd"), 2, "unsafe external data location"
    ),
    BadInput(
        "external-data-symlink",
        "external data file that is a symbolic link out of the model's directory",
        _external_symlink,
        2,
        "unsafe external data location",
    ),
    BadInput("cycle", "a main graph whose nodes form a cycle", _model("cycle.onnx", _cycle), 2, "not a DAG"),
    BadInput("self-loop", "a node that reads its own output", _model("loop.onnx", _self_loop), 2, "not a DAG"),
    BadInput("cycle-in-body", "a cycle inside an `If` body", _model("body.onnx", _cycle_in_body), 2, "not a DAG"),
    BadInput(
        "empty-graph", "a valid graph without nodes (tagged: nothing to do)", _model("empty.onnx", _empty_graph), 0, "no nodes"
    ),
    BadInput(
        "dangling-input",
        "a node input that nothing produces (tagged, noted)",
        _model("dangling.onnx", _dangling),
        0,
        "nothing produces",
    ),
    BadInput(
        "unknown-domain",
        "an op of an unknown domain without opset import (tagged)",
        _model("custom.onnx", _unknown_domain),
        0,
        "3 nodes tagged",
    ),
    BadInput(
        "unsorted", "nodes out of topological order, no cycle (tagged, noted)", _model("unsorted.onnx", _unsorted), 0, "topological"
    ),
    BadInput("produced-twice", "a tensor produced by two nodes (tagged, noted)", _model("ssa.onnx", _produced_twice), 0, "SSA"),
    BadInput("output-dir-missing", "`--output` into a directory that does not exist", _output_missing_dir, 3, "does not exist"),
    BadInput("output-is-directory", "`--output` naming a directory", _output_directory, 3, "is a directory"),
    BadInput("output-symlink", "an output path that is a symbolic link", _output_symlink(False), 3, "symbolic link"),
    BadInput(
        "output-symlink-force",
        "the same with `--force` (the link is replaced; its target is not written)",
        _output_symlink(True),
        0,
        "wrote",
    ),
    BadInput("output-is-input", "`--output` equal to the input", _output_is_input, 3, "use --inplace"),
    BadInput("inplace-and-output", "`--inplace` together with `--output`", _inplace_and_output, 2, "exclude each other"),
    BadInput("report-suffix", "`--report` not ending in .json or .md", _report_suffix, 2, "must end in .json or .md"),
    BadInput("report-symlink", "a `--report` path that is a symbolic link", _report_symlink, 3, "symbolic link"),
    BadInput("mistyped-flag", "a mistyped flag (checked before anything runs)", _mistyped_flag, 2, "did you mean --output?"),
    BadInput("unknown-command", "a mistyped command", _unknown_command, 2, "did you mean retag?"),
)


# --------------------------------------------------------------------------------------------
# running and publishing


def _snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry below `root`: file bytes, or the target of a symbolic link."""
    entries: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            entries[key] = f"-> {os.readlink(path)}"
        elif path.is_file():
            entries[key] = path.read_bytes()
    return entries


def run(case: BadInput, root: Path) -> Outcome:
    """Build `case` under the empty directory `root` and run the CLI on it, in this process."""
    from tagger.cli import main

    argv = case.build(root)
    before = _snapshot(root)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        exit_code = main(argv)
    after = _snapshot(root)
    prefix = str(root) + os.sep

    def relative(text: str) -> str:
        return text.replace(prefix, "")

    return Outcome(
        argv=[relative(a) for a in argv],
        exit_code=exit_code,
        stdout=relative(stdout.getvalue()),
        stderr=relative(stderr.getvalue()),
        changed=sorted(k for k, v in before.items() if after.get(k) != v),
        created=sorted(set(after) - set(before)),
    )


def table(outcomes: dict[str, Outcome]) -> str:
    """The Markdown table of every case, in `CASES` order."""
    lines = ["| input | command | exit | answer |", "|---|---|---:|---|"]
    for case in CASES:
        outcome = outcomes[case.id]
        answer = outcome.answer(case.message).replace("|", "\\|")
        command = "tagger " + " ".join(outcome.argv)
        lines.append(f"| {case.what} | `{command}` | {outcome.exit_code} | `{answer}` |")
    return "\n".join(lines)


def run_all() -> dict[str, Outcome]:
    outcomes = {}
    for case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            outcomes[case.id] = run(case, Path(tmp))
    return outcomes


def publish_table(outcomes: dict[str, Outcome]) -> str:
    """Write the table into docs/robustness.md between its markers; returns the table."""
    from bench.docs import publish

    text = table(outcomes)
    publish("robustness", text, ("docs/robustness.md",))
    return text


def main() -> None:
    outcomes = run_all()
    print(publish_table(outcomes))
    wrong = [c.id for c in CASES if outcomes[c.id].exit_code != c.exit_code or c.message not in outcomes[c.id].answer(c.message)]
    if wrong:
        raise SystemExit(f"unexpected answers: {', '.join(wrong)}")


if __name__ == "__main__":
    main()
