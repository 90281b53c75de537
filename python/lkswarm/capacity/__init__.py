"""Capacity search: find the largest load a LiveKit server carries within its SLOs, and explain it.

Pure, socket-free pieces that the ``lkswarm capacity`` command drives:

- `schema`: the report's ``capacity`` section (TypedDicts) and the verdict literals.
- `slo`: ``--slo`` parsing, exceedance counts with one-sided Clopper-Pearson bounds, per-SLO and per-level verdicts.
- `search`: the sans-I/O bracket-and-bisect state machine that chooses the next level to measure.
- `fits`: the offline models of the per-level series: Kneedle knee, OLS with prediction bands, Gunther's USL.
- `special`: the incomplete beta, Student's t and root bisection these need (stdlib only, no scipy).
"""
