"""Child-process entry of `bench.scale`: retag's steps one by one (the calls `tagger.retag`
makes), each timed; prints {step: seconds} as JSON. Nothing else runs in the process: a floor
timed after them would find its memory already faulted in and look cheaper than on its own.

    python -m bench.scale_phases MODEL.onnx
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
import time
from pathlib import Path

from tagger.model.index import build_index
from tagger.model.modelio import load_model_and_locations, save_model
from tagger.pipeline.tagging import tag_model
from tagger.reporting.coverage_report import build_report
from tagger.writing.validate import check_index
from tagger.writing.write import write_tags


def measure_phases(path: str) -> dict[str, float]:
    source = Path(path)
    steps: dict[str, float] = {}

    @contextlib.contextmanager
    def step(name: str):
        started = time.perf_counter()
        yield
        steps[name] = time.perf_counter() - started

    gc.disable()  # as `tagger.api` does while it tags
    with step("read and parse (load_model_and_locations)"):
        model, locations = load_model_and_locations(source)
    with step("index, evidence, inference (tag_model)"):
        result = tag_model(model)
    with step("… of which reading every node's fields (build_index, timed again apart)"):
        build_index(model)
    with step("structural checks (check_index)"):
        check_index(result.index)
    with step("write tags (write_tags)"):
        write_tags(result.index.nodes, result.index.views, result.assignments)
    with step("coverage report (build_report)"):
        build_report(result, source.name)
    with step("free the analysis"):
        del result
    gc.enable()
    with step("serialise and write (save_model)"):
        save_model(model, source, Path(path + ".tagged.onnx"), locations=locations)
    return steps


if __name__ == "__main__":
    print(json.dumps(measure_phases(sys.argv[1])))
