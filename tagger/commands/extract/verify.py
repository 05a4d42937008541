"""Proving an extracted model right: it must reproduce the full model's own tensors.

An extracted model is right when, fed the values its boundary tensors take inside the full
model, it computes the values its outputs take there. So:

1. the full model runs once in onnxruntime with the boundary tensors exposed as extra graph
   outputs (feeds from `tagger.inputs.feeds`: generated or given; a run onnxruntime refuses is bad
   input, `tagger.inputs.feeds.refusal`; so is a full model onnxruntime cannot load,
   `tagger.inputs.feeds.load_refusal`), its weights read from the data file in place; a cut of an If
   branch: the full model runs with the branch's outer-scope inputs exposed and the condition
   input (when the If reads a graph input) set to take that branch, then the branch made a model
   runs on them with the boundary exposed (`tagger.commands.extract.body`, rule 3);
2. the extracted model runs from its own file (its external data resolved as a user's would be),
   fed those values by name; if onnxruntime cannot load or run it while it ran the full model,
   the extraction is wrong: the verification fails and says why;
3. every output is compared with the full model's value of the same tensor: same dtype and
   shape, and equal, or within the tolerance of its dtype (`tolerance_of`):
   - float32, float64 (and complex): `TOLERANCE`, absolute, relative above magnitude 1;
   - float16, bfloat16 (any float narrower than float32): `ULPS` units in the last place at the
     tensor's largest finite magnitude, i.e. every element within `ULPS * spacing(max |want|)`
     of the full model's value (spacing: the distance from that magnitude to the next number
     of the dtype);
   - integer and boolean tensors must be equal.
   The report says which tolerance each dtype got (`Verification.tolerances`).

Both models run on one thread with onnxruntime's graph optimizations off: each node then runs
the same kernel on the same values in both, so a right float32 extraction is bit-exact (with
fusions on, a Conv+Add+Relu chain fused differently across the cut differed by 4e-6 on ResNet);
`TOLERANCE` is a margin for kernels whose results depend on anything but their inputs. Narrow
floats are not bit-exact on the CPU provider: it runs most ops in float32 between the Casts it
inserts, and drops a Cast pair between two such ops, so inside the full model a value crosses
the cut unrounded while the extracted model is fed its rounded value. The difference is one
rounding step of the tensor's magnitude (measured: at most 1 ULP on every module of GPT-2,
ResNet, ViT and BERT converted by `onnxruntime.transformers.float16`; `tanh` 2.4e-4 at
magnitude 0.25-0.5), while an element's own ULPs are meaningless after a cancellation (up to 768
there); `ULPS` leaves a margin of 4.

onnxruntime is imported only here, and only when a verification runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from tagger.commands.extract.body import branch_value
from tagger.errors import MissingDependency, TaggerError
from tagger.inputs.feeds import Feeds, load_refusal, onnxruntime_message, refusal

if TYPE_CHECKING:
    from tagger.commands.extract.cut import Cut
    from tagger.commands.extract.report import ExtractReport
    from tagger.commands.extract.source import Source

__all__ = [
    "TOLERANCE",
    "ULPS",
    "Verification",
    "boundary_values",
    "compare_outputs",
    "cpu_session",
    "full_model_values",
    "record_verification",
    "tolerance_of",
    "unverifiable",
]

TOLERANCE = 1e-6
"""float32/float64: absolute, relative above magnitude 1."""
ULPS = 4
"""float16/bfloat16: units in the last place at the tensor's largest finite magnitude."""


@dataclass
class Verification:
    """How an extracted model's outputs compare with the full model's tensors of the same names."""

    passed: bool
    compared: int
    exact: int
    max_abs_diff: float
    failures: list[str] = field(default_factory=list)
    tolerances: dict[str, str] = field(default_factory=dict)
    """Per floating dtype compared, the tolerance it got (`tolerance_of`)."""

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        detail = f"{self.exact} of {self.compared} outputs bit-identical, max |diff| {self.max_abs_diff:.3g}"
        used = "".join(f"; tolerance {dtype}: {rule}" for dtype, rule in self.tolerances.items())
        problems = f"; {'; '.join(self.failures[:3])}" if self.failures else ""
        return f"verify {verdict}: {detail}{used}{problems}"


def full_model_values(
    model: onnx.ModelProto,
    base_dir: Path,
    names: Iterable[str],
    types: Mapping[str, onnx.TypeProto],
    feeds: Mapping[str, np.ndarray],
    label: object = "the full model",
) -> dict[str, np.ndarray]:
    """Run the full model (structure in memory, weights from `base_dir`) exposing `names`.

    Returns the feeds plus the value of every requested tensor that is not a feed. A model
    onnxruntime cannot load, called `label` in the message, or a run it refuses is an `InputError`.
    """
    wanted = [name for name in dict.fromkeys(names) if name not in feeds]
    instrumented = onnx.ModelProto()
    instrumented.CopyFrom(model)
    present = {output.name for output in instrumented.graph.output}
    for name in wanted:
        if name in present:
            continue
        exposed = instrumented.graph.output.add(name=name)
        if name in types:
            exposed.type.CopyFrom(types[name])
    session = cpu_session(instrumented.SerializeToString(), base_dir, label)
    try:
        values = session.run(wanted, dict(feeds)) if wanted else []
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise refusal(model, feeds, exc) from None
    return {**feeds, **dict(zip(wanted, values, strict=True))}


def compare_outputs(path: Path, inputs: list[str], outputs: list[str], values: Mapping[str, np.ndarray]) -> Verification:
    """Run the model at `path` on `values[inputs]`; compare its outputs with `values[outputs]`."""
    session = cpu_session(str(path), None, path)
    try:
        results = session.run(outputs, {name: values[name] for name in inputs})
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        why = f"onnxruntime cannot run {path}: {onnxruntime_message(exc)[:300]}"
        return Verification(False, len(outputs), 0, float("nan"), [why])
    verification = Verification(True, len(outputs), 0, 0.0)
    widest: dict[np.dtype, float] = {}
    for name, got in zip(outputs, results, strict=True):
        _compare(verification, widest, name, got, values[name])
    verification.passed = not verification.failures
    verification.tolerances = {dtype.name: _rule(dtype, allowed) for dtype, allowed in widest.items()}
    return verification


def _compare(verification: Verification, widest: dict[np.dtype, float], name: str, got: np.ndarray, want: np.ndarray) -> None:
    """Compare one output; count it exact, or note its difference and the tolerance it got."""
    if got.dtype != want.dtype or got.shape != want.shape:
        verification.failures.append(f"{name}: {got.dtype}{list(got.shape)} instead of {want.dtype}{list(want.shape)}")
        return
    tolerance = tolerance_of(want)
    if tolerance is not None:
        widest[want.dtype] = max(widest.get(want.dtype, 0.0), tolerance[0])
    if np.array_equal(got, want, equal_nan=_has_nan(want)):
        verification.exact += 1
        return
    if tolerance is None:
        verification.failures.append(f"{name}: values differ")
        return
    wide = np.complex128 if np.iscomplexobj(want) else np.float64
    wide_got, wide_want = got.astype(wide), want.astype(wide)
    diff = float(np.nanmax(np.abs(wide_got - wide_want), initial=0.0))
    verification.max_abs_diff = max(verification.max_abs_diff, diff)
    atol, rtol = tolerance
    if not np.allclose(wide_got, wide_want, rtol=rtol, atol=atol, equal_nan=True):
        verification.failures.append(f"{name}: max |diff| {diff:.3g} (allowed {atol:.3g})")


def tolerance_of(want: np.ndarray) -> tuple[float, float] | None:
    """(absolute, relative) tolerance for a tensor of the full model (rules in the module
    docstring); None for integers and booleans, which must be equal."""
    epsilon = _epsilon(want.dtype)
    if epsilon is None:
        return None
    if epsilon <= _FLOAT32_EPSILON:
        return TOLERANCE, TOLERANCE
    finite = np.abs(want.astype(np.float64))
    finite = finite[np.isfinite(finite)]
    largest = float(finite.max(initial=0.0))
    # the spacing at `largest`: epsilon times the power of two at or below it (a tiny tensor: the smallest normal's)
    spacing = epsilon * 2.0 ** np.floor(np.log2(max(largest, _smallest_normal(want.dtype))))
    return ULPS * float(spacing), 0.0


def _rule(dtype: np.dtype, allowed: float) -> str:
    """The tolerance a dtype got, as the report prints it."""
    if (_epsilon(dtype) or 0.0) <= _FLOAT32_EPSILON:
        return f"{TOLERANCE:g} absolute, relative above 1"
    return f"{ULPS} ULPs at each tensor's largest magnitude, here at most {allowed:.3g}"


_FLOAT32_EPSILON = float(np.finfo(np.float32).eps)


def _finfo(dtype: np.dtype):
    """numpy's `finfo`, or ml_dtypes' for bfloat16 and float8 (numpy knows none of them)."""
    try:
        return np.finfo(dtype)
    except (TypeError, ValueError):
        pass
    try:
        import ml_dtypes

        return ml_dtypes.finfo(dtype)
    except (ImportError, TypeError, ValueError, KeyError):
        return None


def _epsilon(dtype: np.dtype) -> float | None:
    """The dtype's machine epsilon, or None when it is not floating (complex: its parts')."""
    info = _finfo(dtype)
    return float(info.eps) if info is not None else None


def _smallest_normal(dtype: np.dtype) -> float:
    info = _finfo(dtype)
    return float(getattr(info, "smallest_normal", getattr(info, "tiny", 0.0))) if info is not None else 0.0


def _has_nan(array: np.ndarray) -> bool:
    return (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating)) and bool(
        np.isnan(array).any()
    )


def cpu_session(model: str | bytes, base_dir: Path | None, label: object):
    """A deterministic CPU session; a model given as bytes reads its external data from `base_dir`;
    one onnxruntime cannot load is an `InputError` naming `label`."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependency("verification", "onnxruntime") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 4  # a refused run is reported in one line, not logged too
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if base_dir is not None:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(base_dir))
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise load_refusal(label, exc) from None


def runtime_refusal(path: Path) -> str | None:
    """None when onnxruntime loads the model at `path` (a CPU session, optimizations off: only
    whether it accepts the model is asked), else its first line; `MissingDependency` when
    onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependency("extraction", "onnxruntime") from None
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        return onnxruntime_message(exc)
    return None


def boundary_values(src: Source, cuts: list[Cut], feeds: Feeds) -> dict:
    """The full model's values of every boundary tensor of `cuts`, from one onnxruntime run on the
    full model's `feeds` (for a body: one run of each enclosing model and one of the body,
    `tagger.commands.extract.body` rule 3)."""
    return _scope_values(src, [name for cut in cuts for name in (*cut.inputs, *cut.outputs)], feeds, {})


def _scope_values(src: Source, names: list[str], feeds: Mapping[str, np.ndarray], forced: dict[str, bool]) -> dict:
    """`src`'s values of `names`; `forced` sets the graph inputs that choose the If branches below."""
    src.types.resolve(names)
    types = {name: tp for name in names if (tp := src.types.get(name)) is not None}
    if src.body is None:
        run_on = _with_arrays(
            feeds, {**feeds, **{name: np.full_like(feeds[name], value) for name, value in forced.items() if name in feeds}}
        )
    else:
        body, inputs = src.body, [value.name for value in src.model.graph.input if value.name not in src.initializer_at]
        take = branch_value(body)
        condition = {body.node.input[0]: take} if take is not None and body.node.input else {}
        outer = _scope_values(body.outer, inputs, feeds, {**condition, **forced})
        run_on = _with_arrays(feeds, {name: outer[name] for name in inputs})
    label = src.path if src.body is None else f"{src.path} ({src.body.label} made a model)"
    return full_model_values(src.model, src.path.parent.resolve(), names, types, run_on, label)


def _with_arrays(feeds: Mapping[str, np.ndarray], arrays: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    """`arrays` with the origin and sizes of `feeds` (for `refusal`'s advice when a run fails)."""
    return dataclasses.replace(feeds, arrays=arrays) if isinstance(feeds, Feeds) else arrays


def unverifiable(src: Source) -> str | None:
    """Why no run gives the values of `src`'s tensors: a Loop or Scan body (or one within it)
    takes new inputs on every iteration; None for the main graph and If branches."""
    while src.body is not None:
        if branch_value(src.body) is None:
            return f"cannot verify a cut of {src.body.label}: a body other than an If branch takes new inputs every iteration"
        src = src.body.outer
    return None


def record_verification(report: ExtractReport, cut: Cut, values: dict | str) -> None:
    """Record the comparison (or why none could run); an extracted model onnxruntime cannot even load fails it."""
    if isinstance(values, str):
        report.verification = Verification(False, 0, 0, float("nan"), [values])
        return
    try:
        report.verification = compare_outputs(Path(report.output), cut.inputs, cut.outputs, values)
    except TaggerError as exc:
        report.verification = Verification(False, 0, 0, float("nan"), [str(exc)])
