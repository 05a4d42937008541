"""The commands that tag a model and judge its tags: `retag`, `report`, `tree`, `audit`, `diff`."""

from __future__ import annotations

from tagger import api
from tagger.cli.arguments import check_flag, check_text
from tagger.cli.output import show
from tagger.commands.options import check_integer

__all__ = ["TaggingCommands"]


class TaggingCommands:
    """Tag a model, print its coverage and module tree, audit many, compare two."""

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
            show(result, json, markdown)

    def tree(
        self,
        model: str,
        depth: int | None = None,
        modules: str | None = None,
        reference: str | None = None,
        weights: str | None = None,
    ) -> None:
        """Print MODEL's module tree with node counts, down to --depth N levels.

        Per module: its subtree's nodes (its own nodes: direct, certain, chosen, fallback); a module
        whose own nodes are mostly chosen (inferred by choice, not from facts) is marked [mostly chosen].
        --reference ORIG.onnx and --weights CKPT add evidence and --modules FILE checks names, as for retag
        (a file tagged with them records the tree it was checked against: they are not needed again).
        Example: tagger tree model.tagged.onnx --depth 3
        """
        depth = check_integer("depth", depth)
        evidence = {"reference": check_text("reference", reference), "weights": check_text("weights", weights)}
        print(api.report(str(model), modules=check_text("modules", modules), **evidence).tree(depth, legend=True))

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
        show(result, json, markdown)
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
        show(result, json, markdown)
