"""The part of a retag no tagging logic can remove, as one process: start-up and the CLI's imports,
load, read every node's fields (`build_index`), write one tag on every node (`write_tags`), save.
`bench.scale` times it beside `tagger retag`: what retag costs above it is evidence, inference and
the report; what it costs above the floor is the design (Python reading and writing every node).

    python -m bench.scale_skeleton MODEL.onnx      (writes MODEL.onnx.skeleton.onnx)
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import tagger.cli  # noqa: F401  (what `python -m tagger` imports)
from tagger.model.index import build_index
from tagger.model.modelio import load_model_and_locations, save_model
from tagger.pipeline.tagging import Assignment
from tagger.writing.write import write_tags


def main(source: Path) -> None:
    model, locations = load_model_and_locations(source)
    gc.disable()  # as retag does while it indexes
    index = build_index(model)
    one = Assignment("a.b", "/a/b", "name")
    write_tags(index.nodes, index.views, [one] * len(index.nodes))
    del index
    gc.enable()
    save_model(model, source, Path(str(source) + ".skeleton.onnx"), locations=locations, size_hint=source.stat().st_size)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
