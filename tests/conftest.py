"""Session fixtures: real exports of tiny transformers models, degraded by real tools, built once.

`built_cases` exports every supported arch x exporter (both torch exporters) and degrades each
export with every supported degradation (``bench.cases``) into one session tmp directory; the
whole build takes ~15 s on two cores and happens only when a test asks for it, so the small unit
tests neither import torch nor pay for the build.

A test that takes a `case` argument runs once per supported case, with ids like
``bert-dynamo-onnxslim``. `tagged` is that case retagged once per session into a directory of its
own (so a dynamo export's ``model.onnx.data`` is linked beside the output, never written into the
case directory).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def case_keys() -> list[tuple[str, str, str]]:
    """Every supported (arch, exporter, degradation), in ``bench.cases`` order."""
    from bench import cases

    return [
        (arch, exporter, degradation)
        for arch in cases.ARCHS
        for exporter in cases.EXPORTERS
        for degradation in cases.DEGRADATIONS
        if cases.supported(arch, exporter, degradation)
    ]


def case_id(key: tuple[str, str, str]) -> str:
    return "-".join(key)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", case_keys(), ids=case_id, indirect=True, scope="session")


@pytest.fixture(scope="session")
def built_cases(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """(arch, exporter, degradation) -> ``bench.cases.Case``, all built into one session tmp dir."""
    from bench import cases

    work_dir = tmp_path_factory.mktemp("cases")
    return {key: cases.make_case(*key, work_dir) for key in case_keys()}


@pytest.fixture(scope="session")
def case(request: pytest.FixtureRequest, built_cases: dict):
    """One built case; parametrized over every supported case by `pytest_generate_tests`."""
    return built_cases[request.param]


@dataclass(frozen=True)
class Tagged:
    """A case's model after one `retag` into a directory of its own."""

    path: Path
    report: object  # tagger.Report


@pytest.fixture(scope="session")
def tagged(case, tmp_path_factory: pytest.TempPathFactory) -> Tagged:
    from tagger import retag

    out_dir = tmp_path_factory.mktemp(f"tagged-{case.arch}-{case.exporter}-{case.degradation}")
    output = out_dir / f"{case.path.stem}.tagged.onnx"
    return Tagged(output, retag(case.path, output))


@pytest.fixture(scope="session")
def feeds():
    """arch -> onnxruntime feeds from ``bench.cases.sample_inputs`` (each built once)."""
    from bench import cases

    cache: dict[str, dict] = {}

    def get(arch: str) -> dict:
        if arch not in cache:
            cache[arch] = cases.sample_inputs(arch)
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def pipeline_model(tmp_path_factory: pytest.TempPathFactory):
    """name -> path of a ``tests.pipeline_models`` export (llama_with_past, vit_dynamic,
    merged_decoder), each built once per session on first use."""
    from tests import pipeline_models

    directory = tmp_path_factory.mktemp("pipelines")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = getattr(pipeline_models, name)(directory)
        return cache[name]

    return get
