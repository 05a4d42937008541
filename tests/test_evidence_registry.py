"""The evidence sources are registered once; both orders derive from that table."""

from __future__ import annotations

import json
import struct

from tagger import evidence
from tagger.api import transfer_sources
from tagger.model.keys import DIRECT_SOURCES
from tests.conftest import REPO_ROOT


def test_every_registered_source_keeps_the_contract_under_its_name():
    for name, source in evidence.registered_sources().items():
        assert isinstance(source, evidence.EvidenceSource)
        assert source.SOURCE == name and name in DIRECT_SOURCES


def test_teaching_sources_run_before_resolving_ones_and_each_phase_in_precedence():
    phase = {name: p for name, _, p in evidence.REGISTRY}
    order = list(evidence.RUN_ORDER)
    registered = [n for n in evidence.PRECEDENCE if n not in evidence.EXTERNAL]
    assert sorted(order) == sorted(registered)
    assert [phase[n] for n in order] == sorted(phase[n] for n in order)
    for p in (evidence.TEACH, evidence.RESOLVE):
        assert [n for n in order if phase[n] == p] == [n for n in registered if phase[n] == p]


def test_evidence_from_outside_the_file_ranks_below_the_files_own():
    assert evidence.PRECEDENCE[-len(evidence.EXTERNAL) :] == evidence.EXTERNAL
    assert all(name in DIRECT_SOURCES for name in evidence.EXTERNAL)


def test_sources_from_outside_the_file_declare_what_they_hand_the_caller(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    checkpoint = tmp_path / "c.safetensors"
    checkpoint.write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    sources = transfer_sources(REPO_ROOT / "data" / "bert-tiny.onnx", checkpoint, None)
    assert [source.PARAMETER for source in sources] == ["reference", "weights"]
    for source in sources:
        assert isinstance(source, evidence.ExternalSource) and source.notes == [] and source.decided_by == {}
