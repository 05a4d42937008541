"""Rule 1b: the QDQ pair writing a graph output. It rests on fact A (`flows.py`). Certain.

1b. (A) A QuantizeLinear -> DequantizeLinear pair writing a graph output is its producer's: the
   QDQ format pairs stand for the tensor they quantize and serve the op that wrote it.
"""

from __future__ import annotations

from tagger.infer.graph import Graph
from tagger.infer.state import Flows, State, Steps

_QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})

__all__ = ["STEPS"]


def decide(state: State, i: int, bound: int, flows: Flows) -> int | None:
    return _output_qdq(state, i)


def _output_qdq(state: State, i: int) -> int | None:
    """Rule 1b: a QuantizeLinear -> DequantizeLinear pair whose result no node reads (a graph
    output) is its producer's. In the QDQ format a pair stands for the tensor it quantizes,
    and onnxruntime groups each Q/DQ with the op it serves (a DQ with the op reading it, a Q
    with the op that wrote its input); a DQ writing a graph output serves no op but the one
    whose output it carries (a quantizer gives it that output's name)."""
    g, labels = state.graph, state.labels
    if g.op[i] == "DequantizeLinear":
        dq, quantizers = i, g.writers[i]
        if len(quantizers) != 1 or g.op[quantizers[0]] != "QuantizeLinear":
            return None
        q = quantizers[0]
    elif g.op[i] == "QuantizeLinear" and len(g.readers[i]) == 1 and g.op[g.readers[i][0]] == "DequantizeLinear":
        q, dq = i, g.readers[i][0]
    else:
        return None
    if g.readers[dq] or g.readers[q] != (dq,) or len(g.writers[q]) != 1:
        return None
    producer = labels[g.writers[q][0]]
    return producer if producer >= 0 else None


def _may(graph: Graph) -> list[bool]:
    """`decide` looks at QuantizeLinear and DequantizeLinear nodes alone."""
    return [op in _QDQ for op in graph.op]


STEPS = Steps(decide=decide, may=_may)
