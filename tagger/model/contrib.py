"""onnxruntime's fused contrib ops (`com.microsoft`) that compute the ops of more than one module.

Which they are, read from the op alone; what becomes of them is decided where they are met: an
activation fused after a weighted op belongs to the weighted module's caller (the initializer
source, `tagger.evidence.initializers`), a residual sum fused before a norm is widened after
inference (`tagger.pipeline.fused`, whose docstring gives the rules and what they measured).
"""

from __future__ import annotations

from tagger.model.index import NodeView

__all__ = ["ACTIVATION_AFTER", "CONTRIB_DOMAIN", "RESIDUAL_NORMS", "applies_activation", "fused_bias", "is_residual_norm"]

CONTRIB_DOMAIN = "com.microsoft"
ACTIVATION_AFTER = frozenset({"BiasGelu", "FastGelu", "GemmFastGelu", "BiasSplitGelu", "FusedConv", "FusedGemm"})
"""An activation fused after a weighted op or its bias: the node's result is the activation's."""
RESIDUAL_NORMS = frozenset({"SkipLayerNormalization", "SkipSimplifiedLayerNormalization"})
"""A residual sum fused before a norm: the node may also hand on the sum (its 4th output)."""
_BIAS_INPUT = 4


def applies_activation(view: NodeView) -> bool:
    """Whether the node is a contrib op applying an activation after the parameters it reads."""
    return view.op_type in ACTIVATION_AFTER and view.domain == CONTRIB_DOMAIN


def is_residual_norm(view: NodeView) -> bool:
    """Whether the node is a contrib op adding a residual before a norm."""
    return view.op_type in RESIDUAL_NORMS and view.domain == CONTRIB_DOMAIN


def fused_bias(view: NodeView) -> str | None:
    """The bias a fused residual norm adds before the sum (its fifth input), if any: the last op
    of the Linear whose output it sums, fused in by onnxruntime (`SkipLayerNorm_AddBias`)."""
    if is_residual_norm(view) and len(view.input) > _BIAS_INPUT:
        return view.input[_BIAS_INPUT] or None
    return None
