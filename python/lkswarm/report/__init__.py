"""Layer 5, the report (``lkswarm.report/1``): pure functions of a `RunRecord` or of report dicts.

- `schema`: the report's TypedDicts, `SCHEMA`, and the one builder of sections shared by every writer.
- `build`: a run record -> the report. `merge`: several reports -> one, exactly (from histograms).
- `thresholds`: ``--threshold`` rules. `csv_tables`, `html_page`, `html_figures`: the other outputs.
"""
