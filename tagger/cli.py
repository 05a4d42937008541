"""`tagger` on the command line, through fire: thin wrappers that print and return nothing.

Every argument is checked against the command's signature before anything runs (fire would run
the command first and complain about a mistyped flag afterwards).

Exit codes (`tagger.errors.EXIT_CODES`): 0 success, 1 internal error, 2 bad input, option or flag,
3 output not writable; `audit` also 4 (a model missed a threshold) and 5 (a file could not be
audited); `extract` 5 (--all: a module could not be extracted) and 6 (--verify failed).
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import os
import re
import sys
from collections.abc import Mapping

import fire
from fire import helptext, parser
from fire.trace import FireTrace

from tagger import api
from tagger.errors import InputError, TaggerError, one_line
from tagger.options import check_flag, check_integer, check_names, check_text

__all__ = ["main", "Commands"]


class Commands:
    """Tag every node of an ONNX model with the nn.Module it came from.

    Example: tagger retag model.onnx && tagger tree model.tagged.onnx --depth 3
    """

    def retag(
        self,
        model: str,
        output: str | None = None,
        report: str | None = None,
        inplace: bool = False,
        namespace: bool = False,
        force: bool = False,
        reference: str | None = None,
        weights: str | None = None,
        modules: str | None = None,
    ) -> None:
        """Tag MODEL and write MODEL stem + .tagged.onnx (or --output PATH, or --inplace).

        --report PATH also writes the coverage report (.json or .md).
        --namespace also writes Model Explorer's `namespace` entry (the tag's path) on nodes without one.
        --force replaces an output (or report) path that is a symbolic link; without it that is refused.
        --reference ORIG.onnx  carry the tags of the model a tool made MODEL from (matched node to node)
        --weights CKPT         name anonymous weights after the checkpoint's tensors (.safetensors, a shard directory, .bin/.pt)
        --modules FILE         the model's named_modules() paths (shim.write_modules): names outside them are never written
        Example: tagger retag model.onnx --report model.report.md
        """
        output, report = check_text("output", output), check_text("report", report)
        evidence = {"reference": check_text("reference", reference), "weights": check_text("weights", weights)}
        evidence["modules"] = check_text("modules", modules)
        summary = api.retag(str(model), output, report, bool(inplace), namespace=bool(namespace), force=bool(force), **evidence)
        print(summary.summary())

    def report(
        self,
        model: str,
        json: bool = False,
        markdown: bool = False,
        html: bool = False,
        certain: bool = False,
        reference: str | None = None,
        weights: str | None = None,
        modules: str | None = None,
    ) -> None:
        """Print MODEL's coverage report (text; --json, --markdown, or --html: a static page of the module tree).

        --json lists every inherited node with its module, the bound it was chosen in and whether
        it is certain; --certain lists only the certain ones.
        --reference ORIG.onnx and --weights CKPT add evidence and --modules FILE checks names, as for retag.
        Example: tagger report model.tagged.onnx --markdown
        """
        result = api.report(
            str(model),
            reference=check_text("reference", reference),
            weights=check_text("weights", weights),
            modules=check_text("modules", modules),
        )
        if certain:
            result = result.only_certain()
        if html:
            print(result.to_html(), end="")
        else:
            _show(result, json, markdown)

    def tree(self, model: str, depth: int | None = None, modules: str | None = None) -> None:
        """Print MODEL's module tree with node counts, down to --depth N levels (--modules FILE: as for retag).

        Per module: its subtree's nodes (its own nodes: direct, certain, chosen, fallback); a module
        whose own nodes are mostly chosen (inferred by choice, not from facts) is marked [mostly chosen].
        Example: tagger tree model.tagged.onnx --depth 3
        """
        depth = check_integer("depth", depth)
        print(api.report(str(model), modules=check_text("modules", modules)).tree(depth, legend=True))

    def extract(
        self,
        model: str,
        module: str | None = None,
        tag: str | None = None,
        output: str | None = None,
        verify: bool = False,
        all: bool = False,
        depth: int | None = None,
        out_dir: str | None = None,
        pull_producers: bool = True,
        inputs: str | None = None,
        dim: object = 1,
        branch: str | None = None,
    ) -> None:
        """Cut a module out of MODEL as a runnable ONNX model (boundary tensors keep their names).

        --module PATH   dotted module path ("" = the whole model); --tag PATTERN  glob on hierarchy.tag
        --output OUT    default: MODEL stem + .PATH.onnx beside MODEL
        --all --depth N --out_dir DIR   one model per module at depth N, plus DIR/index.json
        --verify        run both models in onnxruntime and compare the boundary tensors, on
                        --inputs NPZ (arrays named after the graph inputs) or generated inputs
                        (dynamic sizes: --dim N for all, --dim NAME=VALUE per symbol, repeatable)
        --nopull_producers   keep input-independent producers (constants) outside: they become inputs
        --branch then|else   the If branch to cut a module from when it lives in both (optimum's merged
                        decoders); --all writes every branch, its name in the file name
        A path fire would read as a number (0.10) must be quoted twice: --module '"0.10"'.
        Example: tagger extract model.onnx --module m.encoder.layer.0 --output layer0.onnx --verify
        """
        from tagger.extract import extract, extract_all  # each command imports what only it runs
        from tagger.feeds import parse_dim_option

        module, tag = check_text("module", module), check_text("tag", tag)
        output, out_dir = check_text("output", output), check_text("out_dir", out_dir)
        if not verify and (inputs is not None or dim != 1):
            raise InputError("--inputs and --dim go with --verify")
        _check_inputs_or_dims(inputs, dim)
        feeds = {"inputs": check_text("inputs", inputs), "dim": parse_dim_option(dim)}
        branch = check_text("branch", branch)
        if not all:
            if depth is not None or out_dir is not None:
                raise InputError("--depth and --out_dir go with --all")
            result = extract(str(model), module, tag, output, bool(pull_producers), bool(verify), **feeds, branch=branch)
        elif depth is None or out_dir is None or output is not None or module is not None or tag is not None or branch is not None:
            raise InputError("--all takes --depth N and --out_dir DIR (and no --module, --tag, --output or --branch)")
        else:
            result = extract_all(str(model), depth, out_dir, bool(pull_producers), bool(verify), **feeds)
        print(result.summary())
        result.check()

    def nodes(
        self,
        model: str,
        module: str | None = None,
        tag: str | None = None,
        op_types: str | None = None,
        json: bool = False,
        reference: str | None = None,
        weights: str | None = None,
        modules: str | None = None,
    ) -> None:
        """Print the names of a module's nodes, one per line: onnxruntime's quantizers take them (nodes_to_exclude).

        --module PATH     the module and everything below it ("" = the whole model); --tag PATTERN  glob on hierarchy.tag
        --op_types A,B    only nodes of these op types (MatMul,Gemm,Conv)
        --json            a JSON list, per node: name, op_type, graph, module, tag and kind (direct, certain, chosen, fallback)
        --reference ORIG.onnx and --weights CKPT add evidence and --modules FILE checks names, as for retag
                          (when MODEL has untagged nodes: it is then tagged in memory)
        Nodes left out (no name, inside a function) and listed nodes whose tag is chosen are said on stderr.
        A path fire would read as a number (0.10) must be quoted twice: --module '"0.10"'.
        Example: tagger nodes model.onnx --module m.encoder.layer.0 --op_types MatMul > layer0.txt
        """
        from tagger.nodelist import module_nodes

        module, tag = check_text("module", module), check_text("tag", tag)
        evidence = {"reference": check_text("reference", reference), "weights": check_text("weights", weights)}
        evidence["modules"] = check_text("modules", modules)
        json = check_flag("json", json)
        result = module_nodes(str(model), module, tag, check_names("op_types", op_types), **evidence)
        print(result.to_json() if json else result.to_text(), end="\n" if json else "")
        for line in result.notes(text=not json):
            print(f"tagger: {line}", file=sys.stderr)

    def audit(
        self,
        *paths: str,
        min_direct: float | None = None,
        max_fallback: float | None = None,
        workers: int | None = None,
        json: bool = False,
        markdown: bool = False,
        min_certain: float | None = None,
    ) -> None:
        """Audit the coverage of every model in PATHS (files; directories: their *.onnx, recursively).

        One line per model and a total (--json: JSON lines, one per model, then the total).
        --min_direct P   fail when a model's direct share is below P percent
        --max_fallback P fail when a model's fallback share is above P percent
        --min_certain P  fail when a model's certain share (direct + certainly inferred nodes) is below P percent
        --workers N      parallel processes (default: one per CPU)
        Exit 4 when a model missed a threshold, 5 when a file could not be audited. Flags go after the paths.
        Example: tagger audit models/ --max_fallback 0 --json
        """
        from tagger.auditing import audit

        json, markdown = check_flag("json", json), check_flag("markdown", markdown)
        result = audit(
            *[str(p) for p in paths], min_direct=min_direct, max_fallback=max_fallback, workers=workers, min_certain=min_certain
        )
        _show(result, json, markdown)
        result.check()

    def diff(
        self, a: str, b: str, json: bool = False, markdown: bool = False, reference: str | None = None, weights: str | None = None
    ) -> None:
        """Compare the module tags of two versions of a model (A before, B after a tool), by module.

        Nodes are matched by name, then by output tensor; untagged models are tagged in memory,
        with --weights CKPT as evidence, and B also with --reference ORIG.onnx (often A itself).
        Example: tagger diff model.onnx model.slim.onnx --reference model.onnx
        """
        from tagger.diffing import diff

        result = diff(str(a), str(b), check_text("reference", reference), check_text("weights", weights))
        _show(result, json, markdown)

    def profile(
        self,
        model: str,
        inputs: str | None = None,
        runs: int = 10,
        warmup: int = 1,
        dim: object = 1,
        optimize: object = "all",
        threads: int = 0,
        trace: str | None = None,
        depth: int | None = None,
        json: bool = False,
        markdown: bool = False,
        provider: object = "CPUExecutionProvider",
        perfetto: str | None = None,
        speedscope: str | None = None,
        node_data: str | None = None,
        compare_unoptimized: bool = False,
        timeline: str | None = None,
    ) -> None:
        """Run MODEL in onnxruntime with profiling on and print its latency per module as a tree.

        --inputs NPZ   arrays named after the graph inputs (default: generated from the model; dynamic
                       sizes: --dim N for all, --dim NAME=VALUE per symbol, repeatable)
        --runs N       measured runs (after --warmup N); --threads N intra-op threads (0: onnxruntime's default)
        --optimize L   onnxruntime's graph optimizations: off, basic, extended, layout or all (default all,
                       as a session runs; kernels are matched to the graph onnxruntime wrote, tagged with
                       MODEL as its reference); off: every kernel is one node of the file
        --provider P   execution providers in order (P or P1,P2; default CPUExecutionProvider)
        --perfetto PATH.json    module spans around the kernels, Trace Event Format (ui.perfetto.dev,
                                chrome://tracing); --timeline PATH.json is its older name
        --speedscope PATH.json  a per-module flame graph in speedscope's format
        --node_data PATH.json   Model Explorer node data: each node's time on the file's nodes (--node_data_paths)
        --compare_unoptimized   also run with optimizations off: per module, unoptimized vs optimized time
        --trace PATH   keep onnxruntime's raw trace; --depth N limits the tree
        Example: tagger profile model.tagged.onnx --runs 20 --depth 4 --perfetto model.trace.json
        """
        from tagger.feeds import parse_dim_option
        from tagger.profiling import profile

        depth = check_integer("depth", depth)
        inputs, trace = check_text("inputs", inputs), check_text("trace", trace)
        files = {"perfetto": perfetto, "speedscope": speedscope, "node_data": node_data, "timeline": timeline}
        views = {name: check_text(name, value) for name, value in files.items()}
        _check_inputs_or_dims(inputs, dim)
        dims, compare = parse_dim_option(dim), bool(compare_unoptimized)
        result = profile(
            str(model), inputs, runs, warmup, dims, optimize, threads, trace, provider, compare_unoptimized=compare, **views
        )
        if json:
            print(result.to_json())
        elif markdown:
            print(result.to_markdown(), end="")
        else:
            print(result.to_text(depth))


_COMMANDS = sorted(name for name, _ in inspect.getmembers(Commands, inspect.isfunction) if not name.startswith("_"))


def _show(result, json: bool, markdown: bool) -> None:
    """Print a report object as JSON, Markdown or terminal text."""
    if json:
        print(result.to_json())
    elif markdown:
        print(result.to_markdown(), end="")
    else:
        print(result.to_text())


def _check_inputs_or_dims(inputs: object, dim: object) -> None:
    if inputs is not None and dim != 1:
        raise InputError("--inputs gives the arrays, --dim sizes generated ones: pass one of them")


def _help(args: list[str], asked: bool) -> str | None:
    """The help text `-h`/`--help` (or fire's `-- --help`) asks for, or None. Answered here, on stdout,
    for the command named first (fire would read `report MODEL -h` as `--html`, and run `report MODEL --help`)."""
    if not asked and not any(arg in ("-h", "--help") for arg in args):
        return None
    commands = Commands()
    fire_trace = FireTrace(commands, name="tagger")
    component: object = commands
    if args and args[0] in _COMMANDS:
        component = getattr(commands, args[0])
        fire_trace.AddAccessedProperty(component, args[0], [args[0]], None, None)
    return _readable(helptext.HelpText(component, trace=fire_trace))


def _readable(text: str) -> str:
    """fire's help made plain: `Type: str`, not `Optional['str | None']` (our annotations are strings);
    no short flags (`-h` means help, and fire lists `-m` for --markdown though `-m` is ambiguous with
    MODEL); a yes/no flag shown without a value (`--json`, not `--json=JSON`)."""
    text = re.sub(r"Type: (?:Optional\[)?'([^']*?)(?: \| None)?'\]?", r"Type: \1", text)
    text = re.sub(r"^(\s+)-[a-zA-Z], --", r"\1--", text, flags=re.MULTILINE)
    return re.sub(r"--(\w+)=\S+(\n\s+Type: bool)", r"--\1\2", text)


def _arguments(argv: list[str]) -> list[str]:
    """fire's view of the arguments: repeated `--dim` flags joined into one (fire keeps the last)."""
    out: list[str] = []
    dims: list[str] = []
    position = 0
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--dim" and i + 1 < len(argv):
            position = position if dims else len(out)
            dims.append(argv[i + 1])
            i += 1
        elif arg.startswith("--dim="):
            position = position if dims else len(out)
            dims.append(arg.removeprefix("--dim="))
        else:
            out.append(arg)
        i += 1
    if dims:
        out[position:position] = ["--dim", ",".join(dims)]
    return out


def _split(argv: list[str]) -> tuple[list[str], argparse.Namespace]:
    """fire's split: the command's arguments, then fire's own flags after the last `--` (--help,
    --completion, --trace, ...). fire ignores any other word there; here it is refused."""
    args, after = parser.SeparateFlagArgs(argv)
    fire_flags = parser.CreateParser()
    fire_flags.exit_on_error = False
    try:
        flags, unknown = fire_flags.parse_known_args(after)
    except argparse.ArgumentError as exc:
        raise InputError(f"after --: {exc}") from None
    if unknown:
        raise InputError(f"{unknown[0]} after --: only fire's own flags go there (--help, --completion, --trace)")
    return args, flags


def _check_arguments(args: list[str], separator: str) -> None:
    """Refuse an unknown command, flag or argument before anything runs: fire calls the command
    first and only then complains about what it could not use (by then retag has written)."""
    if separator in args:  # fire would apply what follows to the command's result, which is None
        rest = args[args.index(separator) + 1 :]
        if rest:
            raise InputError(f"{rest[0]} after the separator {separator}: nothing takes arguments there")
        args = args[: args.index(separator)]
    if not args:
        return  # fire lists the commands
    command, *rest = args
    if command not in _COMMANDS:
        hint = _did_you_mean(command, _COMMANDS) or f"; the commands: {', '.join(_COMMANDS)}"
        raise InputError(f"unknown command {command}{hint}")
    _check_call(command, rest)


def _check_call(command: str, args: list[str]) -> None:
    """Bind `args` to the command's parameters as fire does, refusing what fire would leave over.
    Stricter than fire on purpose: words fill only the required parameters (MODEL; A B; audit's
    PATHS), never the flags after them (fire would write `retag a.onnx b.onnx` into b.onnx)."""
    params = inspect.signature(getattr(Commands(), command)).parameters
    given: set[str] = set()
    words: list[str] = []
    i = 0
    while i < len(args):
        if _is_flag(args[i]):
            takes_next = "=" not in args[i] and i + 1 < len(args) and not _is_flag(args[i + 1])
            given.add(_parameter(command, args[i], params, args[i + 1] if takes_next else None))
            i += takes_next
        else:
            words.append(args[i])
        i += 1
    needed = [n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty]
    varargs = [n for n, p in params.items() if p.kind is p.VAR_POSITIONAL]
    usage = " ".join(["tagger", command, *(n.upper() for n in needed), *(n.upper() + "..." for n in varargs), "[flags]"])
    needed = [n for n in needed if n not in given]
    if len(words) < len(needed):
        raise InputError(f"missing {needed[len(words)].upper()} for {command}; usage: {usage}")
    if len(words) > len(needed) and not varargs:
        raise InputError(f"unexpected argument {words[len(needed)]} for {command}; usage: {usage}")


def _parameter(command: str, arg: str, params: Mapping[str, inspect.Parameter], value: str | None) -> str:
    """The parameter flag `arg` sets, read as fire reads it: `--out-dir` is `--out_dir`, `-o` the one
    parameter starting with o, `--noX` sets yes/no flag X to False (and takes no value)."""
    flag = arg.split("=", 1)[0]
    key = flag.lstrip("-").replace("-", "_")
    names = [n for n, p in params.items() if p.kind is not p.VAR_POSITIONAL]
    yes_no = [n for n in names if isinstance(params[n].default, bool)]
    if key in names:
        return key
    if key.startswith("no") and key[2:] in yes_no:
        if "=" in arg or value is not None:
            raise InputError(f"{flag} takes no value, got {arg.partition('=')[2] or value}")
        return key[2:]
    shortcut = [n for n in names if len(key) == 1 and n[0] == key]
    if len(shortcut) == 1:
        return shortcut[0]
    if shortcut:
        raise InputError(f"ambiguous flag {flag} for {command}: {' or '.join('--' + n for n in shortcut)}")
    hint = _did_you_mean(key, names + ["no" + n for n in yes_no], "--") or f"; see tagger {command} --help"
    raise InputError(f"unknown flag {flag} for {command}{hint}")


def _is_flag(arg: str) -> bool:
    """fire's test: `--anything`, or `-` and a letter (`-1` is a number, `-` the separator)."""
    return arg.startswith("--") or re.match(r"-[a-zA-Z]", arg) is not None


def _did_you_mean(word: str, choices: list[str], prefix: str = "") -> str:
    """The closest choice as `; did you mean X?`, or "" when none is close."""
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {prefix}{close[0]}?" if close else ""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a TaggerError becomes one line on stderr and its exit code."""
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    try:
        args, fire_flags = _split(argv)
        text = _help(args, fire_flags.help)
        if text is not None:
            print(text)
            return 0
        _check_arguments(args, fire_flags.separator)  # before fire, which runs first and complains after
        # an instance, not the class: fire then lists the commands when none is given
        fire.Fire(Commands(), command=_arguments(argv), name="tagger")
    except TaggerError as exc:
        print(f"tagger: error: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # output piped into `head`: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the interpreter's final flush
        return 0
    except KeyboardInterrupt:
        print("tagger: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a user gets one line, never a traceback
        print(f"tagger: internal error: {type(exc).__name__}: {one_line(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
