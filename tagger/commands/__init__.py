"""The commands beyond retag and report: `audit`, `diff`, `nodes`, `extract`, `profile`,
`numerics`, with what they share (`nodetags`, `selection`, `options`).
"""
