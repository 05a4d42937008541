"""Writing the tags: what is refused before anything is written (`validate`), the lossless writer
of the three keys (`write`), Model Explorer's `namespace` entry (`namespace`).
"""
