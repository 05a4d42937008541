"""The inputs models are run on (`profile`, `extract --verify`, `numerics`): given or generated
(`feeds`), by the rules of `input_rules`.
"""
