"""Layer 5, watching a run while it runs: the live terminal view (`live`) and the Prometheus endpoint (`prometheus`).

Both consume `lkswarm.engine.timeline.Snapshot`s and the run's `PhaseMetrics`, never the engine.
"""
