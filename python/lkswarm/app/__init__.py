"""Layer 6, the composition root: builds the tiers, runs the engine, builds the report.

- `runner`: one process's run (`run_scenario`). `workers`: ``--workers N`` processes, merged.
- `server`: the embedded livekit-server. `scenario`: scenario files and the shipped `presets/`.
"""
