"""Cost of `--reference` at scale: time at ~100k nodes and peak memory with > 1 GB of external weights.

The reference is `bench.synthetic`'s model (dynamo metadata on every node); the target is what a
tool leaves of it: node metadata and node names gone, tensor names kept, and (in the weights
case) the big weight renamed, so it can only be matched by value. Each operation runs in a fresh
child process reporting wall time and peak RSS (`bench.scale.measure`'s way), median of runs.

    python -m bench.transfer_scale [--layers 2326] [--external_gb 1.2] [--repeats 3]

Writes its table into docs/transfer.md between the transfer-scale markers.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fire
import numpy as np
import onnx
from onnx import TensorProto, helper

from bench import synthetic
from bench.docs import ROOT, publish


def _peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports `ru_maxrss` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def measure(operation: str, path: str, reference: str = "") -> None:
    """Child-process entry: `retag` PATH (with `--reference` when given); prints seconds and peak RSS."""
    from tagger import retag

    started = time.perf_counter()
    retag(path, path + ".tagged.onnx", reference=reference or None)
    print(json.dumps({"seconds": time.perf_counter() - started, "rss_mb": _peak_rss_mb()}))


def _stripped(model: onnx.ModelProto, rename: dict[str, str]) -> onnx.ModelProto:
    """The model as a rewriting tool leaves it: no node metadata, no node names, `rename` applied
    to initializers."""
    target = onnx.ModelProto()
    target.CopyFrom(model)
    for node in target.graph.node:
        del node.metadata_props[:]
        node.name = ""
        for k, name in enumerate(node.input):
            node.input[k] = rename.get(name, name)
    for tensor in target.graph.initializer:
        tensor.name = rename.get(tensor.name, tensor.name)
    return target


def _pair(work: Path, layers: int, external_gb: float) -> tuple[Path, Path]:
    """(reference, target) in one directory (sharing the external data file, if any)."""
    model = synthetic.build(layers)
    rename: dict[str, str] = {}
    if external_gb:
        rows = int(external_gb * 1e9 / (4 * synthetic.HIDDEN))
        rng = np.random.default_rng(0)
        with open(work / "weights.data", "wb") as data:
            for start in range(0, rows, 1 << 20):
                data.write(rng.standard_normal((min(1 << 20, rows - start), synthetic.HIDDEN), dtype=np.float32).tobytes())
        table = TensorProto(name="big.embedding.weight", data_type=TensorProto.FLOAT, dims=[rows, synthetic.HIDDEN])
        table.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "weights.data"), ("offset", "0"), ("length", str(rows * synthetic.HIDDEN * 4))):
            table.external_data.add(key=key, value=value)
        ids = onnx.numpy_helper.from_array(np.arange(synthetic.SEQ, dtype=np.int64).reshape(1, -1), "big.ids")
        model.graph.initializer.extend([table, ids])
        last = model.graph.output[0].name
        model.graph.node.extend(
            [
                helper.make_node("Gather", ["big.embedding.weight", "big.ids"], ["big_out"], name="/big/Gather"),
                helper.make_node("Add", [last, "big_out"], ["y"], name="/big/Add"),
            ]
        )
        model.graph.output[0].name = "y"
        rename = {"big.embedding.weight": "val_1"}
    reference, target = work / "reference.onnx", work / "target.onnx"
    onnx.save(model, reference)
    onnx.save(_stripped(model, rename), target)
    return reference, target


def _run(path: Path, reference: Path | None) -> dict:
    args = [sys.executable, "-m", "bench.transfer_scale", "measure", "retag", str(path), str(reference or "")]
    out = subprocess.run(args, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _medians(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def _row(label: str, reference: Path, target: Path, repeats: int) -> str:
    plain_ref, plain, transfer = [], [], []
    for _ in range(repeats):  # interleaved, so drifts of the machine hit all alike
        plain_ref.append(_run(reference, None))
        plain.append(_run(target, None))
        transfer.append(_run(target, reference))
    a, b, t = _medians(plain_ref), _medians(plain), _medians(transfer)
    both = a["seconds"] + b["seconds"]
    return (
        f"| {label} | {b['seconds']:.2f} s, {b['rss_mb']:.0f} MB | {a['seconds'] + b['seconds']:.2f} s | "
        f"{t['seconds']:.2f} s, {t['rss_mb']:.0f} MB | {t['seconds'] / both:.2f}× | {t['rss_mb'] / b['rss_mb']:.2f}× |"
    )


def run(layers: int = 2326, external_gb: float = 1.2, repeats: int = 3, publish_docs: bool = True) -> None:
    rows = [
        "| model | retag target | retag reference + target | retag target `--reference` | time vs both | peak RSS vs retag |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory(prefix="transfer-scale-") as tmp:
        big = Path(tmp) / "nodes"
        big.mkdir()
        reference, target = _pair(big, layers, 0)
        nodes = len(onnx.load(target, load_external_data=False).graph.node)
        rows.append(_row(f"{nodes:,} nodes", reference, target, repeats))
        print(rows[-1], flush=True)
        heavy = Path(tmp) / "weights"
        heavy.mkdir()
        reference, target = _pair(heavy, 2, external_gb)
        rows.append(_row(f"{external_gb:g} GB external weights (renamed in the target)", reference, target, repeats))
        print(rows[-1], flush=True)
    text = "\n".join(rows)
    print(text)
    if publish_docs:
        publish("transfer-scale", text, ("docs/transfer.md",))


if __name__ == "__main__":
    fire.Fire({"run": run, "measure": measure})
