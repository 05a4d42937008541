"""The files of the producer matrix (`bench.producers`), built the way users build them and cached.

Each producer yields `Produced` files: the ONNX file, where its truth comes from (the file a tool
started from and how that file records its modules), the module tree of the model it was made
from, and the evidence a user could add (`--weights` checkpoint, `--reference` file, `--modules`
file). Producers that pin their own versions run in their own environment and are skipped, with
the reason, when it is missing:

- `genai`: the onnxruntime-genai model builder's outputs that `bench/genai_fixtures.py` caches
  in `$GENAI_CACHE` (default `/work/genai-cache`); built there with `$GENAI_PYTHON` (default
  `/work/genai-venv/bin/python`) when missing;
- `olive`: `olive run --config` with `$OLIVE_PYTHON` (default `/work/venv-olive/bin/python`; olive-ai
  0.13 with torch 2.13.0 CPU and onnxruntime): a dynamo `OnnxConversion` of the tiny BERT
  `save_pretrained` folder, alone and followed by `OrtTransformersOptimization` (fp32 and fp16);
- `optimum`: `bench.family_exports` (optimum-cli in `$OPTIMUM_PYTHON`), plus a tiny Swin;
- in this environment: dynamic-shape dynamo and TorchScript exports of the `bench.families`
  models, onnxconverter-common's `convert_float_to_float16` (with and without `keep_io_types`)
  and onnxruntime's transformer optimizer CLI with `--float16` on them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from bench import cases, families
from bench.family_exports import ExportError, _commit_dir, _fresh_dir, _paths, _short, _wrapped_paths, hf_dir, wrapped_model

__all__ = ["PRODUCERS", "Produced", "Skipped", "produce"]

PRODUCERS_VERSION = 1
"""Bump when a producer's settings change (the cache directory is named after it)."""

GENAI_CACHE = Path(os.environ.get("GENAI_CACHE", "/work/genai-cache"))
GENAI_PYTHON = Path(os.environ.get("GENAI_PYTHON", "/work/genai-venv/bin/python"))
OLIVE_PYTHON = Path(os.environ.get("OLIVE_PYTHON", "/work/venv-olive/bin/python"))


class Skipped(RuntimeError):
    """A producer that cannot run here (its environment is missing) or that failed; one line."""


@dataclass(frozen=True)
class Produced:
    """One file a producer wrote, with what scores it and what a user could add."""

    producer: str
    family: str
    variant: str
    path: Path
    modules: frozenset[str]
    """`named_modules()` paths of the model the file was made from, in the file's frame."""
    truth_from: Path | None
    """The file whose records give the truth (carried by node name / output to `path` when they differ)."""
    kind: str
    """How `truth_from` records modules: `metadata` (dynamo), `names` (TorchScript, optimum), `genai` (builder names)."""
    weights: Path | None = None
    reference: Path | None = None
    modules_file: Path | None = None
    extra: dict[str, object] = field(default_factory=dict)
    """`genai`: the number of layers (its final norm is named one layer past the last)."""


def cache_root(work: Path) -> Path:
    return Path(work).resolve() / f"producers-{PRODUCERS_VERSION}-{cases._fingerprint()}"


def _cached(target: Path, build: Callable[[Path], None]) -> Path:
    """`target` (a directory), built by `build(tmp)` into a temporary one when missing; a failure
    is remembered beside it as `.error` and raised as `Skipped`."""
    failure = target.with_suffix(".error")
    if failure.exists():
        raise Skipped(failure.read_text(encoding="utf-8").strip())
    if not target.exists():
        tmp = _fresh_dir(target)
        try:
            build(tmp)
        except (ExportError, Skipped, subprocess.CalledProcessError, RuntimeError, ValueError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            reason = str(exc) if isinstance(exc, ExportError | Skipped) else f"{type(exc).__name__}: {_short(str(exc))}"
            failure.write_text(reason[:200] + "\n", encoding="utf-8")
            raise Skipped(reason[:200]) from exc
        _commit_dir(tmp, target)
    return target


def _write_modules(paths: frozenset[str], file: Path) -> Path:
    """The module tree as `--modules` reads it (a JSON list of `named_modules()` paths)."""
    if not file.exists():
        file.write_text(json.dumps(sorted(paths)) + "\n", encoding="utf-8")
    return file


# --------------------------------------------------------------------------------------------
# dynamic-shape exports (this environment)


def _axes(family: str, names: list[str]) -> dict[str, dict[int, str]]:
    """Symbolic dims of each input as a user names them: batch and sequence; the cache's past
    length; the mask of a cached decoder spans past and new tokens; images only a batch."""
    if family != "llama":
        return cases.dynamic_axes(tuple(names))
    axes: dict[str, dict[int, str]] = {}
    for name in names:
        if name.startswith("past"):
            axes[name] = {0: "batch", 2: "past_sequence"}
        else:
            axes[name] = {0: "batch", 1: "total_sequence" if name == "attention_mask" else "sequence"}
    return axes


def _dynamic_export(family: str, exporter: str, out: Path) -> None:
    import torch

    model, inputs, names, outputs = wrapped_model(family)
    kwargs: dict[str, object] = {"input_names": names, "output_names": outputs, "dynamo": exporter == "dynamo"}
    if exporter == "torchscript":
        kwargs["dynamic_axes"] = _axes(family, names)
    elif family == "llama":
        # sdpa's `is_causal` turns symbolic with a dynamic sequence (`must be bool, not SymBool`),
        # and a mask spanning past + new tokens is no single Dim: eager attention, torch's AUTO dims
        model.m.set_attn_implementation("eager")
        auto = torch.export.Dim.AUTO
        kwargs["dynamic_shapes"] = ({0: auto, 1: auto}, {0: auto, 1: auto}, tuple({0: auto, 2: auto} for _ in names[2:]))
    else:
        kwargs.update(cases.shape_options(tuple(names), "dynamo", "dynamic"))
    try:
        with cases._quiet():
            torch.onnx.export(model, inputs, str(out / "model.onnx"), **kwargs)
    except Exception as exc:
        raise ExportError(f"{type(exc).__name__}: {_short(str(exc))}") from exc


def dynamic(family: str, exporter: str, work: Path) -> Produced:
    directory = _cached(cache_root(work) / family / f"{exporter}-dynamic", lambda tmp: _dynamic_export(family, exporter, tmp))
    modules, _ = _wrapped_paths(family)
    path = directory / "model.onnx"
    return Produced(
        f"{exporter} export",
        family,
        "dynamic_axes" if exporter == "torchscript" else "dynamic_shapes",
        path,
        modules,
        path,
        "metadata" if exporter == "dynamo" else "names",
        weights=hf_dir(family, work) / "model.safetensors",
        modules_file=_write_modules(modules, cache_root(work) / family / "modules.json"),
    )


# --------------------------------------------------------------------------------------------
# fp16: onnxconverter-common, onnxruntime's transformer optimizer --float16 (this environment)


def fp16_converter(source: Produced, keep_io_types: bool, work: Path) -> Produced:
    """onnxconverter-common's `float16.convert_float_to_float16` of a file, saved inline."""

    def build(tmp: Path) -> None:
        from onnxconverter_common import float16

        with cases._quiet():
            converted = float16.convert_float_to_float16(onnx.load(source.path), keep_io_types=keep_io_types)
        onnx.save(converted, tmp / "model.onnx")

    variant = "keep_io_types" if keep_io_types else "fp16 io"
    name = f"{source.producer.split()[0]}-{'keepio' if keep_io_types else 'fp16io'}"
    directory = _cached(cache_root(work) / source.family / f"onnxconverter-{name}", build)
    return _derived(source, "onnxconverter fp16", f"{source.producer.split()[0]}, {variant}", directory / "model.onnx")


def ort_float16(source: Produced, work: Path) -> Produced:
    """`python -m onnxruntime.transformers.optimizer --float16` of a file (the family's model type)."""
    spec = families.FAMILIES[source.family]

    def build(tmp: Path) -> None:
        command = [sys.executable, "-m", "onnxruntime.transformers.optimizer", "--input", str(source.path)]
        command += ["--output", str(tmp / "model.onnx"), "--model_type", spec.ort_model_type, "--float16"]
        command += ["--num_heads", str(families.HEADS), "--hidden_size", str(families.HIDDEN)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not (tmp / "model.onnx").exists():
            raise Skipped(f"onnxruntime optimizer: {_short(done.stderr or done.stdout)}")

    name = source.producer.split()[0]
    directory = _cached(cache_root(work) / source.family / f"ort-float16-{name}", build)
    return _derived(source, "ort optimizer --float16", name, directory / "model.onnx")


def _derived(source: Produced, producer: str, variant: str, path: Path) -> Produced:
    """A tool's output of `source`: truth carried from it, `source` as the reference."""
    return Produced(
        producer, source.family, variant, path, source.modules, source.truth_from, source.kind,
        weights=source.weights, reference=source.path, modules_file=source.modules_file,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Olive (its own environment)

OLIVE_VARIANTS = ("dynamo", "dynamo + ort optimizer", "dynamo + ort optimizer + fp16")


def _olive_config(hf: Path, passes: dict, cache: Path, out: Path) -> dict:
    cpu = {"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}
    return {
        "input_model": {"type": "HfModel", "model_path": str(hf), "task": "feature-extraction"},
        "systems": {"local_system": {"type": "LocalSystem", "accelerators": [cpu]}},
        "passes": passes,
        "host": "local_system",
        "target": "local_system",
        "cache_dir": str(cache),
        "output_dir": str(out),
    }


def _olive_passes(variant: str) -> dict:
    # transformers 5's `forward() got multiple values for argument 'use_cache'` fails Olive's default
    # TorchScript conversion (FIELD-NOTES §8): the dynamo exporter, as Olive's docs offer
    passes: dict[str, dict] = {"conversion": {"type": "OnnxConversion", "use_dynamo_exporter": True, "target_opset": 18}}
    if variant != "dynamo":
        passes["transformers_optimization"] = {
            "type": "OrtTransformersOptimization",
            "model_type": "bert",
            "num_heads": families.HEADS,
            "hidden_size": families.HIDDEN,
        }
    if variant.endswith("fp16"):
        # OrtTransformersOptimization refuses `float16` for the CPU provider ("does not support float16
        # very well"); Olive's own fp16 pass (onnxconverter-common underneath, its defaults) runs
        passes["fp16"] = {"type": "OnnxFloatToFloat16"}
    return passes


def olive(variant: str, work: Path) -> Produced:
    olive_cli = OLIVE_PYTHON.parent / "olive"
    if not olive_cli.exists():
        raise Skipped(f"Olive not installed ({olive_cli} missing; set OLIVE_PYTHON)")
    hf = hf_dir("bert", work)
    root = cache_root(work) / "bert"

    def build(tmp: Path) -> None:
        config = tmp / "olive-config.json"
        passes = _olive_passes(variant)
        config.write_text(json.dumps(_olive_config(hf, passes, root / "olive-cache", tmp / "out"), indent=1), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")} | {"HF_HUB_OFFLINE": "1"}
        command = [str(olive_cli), "run", "--config", str(config)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=1200, env=env)
        if done.returncode != 0 or not (tmp / "out" / "model.onnx").exists():
            raise Skipped(f"olive run: {_short(done.stderr or done.stdout)}")

    directory = _cached(root / f"olive-{variant.replace(' + ', '-').replace(' ', '-')}", build)
    paths, _ = _paths(families.build("bert"))
    modules = frozenset(paths)
    conversion = directory / "out" / "model.onnx" if variant == "dynamo" else olive("dynamo", work).path
    return Produced(
        "olive", "bert", variant, directory / "out" / "model.onnx", modules, conversion, "metadata",
        weights=hf / "model.safetensors",
        reference=None if variant == "dynamo" else conversion,
        modules_file=_write_modules(modules, root / "olive-modules.json"),
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# onnxruntime-genai model builder (its own environment, cached by bench/genai_fixtures.py)

GENAI_FAMILIES = ("llama", "qwen2", "phi3")
GENAI_VARIANTS = ("fp32-fused", "fp32-unfused", "int4-fused", "int4-unfused", "fp16-fused", "fp16-unfused")


def genai(family: str, variant: str) -> Produced:
    path = GENAI_CACHE / family / variant / "model.onnx"
    if not path.is_file():
        if not GENAI_PYTHON.exists():
            raise Skipped(f"onnxruntime-genai not installed ({GENAI_PYTHON} missing; set GENAI_PYTHON) and {path} not cached")
        script = Path(__file__).resolve().parent / "genai_fixtures.py"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")} | {"HF_HUB_OFFLINE": "1"}
        command = [str(GENAI_PYTHON), str(script), "--cache", str(GENAI_CACHE)]
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0 or not path.is_file():
            raise Skipped(f"genai builder: {_short(done.stderr or done.stdout)}")
    hf = GENAI_CACHE / family / "hf"
    modules = frozenset(json.loads((hf / "modules.json").read_text(encoding="utf-8")))
    layers = json.loads((hf / "config.json").read_text(encoding="utf-8"))["num_hidden_layers"]
    return Produced(
        "genai builder", family, variant, path, modules, path, "genai",
        weights=hf / "model.safetensors", modules_file=hf / "modules.json", extra={"layers": layers},
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# optimum (its own environment): the bench.family_exports files, and a Swin


def optimum(family: str, work: Path) -> list[Produced]:
    from bench.family_exports import export

    produced = []
    for exporter in ("optimum", "optimum-past") if families.FAMILIES[family].has_past else ("optimum",):
        try:
            files = export(family, exporter, work)
        except ExportError as exc:
            raise Skipped(str(exc)) from exc
        for f in files:
            produced.append(
                Produced(
                    "optimum",
                    family,
                    f"{exporter.replace('optimum', '').lstrip('-') or 'no past'}: {f.component}",
                    f.path,
                    f.modules,
                    f.path,
                    "names",
                    weights=hf_dir(family, work) / "model.safetensors",
                    modules_file=_write_modules(f.modules, f.path.with_suffix(".modules.json")),
                )  # fmt: skip
            )
    return produced


def _swin_hf(directory: Path) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=2, num_channels=3
    )
    model = transformers.SwinModel(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(directory)


def optimum_swin(work: Path) -> Produced:
    from bench import family_exports as fe

    if not fe._OPTIMUM_CLI.exists():
        raise Skipped(f"optimum not installed ({fe._OPTIMUM_CLI} missing; set OPTIMUM_PYTHON)")
    root = cache_root(work) / "swin"
    hf = _cached(root / "hf", _swin_hf)

    def build(tmp: Path) -> None:
        command = [str(fe._OPTIMUM_CLI), "export", "onnx", "--model", str(hf), "--task", "image-feature-extraction", str(tmp)]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")} | {"HF_HUB_OFFLINE": "1"}
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=tmp)
        if done.returncode != 0 or not (tmp / "model.onnx").exists():
            raise Skipped(f"optimum-cli: {_short(done.stderr or done.stdout)}")
        listed = [str(fe._OPTIMUM_PYTHON), "-c", fe._LIST_MODULES, str(hf), str(tmp / "modules.json")]
        subprocess.run(listed, check=True, capture_output=True, timeout=300, env=env)

    directory = _cached(root / "optimum", build)
    modules = frozenset(json.loads((directory / "modules.json").read_text(encoding="utf-8"))[""])
    path = directory / "model.onnx"
    return Produced(
        "optimum", "swin", "no past: model", path, modules, path, "names",
        weights=hf / "model.safetensors", modules_file=_write_modules(modules, directory / "tree.json"),
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# the matrix

PRODUCERS = ("dynamic", "fp16", "olive", "genai", "optimum")


def _jobs(producer: str, work: Path) -> list[tuple[str, Callable[[], Produced | list[Produced]]]]:
    """(label, build) of every file of one producer group."""
    if producer == "dynamic":
        return [
            (f"{f} {e} dynamic", lambda f=f, e=e: dynamic(f, e, work)) for f in families.FAMILIES for e in ("dynamo", "torchscript")
        ]
    if producer == "fp16":
        sources = (("bert", "dynamo"), ("bert", "torchscript"), ("llama", "dynamo"), ("llama", "torchscript"))
        converted = [
            (f"{f} {e} fp16", lambda f=f, e=e, k=k: fp16_converter(dynamic(f, e, work), k, work))
            for f, e in sources
            for k in (False, True)
        ]
        return converted + [
            (f"bert {e} --float16", lambda e=e: ort_float16(dynamic("bert", e, work), work)) for e in ("dynamo", "torchscript")
        ]
    if producer == "olive":
        return [(f"olive {v}", lambda v=v: olive(v, work)) for v in OLIVE_VARIANTS]
    if producer == "genai":
        return [(f"genai {f} {v}", lambda f=f, v=v: genai(f, v)) for f in GENAI_FAMILIES for v in GENAI_VARIANTS]
    if producer == "optimum":
        return [(f"optimum {f}", lambda f=f: optimum(f, work)) for f in families.FAMILIES] + [
            ("optimum swin", lambda: optimum_swin(work))
        ]
    raise ValueError(f"unknown producer {producer!r}; expected one of {PRODUCERS}")


def produce(producer: str, work: Path) -> list[Produced | Skipped]:
    """Every file of one producer group, or the `Skipped` reason in its place."""
    out: list[Produced | Skipped] = []
    for label, make in _jobs(producer, work):
        try:
            made = make()
        except Skipped as exc:
            out.append(Skipped(f"{label}: {exc}"))
            continue
        out.extend(made if isinstance(made, list) else [made])
    return out
