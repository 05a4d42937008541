"""The numerics report as Model Explorer node data: the float model's graph coloured by the error
each module adds.

Each node of the float model's main graph gets its piece's **own error** as a percentage of the
signal, `100 * 10^(-SNR/20)` (the RMS of the error over the RMS of the float values: 40 dB is
1%, 20 dB is 10%, an exact module 0): larger is worse, so the viewer's white-to-red gradient
paints the module that loses the accuracy red. Nodes of a piece without an own figure are left
out, as are nodes the viewer's ONNX adapter would rename (`tagger.reporting.node_data`). `modules` holds
the same value per piece, for scripts.
"""

from __future__ import annotations

import math
import os

from tagger.commands.extract.source import Source
from tagger.commands.numerics.partition import Piece
from tagger.commands.numerics.report import ModuleNumerics, NumericsReport
from tagger.model.index import build_index
from tagger.reporting.node_data import explorer_ids, node_data, write_node_data

__all__ = ["own_error_percent", "write_numerics_node_data"]


def own_error_percent(module: ModuleNumerics) -> float | None:
    """The module's own error as a percentage of the signal's RMS, or None without an own figure."""
    own = module.own
    if own is None or math.isnan(own.snr_db) or own.snr_db == -math.inf:
        return None
    return 0.0 if math.isinf(own.snr_db) else 100.0 * 10.0 ** (-own.snr_db / 20.0)


def write_numerics_node_data(
    report: NumericsReport, float_src: Source, pieces: dict[Piece, list[int]], path: str | os.PathLike
) -> int:
    """Write the node data file; returns how many nodes got a value."""
    index = build_index(float_src.model)
    ids = explorer_ids(index)
    main_ids = [ids[i] for i in index.graphs[0].node_ids]
    values: dict[str, float] = {}
    modules: dict[str, float] = {}
    for module in report.modules:
        percent = own_error_percent(module)
        if percent is None:
            continue
        modules[module.piece.label] = round(percent, 6)
        for position in pieces.get(module.piece, ()):
            found = main_ids[position]
            if found is not None:
                values[found.node] = round(percent, 6)
    graph = float_src.model.graph.name
    write_node_data(node_data(values, graph, modules, "own error, % of signal RMS (tagger numerics)"), path)
    return len(values)
