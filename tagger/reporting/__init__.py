"""What a run reports: `CoverageReport` (`coverage_report`, `html_tree`), the kinds of a tag
(`certainty`), Model Explorer node data (`node_data`).
"""
