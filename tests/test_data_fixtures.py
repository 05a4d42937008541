"""The models shipped in data/ for the README: they load, tag completely, and say what they show."""

from pathlib import Path

import onnx
import pytest

from tagger import report

DATA = Path(__file__).resolve().parents[1] / "data"


def test_quick_start_model_keeps_every_scope_through_onnxslim():
    summary = report(DATA / "bert-tiny-shim.onnx")
    assert summary.nodes > 50
    assert summary.direct == summary.nodes  # the shim's scoped names survived onnxslim
    assert summary.fallback == 0


def test_example_model_needs_inference_and_gets_no_fallback():
    summary = report(DATA / "bert-tiny.onnx")
    assert 0 < summary.direct < summary.nodes
    assert summary.inherited == summary.nodes - summary.direct


@pytest.mark.parametrize("name", ["bert-tiny-shim.onnx", "bert-tiny.onnx", "bert-tiny-torchscript.onnx"])
def test_shipped_models_carry_no_tags_of_their_own(name):
    model = onnx.load(DATA / name, load_external_data=False)
    keys = {p.key for node in model.graph.node for p in node.metadata_props}
    assert not {k for k in keys if k.startswith("hierarchy.")}  # the README's retag starts from scratch
