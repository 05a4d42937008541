"""The commands that use the tags: `extract`, `nodes`, `numerics`, `profile` (each imports what only it runs)."""

from __future__ import annotations

import sys

from tagger.cli.arguments import check_flag, check_text
from tagger.cli.output import check_inputs_or_dims, show
from tagger.commands.options import check_integer, check_names
from tagger.errors import InputError

__all__ = ["ModuleCommands"]


class ModuleCommands:
    """Work on a module's nodes: cut it out, list it for a quantizer, measure its error and its time."""

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
        check_inputs_or_dims(inputs, dim)
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
        check_inputs_or_dims(inputs, dim)
        evidence = {"weights": check_text("weights", weights), "modules": check_text("modules", modules)}
        result = numerics(str(float_model), str(derived_model), inputs, parse_dim_option(dim), depth, node_data, **evidence)
        if exclude_worst is not None:
            print("\n".join(result.nodes_to_exclude(exclude_worst)))
            return
        show(result, json, markdown)

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
        check_inputs_or_dims(inputs, dim)
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
