"""The tagging pipeline: evidence, inference, structure, fallback (`tagging`), with control-flow
owners (`bodies`), the display path (`display`), and fused residual norms widened after inference
(`fused`).
"""
