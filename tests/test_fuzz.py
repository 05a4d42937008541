"""Seeded fuzzing on the session's real exports (`bench.fuzz`): the invariants hold on mutated graphs.

A fast subset runs here (`FAST_CASES`, seed 0, every base model of `built_cases` three times);
the benchmark mode runs thousands: `python -m bench.fuzz --cases 5000`.
"""

from __future__ import annotations

from collections import Counter

import pytest

from bench import fuzz

FAST_CASES = 210


@pytest.fixture(scope="module")
def bases(built_cases) -> list[fuzz.Base]:
    return fuzz.bases_from({"-".join(key): case.path for key, case in built_cases.items()})


def test_mutated_real_exports_keep_every_invariant(bases, tmp_path):
    results = [fuzz.fuzz_case(bases, i, 0, tmp_path) for i in range(FAST_CASES)]
    assert not any(r.failures for r in results), fuzz.summary(results, 0.0, 0)
    # the run exercised what it claims: every mutation, nested bodies, mostly checker-valid inputs
    assert set(Counter(m.split("(")[0] for r in results for m in r.mutations)) == set(fuzz.MUTATIONS)
    assert max(r.depth for r in results) >= 2
    assert sum(r.input_checker_ok for r in results) > 0.8 * FAST_CASES


def test_the_fuzzer_catches_a_writer_that_skips_nodes(bases, tmp_path, monkeypatch):
    """The invariants are not vacuous: a writer that leaves Add nodes alone is caught at once."""
    import tagger.api

    original = tagger.api.write_tags

    def skipping(nodes, views, assignments):
        kept = [(n, v, a) for n, v, a in zip(nodes, views, assignments, strict=True) if n.op_type != "Add"]
        return original(*(list(column) for column in zip(*kept, strict=True))) if kept else 0

    monkeypatch.setattr(tagger.api, "write_tags", skipping)
    results = [fuzz.fuzz_case(bases, i, 0, tmp_path) for i in range(5)]
    assert all(any(f.startswith("complete") for f in r.failures) for r in results)


def test_the_fuzzer_catches_a_writer_that_touches_other_entries(bases, tmp_path, monkeypatch):
    import tagger.api

    original = tagger.api.write_tags

    def noisy(nodes, views, assignments):
        for node in nodes:
            node.doc_string += " "
        return original(nodes, views, assignments)

    monkeypatch.setattr(tagger.api, "write_tags", noisy)
    results = [fuzz.fuzz_case(bases, i, 0, tmp_path) for i in range(5)]
    assert all(any(f.startswith("lossless") for f in r.failures) for r in results)
