"""The tagging pipeline: evidence, inference, structure, fallback (`tagging`), with control-flow
owners (`bodies`) and the display path (`display`).
"""
