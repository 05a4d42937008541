"""Export the benchmark families the ways users do, cached: optimum, TorchScript, dynamo, shim.

Every export yields one or more `ExportedFile`s (optimum writes several files for an
encoder-decoder), each with the module paths of the module it was exported from, in the file's own
frame: plain and shim exports wrap the model (`bench.cases.Wrapper`, paths `m.…`); optimum exports
the model itself, and its encoder file the encoder (`get_encoder()`: `block.0…`), so there the
frame is that submodule's paths (FIELD-NOTES §7).

optimum runs in its own environment (it needs an older transformers than the tests): a
subprocess calls `optimum-cli export onnx` on a local `save_pretrained` directory. Its Python is
`$OPTIMUM_PYTHON`, else `/work/venv-optimum/bin/python`; without it the optimum rows say so.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from bench import cases, families

__all__ = ["EXPORTERS", "ExportError", "ExportedFile", "export", "hf_dir"]

EXPORTERS = ("optimum", "optimum-past", "torchscript", "dynamo", "shim", "shim-torchscript")
"""optimum: `optimum-cli export onnx` without past (`feature-extraction`, …); optimum-past: the
`-with-past` task, only the files the no-past export does not also write; torchscript / dynamo:
plain `torch.onnx.export(dynamo=False/True)`; shim / shim-torchscript: `shim.export` (retag off, so
the tools see what a user ships) with the dynamo / TorchScript exporter."""

PIPELINES_VERSION = 3
"""Bump when models or export settings change (cache directories are named after it)."""

_OPTIMUM_PYTHON = Path(os.environ.get("OPTIMUM_PYTHON", "/work/venv-optimum/bin/python"))
_OPTIMUM_CLI = _OPTIMUM_PYTHON.parent / "optimum-cli"


class ExportError(RuntimeError):
    """An export that failed; its message is one short line for the table."""


@dataclass(frozen=True)
class ExportedFile:
    """One ONNX file an export wrote, with the module paths its names and tags live in."""

    family: str
    exporter: str
    component: str
    """File stem (`model`, `decoder_model_merged`, …)."""
    path: Path
    modules: frozenset[str]
    """`named_modules()` paths of the module the file was exported from, as the file names them:
    `m.…` behind the wrapper; for optimum, of the model optimum loaded (its transformers may name
    modules differently: ViT's `encoder.layer.0.output.dense` is `layers.0.mlp.fc2` in 5.x), and
    for its encoder file of `get_encoder()`."""
    owners: frozenset[str] = frozenset()
    """Those of `modules` that own parameters themselves (`parameters(recurse=False)`)."""


def _paths(module: torch.nn.Module) -> tuple[list[str], list[str]]:
    """Every module path, and the paths of modules that own parameters themselves."""
    named = list(module.named_modules())
    return [n for n, _ in named], [n for n, m in named if next(m.parameters(recurse=False), None) is not None]


@functools.cache
def _wrapped_paths(family: str) -> tuple[frozenset[str], frozenset[str]]:
    """Module paths (and parameter owners) of the family's model behind `bench.cases.Wrapper`
    (`""` the wrapper, `m` the model)."""
    paths, owners = _paths(families.build(family))
    prefixed = {f"m.{p}" if p else "m" for p in paths}
    return frozenset({""} | prefixed), frozenset(f"m.{p}" if p else "m" for p in owners)


def cache_root(work: Path) -> Path:
    return Path(work).resolve() / f"pipelines-{PIPELINES_VERSION}-{cases._fingerprint()}"


def hf_dir(family: str, work: Path) -> Path:
    """The family's `save_pretrained` directory (cached): optimum's input and `--weights`' checkpoint."""
    target = cache_root(work) / family / "hf"
    if not (target / "model.safetensors").exists():
        tmp = _fresh_dir(target)
        with cases._quiet():
            families.save_pretrained(family, str(tmp))
        _commit_dir(tmp, target)
    return target


def export(family: str, exporter: str, work: Path) -> list[ExportedFile]:
    """Export (cached) and return the files; raises `ExportError` with one short line."""
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; expected one of {EXPORTERS}")
    if exporter.startswith("optimum") and not _OPTIMUM_CLI.exists():  # not cached: installing it fixes the row
        raise ExportError(f"optimum not installed ({_OPTIMUM_CLI} missing; set OPTIMUM_PYTHON)")
    target = cache_root(work) / family / exporter
    failure = target.with_suffix(".error")
    if failure.exists():
        raise ExportError(failure.read_text(encoding="utf-8").strip())
    if not target.exists():
        tmp = _fresh_dir(target)
        try:
            if exporter.startswith("optimum"):
                _optimum(family, exporter == "optimum-past", hf_dir(family, work), tmp)
            else:
                _torch(family, exporter, tmp / "model.onnx")
        except ExportError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            failure.write_text(str(exc) + "\n", encoding="utf-8")
            raise
        _commit_dir(tmp, target)
    return _files(family, exporter, target)


def _files(family: str, exporter: str, target: Path) -> list[ExportedFile]:
    paths = sorted(target.glob("*.onnx"))
    if exporter == "optimum-past" and len(paths) > 1:  # an encoder-decoder: the two files without past are rows of `optimum`
        paths = [p for p in paths if p.stem not in ("encoder_model", "decoder_model")]
    if not exporter.startswith("optimum"):
        return [ExportedFile(family, exporter, p.stem, p, *_wrapped_paths(family)) for p in paths]
    frames = json.loads((target / "modules.json").read_text(encoding="utf-8"))
    return [
        ExportedFile(family, exporter, p.stem, p, frozenset(frames[_frame(p.stem)]), frozenset(frames["owners:" + _frame(p.stem)]))
        for p in paths
    ]


def _frame(component: str) -> str:
    """The module an optimum file was exported from: the encoder for `encoder_model`, else the model."""
    return "encoder" if component == "encoder_model" else ""


def _fresh_dir(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))


def _commit_dir(tmp: Path, target: Path) -> None:
    try:
        tmp.rename(target)
    except OSError:  # lost a race: the winner's directory stands
        shutil.rmtree(tmp, ignore_errors=True)


def _short(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return ((errors or lines or ["no output"])[-1])[:200]


# --------------------------------------------------------------------------------------------
# optimum


def _optimum(family: str, with_past: bool, model_dir: Path, out: Path) -> None:
    spec = families.FAMILIES[family]
    if with_past and not spec.has_past:
        raise ExportError(f"optimum has no {spec.optimum_task}-with-past task")
    task = spec.optimum_task + ("-with-past" if with_past else "")
    command = [str(_OPTIMUM_CLI), "export", "onnx", "--model", str(model_dir), "--task", task, str(out)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HF_HUB_OFFLINE"] = "1"
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=out)
    except subprocess.TimeoutExpired:
        raise ExportError("optimum-cli timed out") from None
    if done.returncode != 0 or not list(out.glob("*.onnx")):
        raise ExportError(f"optimum-cli: {_short(done.stderr or done.stdout)}")
    listed = subprocess.run(
        [str(_OPTIMUM_PYTHON), "-c", _LIST_MODULES, str(model_dir), str(out / "modules.json")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    if listed.returncode != 0:
        raise ExportError(f"listing optimum's modules: {_short(listed.stderr)}")


_LIST_MODULES = """
import json, sys, transformers
config = transformers.AutoConfig.from_pretrained(sys.argv[1])
model = getattr(transformers, config.architectures[0]).from_pretrained(sys.argv[1])
frames = {"": model}
if hasattr(model, "get_encoder") and config.is_encoder_decoder:
    frames["encoder"] = model.get_encoder()
paths = {}
for key, module in frames.items():
    named = list(module.named_modules())
    paths[key] = [n for n, _ in named]
    paths["owners:" + key] = [n for n, m in named if next(m.parameters(recurse=False), None) is not None]
open(sys.argv[2], "w").write(json.dumps(paths))
"""
"""Run in optimum's environment: the module paths of the model as optimum's transformers builds it."""


# --------------------------------------------------------------------------------------------
# torch.onnx.export and shim.export


class CausalLMWithPast(torch.nn.Module):
    """A causal LM called with positional tensors and a KV cache: (ids, mask, k0, v0, k1, v1, …) ->
    (logits, present k0, v0, …). The cache is rebuilt from the tensors inside `forward`, so both
    exporters see past keys/values as graph inputs, as an LLM runtime feeds them."""

    def __init__(self, m: torch.nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache()
        for i in range(0, len(past), 2):
            cache.update(past[i], past[i + 1], i // 2)
        out = self.m(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True)
        present: list[torch.Tensor] = []
        for layer in out.past_key_values.layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


def wrapped_model(family: str) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...], list[str], list[str]]:
    """The module handed to the exporter, its example inputs and input/output names."""
    model = families.build(family)
    gen = torch.Generator().manual_seed(1)
    seq = families.SEQ
    ids = torch.randint(0, families.VOCAB, (1, seq), generator=gen)
    mask = torch.ones(1, seq, dtype=torch.long)
    if family == "llama":
        layers, heads, head_dim = families.LAYERS, families.KV_HEADS, families.HIDDEN // families.HEADS
        past = tuple(torch.randn(1, heads, families.PAST, head_dim, generator=gen) for _ in range(2 * layers))
        step = torch.randint(0, families.VOCAB, (1, 1), generator=gen)
        full_mask = torch.ones(1, families.PAST + 1, dtype=torch.long)
        names = [f"past_key_values.{i // 2}.{'key' if i % 2 == 0 else 'value'}" for i in range(2 * layers)]
        outputs = ["logits"] + [n.replace("past_key_values", "present") for n in names]
        return CausalLMWithPast(model).eval(), (step, full_mask, *past), ["input_ids", "attention_mask", *names], outputs
    if family == "t5":
        # transformers 5's default sdpa attention fails the dynamo exporter on T5 ("Cannot view a
        # tensor with shape [1, 8, 2, 16] and strides (256, 16, 128, 1)"); eager attention exports.
        model.set_attn_implementation("eager")
        wrapper = cases.Wrapper(model, ("input_ids", "attention_mask", "decoder_input_ids"), "logits", {"use_cache": False})
        return wrapper.eval(), (ids, mask, ids[:, :4]), ["input_ids", "attention_mask", "decoder_input_ids"], ["logits"]
    if family == "vit":
        pixels = torch.randn(1, 3, families.IMAGE, families.IMAGE, generator=gen)
        wrapper = cases.Wrapper(model, ("pixel_values",), "last_hidden_state")
        return wrapper.eval(), (pixels,), ["pixel_values"], ["last_hidden_state"]
    if family == "bert":
        wrapper = cases.Wrapper(model, ("input_ids", "attention_mask"), "last_hidden_state")
        return wrapper.eval(), (ids, mask), ["input_ids", "attention_mask"], ["last_hidden_state"]
    raise ValueError(family)


def _torch(family: str, exporter: str, path: Path) -> None:
    import shim

    model, inputs, input_names, output_names = wrapped_model(family)
    kwargs = {"input_names": input_names, "output_names": output_names, "dynamo": exporter in ("dynamo", "shim")}
    try:
        with cases._quiet():
            if exporter.startswith("shim"):
                shim.export(model, inputs, str(path), retag=False, **kwargs)
            else:
                torch.onnx.export(model, inputs, str(path), **kwargs)
    except Exception as exc:
        raise ExportError(f"{type(exc).__name__}: {_short(str(exc))}") from exc
