"""`tagger` on the command line, through fire: thin wrappers that print and return nothing.

Every argument is checked against the command's signature before anything runs (fire would run
the command first and complain about a mistyped flag afterwards: `tagger.cli.arguments`).

Exit codes (`tagger.errors.EXIT_CODES`): 0 success, 1 internal error, 2 bad input, option or flag,
3 output not writable; `audit` also 4 (a model missed a threshold) and 5 (a file could not be
audited); `extract` 5 (--all: a module could not be extracted) and 6 (--verify failed).
"""

from __future__ import annotations

import os
import sys

import fire

from tagger import api
from tagger.cli.arguments import (
    as_flag,
    check_arguments,
    check_flag,
    check_text,
    error_line,
    fire_arguments,
    help_text,
    split_fire_flags,
)
from tagger.commands.options import check_integer, check_names
from tagger.errors import InputError, TaggerError, one_line
from tagger.text import spelling

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
        from tagger.commands.extract import extract, extract_all  # each command imports what only it runs
        from tagger.inputs.feeds import parse_dim_option

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
        from tagger.commands.nodelist import module_nodes

        module, tag = check_text("module", module), check_text("tag", tag)
        evidence = {"reference": check_text("reference", reference), "weights": check_text("weights", weights)}
        evidence["modules"] = check_text("modules", modules)
        json = check_flag("json", json)
        result = module_nodes(str(model), module, tag, check_names("op_types", op_types), **evidence)
        print(result.to_json() if json else result.to_text(), end="\n" if json else "")
        for line in result.notes(text=not json):
            print(f"tagger: {line}", file=sys.stderr)

    def numerics(
        self,
        float_model: str,
        derived_model: str,
        depth: int | None = None,
        inputs: str | None = None,
        dim: object = 1,
        json: bool = False,
        markdown: bool = False,
        exclude_worst: int | None = None,
        node_data: str | None = None,
        weights: str | None = None,
        modules: str | None = None,
    ) -> None:
        """Which module loses the accuracy: per module, the error DERIVED_MODEL (int8, fp16, optimized) adds to FLOAT_MODEL's.

        Per module at --depth N (default: where the model splits into its repeated blocks), worst first:
        own  the derived module run on the float model's inputs (the error it adds: SNR, cosine, max |diff|)
        out  its outputs in the derived model; in  its inputs there (the error it receives)
        --inputs NPZ, or --dim N / --dim NAME=VALUE (repeatable): the inputs, as for profile (default: generated)
        --exclude_worst K  print the float model's node names of the K worst modules instead, one per line
                           (nodes_to_exclude for onnxruntime's quantizers)
        --node_data OUT.json   Model Explorer node data: the float model's nodes coloured by their module's own error
        --weights CKPT and --modules FILE  evidence for both models' tags, as for retag (DERIVED also takes FLOAT as reference)
        Example: tagger numerics model.onnx model.int8.onnx --depth 4
        """
        from tagger.commands.numerics import numerics
        from tagger.inputs.feeds import parse_dim_option

        json, markdown = check_flag("json", json), check_flag("markdown", markdown)
        inputs, node_data = check_text("inputs", inputs), check_text("node_data", node_data)
        check_integer("exclude_worst", exclude_worst)
        _check_inputs_or_dims(inputs, dim)
        evidence = {"weights": check_text("weights", weights), "modules": check_text("modules", modules)}
        result = numerics(str(float_model), str(derived_model), inputs, parse_dim_option(dim), depth, node_data, **evidence)
        if exclude_worst is not None:
            print("\n".join(result.nodes_to_exclude(exclude_worst)))
            return
        _show(result, json, markdown)

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
        from tagger.commands.auditing import audit

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
        from tagger.commands.diffing import diff

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
        from tagger.commands.profiling import profile
        from tagger.inputs.feeds import parse_dim_option

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


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a TaggerError becomes one line on stderr and its exit code."""
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    commands = Commands()  # an instance, not the class: fire then lists the commands when none is given
    try:
        args, fire_flags = split_fire_flags(argv)
        text = help_text(commands, args, fire_flags.help)
        if text is not None:
            print(text)
            return 0
        check_arguments(commands, args, fire_flags.separator)  # before fire, which runs first and complains after
        with spelling(as_flag):  # the reports' notes name the flags
            fire.Fire(commands, command=fire_arguments(argv), name="tagger")
    except TaggerError as exc:
        print(f"tagger: error: {error_line(exc)}", file=sys.stderr)
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
