"""onnxruntime-genai model builder outputs: how well the tagger names their HF modules.

Reads the outputs `bench/genai_fixtures.py` cached (run that first, in the builder's virtualenv;
this script runs in the tagger's): LLaMA, Qwen2 and Phi-3, fp32 and int4 (`MatMulNBits`), q/k/v
fused and unfused, each tagged with no evidence beyond the file, with `--weights` (the checkpoint
the builder read), with `--modules` (the HF model's `named_modules()`), and with both.

    python -m bench.genai [--cache /work/genai-cache] [--no-publish]

Per row: `exact` (tag == truth), `wrong` (tag neither the truth nor an ancestor), `best` (tag ==
the deepest ancestor-or-self of the truth the evidence names: the file's names, the checkpoint's
parameter names with `--weights`), `weighted` (exact share of the nodes reading the builder's
weights), `invented` (distinct tagged paths that are no module of the HF model).

The truth comes from the builder's node names through the hand-written `truth` mapping below
(its vocabulary: `attn` is `self_attn`, a fused `qkv_proj` the attention itself, `GroupQueryAttention`
and the fp16 graph's `q_rotary`/`k_rotary` and `k_proj/repeat_kv` the attention, `layers.{N}/final_norm_layernorm`
`model.norm`, the mask and constant nodes the `model` that builds the mask; Phi-3's split
`gate_proj`/`up_proj` its `gate_up_proj`, its q/k/v its `qkv_proj`, its `act_fn` its
`activation_fn`). It is used only here, never by the tagger.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import onnx

from bench.docs import publish
from bench.metrics import Metrics, evidenced_modules, measure, node_modules

FAMILIES = ("llama", "qwen2", "phi3")
VARIANTS = ("fp32-unfused", "fp32-fused", "int4-unfused", "int4-fused")
EVIDENCE = ("none", "--weights", "--modules", "both")
DOC = "docs/genai.md"

_LAYER = re.compile(r"^layers\.(\d+)$")


def truth(name: str, family: str, layers: int) -> str:
    """The HF module of a builder node, from its name (scoring only)."""
    segments = name.strip("/").split("/")[:-1]
    if segments[:1] == ["lm_head"]:
        return "lm_head"
    segments = segments[1:]  # "model"
    if not segments or segments[0] in ("attn_mask_reformat", "constant_nodes", "constants"):
        return "model"
    if segments[0] == "embed_tokens":
        return "model.embed_tokens"
    layer = _LAYER.match(segments[0])
    if layer is None:
        raise ValueError(f"unknown builder node {name!r}")
    if int(layer.group(1)) == layers:  # the builder's final norm, one layer past the last
        return "model.norm"
    prefix = f"model.layers.{layer.group(1)}"
    return prefix + "." + ".".join(_inside_layer(segments[1:], family)) if segments[1:] else prefix


def _inside_layer(segments: list[str], family: str) -> list[str]:
    head, rest = segments[0], segments[1:]
    if head == "attn":
        if not rest:
            return ["self_attn"]
        if rest[0] in ("q_rotary", "k_rotary") or rest[1:2] == ["repeat_kv"]:
            return ["self_attn"]  # the fp16 graph's rotary and GQA head repeat: HF runs both in the attention's forward
        if rest[0] == "qkv_proj":
            return ["self_attn", "qkv_proj"] if family == "phi3" else ["self_attn"]
        if rest[0] in ("q_proj", "k_proj", "v_proj") and family == "phi3":
            return ["self_attn", "qkv_proj"]
        return ["self_attn", rest[0]]
    if head == "mlp" and rest:
        if family == "phi3" and rest[0] in ("gate_proj", "up_proj"):
            return ["mlp", "gate_up_proj"]
        if family == "phi3" and rest[0] == "act_fn":
            return ["mlp", "activation_fn"]
        return ["mlp", rest[0]]
    return [head]


def _weighted(model: onnx.ModelProto) -> set[int]:
    """Nodes reading one of the builder's weights (its initializers named after the model)."""
    weights = {t.name for t in model.graph.initializer if t.name.startswith(("model.", "lm_head."))}
    return {i for i, node in enumerate(model.graph.node) if not weights.isdisjoint(node.input)}


def _checkpoint_modules(hf: Path) -> set[str]:
    from tagger.tensorbytes.checkpoint import checkpoint_tensors

    found = {""}
    for tensor in checkpoint_tensors(hf / "model.safetensors"):
        parts = tensor.name.split(".")[:-1]
        found.update(".".join(parts[:k]) for k in range(1, len(parts) + 1))
    return found


def row(cache: Path, family: str, variant: str, evidence: str) -> dict:
    """Tag one builder output with one kind of evidence and score it."""
    from tagger import tag_proto

    hf = cache / family / "hf"
    modules = set(json.loads((hf / "modules.json").read_text(encoding="utf-8")))
    layers = json.loads((hf / "config.json").read_text(encoding="utf-8"))["num_hidden_layers"]
    path = cache / family / variant / "model.onnx"
    model = onnx.load(str(path), load_external_data=False)
    names = [node.name for node in model.graph.node]
    expected = {i: truth(name, family, layers) for i, name in enumerate(names)}
    unknown = {t for t in expected.values() if t not in modules}
    if unknown:
        raise ValueError(f"truth outside the HF tree: {sorted(unknown)}")
    weights, tree = {"weights": hf / "model.safetensors"}, {"modules": hf / "modules.json"}
    options = {"--weights": weights, "--modules": tree, "both": weights | tree}.get(evidence, {})
    tagged = onnx.load(str(path), load_external_data=False)
    tag_proto(tagged, str(path), **options)
    predicted = node_modules(tagged)
    evidenced = evidenced_modules(model, modules) | (_checkpoint_modules(hf) if evidence in ("--weights", "both") else set())
    metrics = measure(predicted, expected, evidenced)
    weighted = _weighted(model)
    weighted_exact = sum(predicted[i] == expected[i] for i in weighted)
    invented = sorted({m for m in predicted.values() if m is not None and m not in modules})
    return {
        "family": family,
        "variant": variant,
        "evidence": evidence,
        "metrics": metrics,
        "weighted": (weighted_exact, len(weighted)),
        "invented": invented,
        "misses": [(names[i], predicted[i], expected[i]) for i in expected if predicted[i] != expected[i]],
    }


def _line(r: dict) -> str:
    m: Metrics = r["metrics"]
    done, total = r["weighted"]
    return (
        f"| {r['family']} | {r['variant']} | {r['evidence']} | {m.graded} | {m.exact:.1%} | {m.wrong:.1%} | "
        f"{m.best:.1%} | {done}/{total} | {len(r['invented'])} |"
    )


HEADER = (
    "| family | output | evidence | nodes | exact | wrong | best | weighted exact | invented |\n"
    "|---|---|---|---:|---:|---:|---:|---:|---:|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/work/genai-cache"))
    parser.add_argument("--no-publish", action="store_true")
    parser.add_argument("--misses", action="store_true", help="list every node whose tag is not the truth")
    args = parser.parse_args()
    rows = []
    for family in FAMILIES:
        for variant in VARIANTS:
            if not (args.cache / family / variant / "model.onnx").is_file():
                print(f"missing {family} {variant}: run bench/genai_fixtures.py in the builder's venv", file=sys.stderr)
                continue
            for evidence in EVIDENCE:
                rows.append(row(args.cache, family, variant, evidence))
    table = HEADER + "\n" + "\n".join(map(_line, rows))
    print(table)
    for r in rows:
        if r["invented"]:
            print(f"{r['family']} {r['variant']} {r['evidence']}: invented {', '.join(r['invented'])}")
        if args.misses:
            for name, tag, expected in r["misses"]:
                print(f"  {r['family']} {r['variant']} {r['evidence']}: {name}: {tag!r} (truth {expected!r})")
    if not args.no_publish:
        publish("genai", table, ("docs/genai.md",))


if __name__ == "__main__":
    main()
