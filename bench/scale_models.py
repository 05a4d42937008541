"""The scale benchmark's models: four kinds a user meets, each at a chosen node count, each with
its weights inline and in a `.onnx.data` file, cached under `bench/.cache`.

- `lean`: the synthetic layers without any metadata, a third of the nodes with scoped names and
  the rest with dynamo-style unscoped names (`node_Add_12`), tiny weights: what a graph looks
  like after a tool dropped the metadata; the floor is cheap, so the tagger's own work shows.
- `synthetic`: `bench/synthetic.py` as it is (2.2 kB of dynamo metadata a node).
- `torchscript`: a real `torch.onnx.export(dynamo=False)` of a deep `transformers` BertModel
  with a tiny hidden size.
- `dynamo`: the same model through torch's default exporter (`optimize=False`: its optimiser's
  time grows with depth and it does not change what the tagger sees).

The data-file variant is the inline file re-saved by onnx with every initializer in one data
file beside it (`size_threshold=0`), as torch's default export writes it. Real exports are
built in a child process (torch is imported there only) and kept: at 300k nodes one takes
many minutes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.docs import ROOT

__all__ = ["CACHE", "KINDS", "PLACEMENTS", "big_model", "built", "ensure", "info", "middle_layer", "model_path", "same_outputs"]

CACHE = ROOT / "bench" / ".cache" / "scale"
KINDS = ("lean", "synthetic", "torchscript", "dynamo")
PLACEMENTS = ("inline", "data")
"""Weights in the .onnx file, or in a `.onnx.data` file beside it."""

_NODES_PER_LAYER = {"lean": 43, "synthetic": 43, "torchscript": 55.3, "dynamo": 84.7}
"""Nodes an encoder layer adds (`synthetic.LAYER_NODES`; measured on torch 2.13, transformers 5.24):
sets the depth for a target size. This module imports neither onnx nor torch: the benchmark
process that runs the timed children stays small."""


def model_path(kind: str, nodes: int, placement: str) -> Path:
    """Where the model of `kind` near `nodes` nodes lives; each data variant in a directory of its own."""
    if placement == "inline":
        return CACHE / f"{kind}-{nodes}.onnx"
    return CACHE / f"{kind}-{nodes}-data" / "model.onnx"


def info(kind: str, nodes: int) -> dict:
    """`{"nodes": ..., "layers": ...}` of a built model (written beside it by `build`)."""
    facts = model_path(kind, nodes, "inline").with_suffix(".json")
    if not facts.exists():
        _child("count", str(model_path(kind, nodes, "inline")), str(layers_for(kind, nodes)))
    return json.loads(facts.read_text())


def middle_layer(kind: str, layers: int) -> str:
    """The module path of the middle encoder layer (the real exports wrap BertModel as `model`)."""
    prefix = "model." if kind in ("torchscript", "dynamo") else ""
    return f"{prefix}encoder.layer.{layers // 2}"


def layers_for(kind: str, nodes: int) -> int:
    return max(1, round(nodes / _NODES_PER_LAYER[kind]))


def built(kind: str, nodes: int) -> bool:
    return all(model_path(kind, nodes, placement).exists() for placement in PLACEMENTS)


def ensure(kind: str, nodes: int) -> None:
    """Build the inline and data-file models of `kind` near `nodes` nodes unless cached.
    Each build runs in a child process, so the caller never holds a model."""
    inline, data = model_path(kind, nodes, "inline"), model_path(kind, nodes, "data")
    if not inline.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        _child("build", kind, str(layers_for(kind, nodes)), str(inline))
    if not data.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        _child("externalise", str(inline), str(data))


def _child(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "bench.scale_models", *args], check=True, cwd=ROOT)


def build(kind: str, layers: int, path: Path) -> None:
    """Write the inline model of `kind` with `layers` encoder layers to `path` (via a temporary name)."""
    import onnx

    from bench import synthetic

    temporary = path.with_name(path.name + ".part")
    if kind in ("lean", "synthetic"):
        onnx.save(synthetic.build(layers, lean=kind == "lean"), temporary)
    else:
        _export_bert(layers, temporary, dynamo=kind == "dynamo")
    temporary.replace(path)
    _count(path, layers)


def _count(path: Path, layers: int) -> None:
    import onnx

    nodes = len(onnx.load(path, load_external_data=False).graph.node)
    path.with_suffix(".json").write_text(json.dumps({"nodes": nodes, "layers": layers}))


def externalise(inline: Path, path: Path) -> None:
    """Save the inline model again with its weights in `<name>.data` beside `path`: every
    floating-point initializer; integer ones (shapes, axes, indices) stay inline, as a real
    model's size threshold keeps them (the weights here are tiny, so no threshold would)."""
    import onnx
    from onnx.external_data_helper import set_external_data

    model = onnx.load(inline)
    location = path.name + ".data"
    (path.parent / location).unlink(missing_ok=True)
    for tensor in model.graph.initializer:
        if tensor.data_type in _FLOATING and tensor.HasField("raw_data"):
            set_external_data(tensor, location)
    temporary = path.with_name(path.name + ".part")
    onnx.save(model, temporary)  # the data file is written first; the model takes its name last
    temporary.replace(path)


_FLOATING = frozenset({1, 10, 11, 16})
"""FLOAT, FLOAT16, DOUBLE, BFLOAT16."""


def _export_bert(layers: int, path: Path, dynamo: bool) -> None:
    """A real export of BertModel with `layers` layers of hidden size 4 (random weights, no download)."""
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(
        hidden_size=4,
        num_hidden_layers=layers,
        num_attention_heads=1,
        intermediate_size=4,
        vocab_size=16,
        max_position_embeddings=8,
        type_vocab_size=1,
    )
    bert = BertModel(config).eval()

    class Positional(torch.nn.Module):
        """transformers 5 models fail to trace when called with keywords: positional tensors only."""

        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.model(ids, mask)[0]

    ids = torch.ones(1, 4, dtype=torch.long)
    options = {"dynamo": True, "optimize": False, "external_data": False} if dynamo else {"dynamo": False}
    with torch.no_grad():
        torch.onnx.export(Positional(bert), (ids, torch.ones_like(ids)), str(path), **options)


def big_model(gigabytes: float) -> Path:
    """A 2-layer synthetic model plus an embedding table of `gigabytes` in a sparse data file (built in a child)."""
    path = CACHE / f"big-{gigabytes}" / "big.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _child("big", str(gigabytes), str(path))
    return path


def _write_big(gigabytes: float, path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from bench import synthetic

    model = synthetic.build(2)
    rows = int(gigabytes * 1e9 / (4 * synthetic.HIDDEN))
    table = onnx.TensorProto(name="big.embedding.weight", data_type=TensorProto.FLOAT, dims=[rows, synthetic.HIDDEN])
    table.data_location = TensorProto.EXTERNAL
    size = rows * synthetic.HIDDEN * 4
    for key, value in (("location", path.name + ".data"), ("offset", "0"), ("length", str(size))):
        table.external_data.add(key=key, value=value)
    model.graph.initializer.append(table)
    ids = onnx.numpy_helper.from_array(np.arange(synthetic.SEQ, dtype=np.int64).reshape(1, -1) * 7919 % rows, "big.ids")
    model.graph.initializer.append(ids)
    last = model.graph.output[0].name
    gather = helper.make_node(
        "Gather", ["big.embedding.weight", "big.ids"], ["/big/embedding/Gather_output_0"], name="/big/embedding/Gather"
    )
    model.graph.node.extend([gather, helper.make_node("Add", [last, "/big/embedding/Gather_output_0"], ["y"], name="/big/Add")])
    model.graph.output[0].name = "y"
    with open(str(path) + ".data", "wb") as data:
        data.truncate(size)  # sparse: zeros on disk without writing gigabytes
    onnx.save(model, path)


def same_outputs(a: Path, b: Path) -> bool:
    """Whether onnxruntime gives identical outputs for the big model's two files (run in a child)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.scale_models", "compare", str(a), str(b)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return out.stdout.strip().endswith("identical")


def _compare(a: Path, b: Path) -> None:
    import numpy as np
    import onnxruntime as ort

    from bench import synthetic

    feeds = {"x": np.ones((1, synthetic.SEQ, synthetic.HIDDEN), np.float32), "mask": np.zeros((1, 1, 1, synthetic.SEQ), np.int64)}
    outputs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feeds)[0] for p in (a, b)]
    print("identical" if np.array_equal(*outputs) else "different")


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "build":
        build(rest[0], int(rest[1]), Path(rest[2]))
    elif command == "externalise":
        externalise(Path(rest[0]), Path(rest[1]))
    elif command == "count":
        _count(Path(rest[0]), int(rest[1]))
    elif command == "big":
        _write_big(float(rest[0]), Path(rest[1]))
    elif command == "compare":
        _compare(Path(rest[0]), Path(rest[1]))
    else:
        raise SystemExit(f"unknown command {command}")
