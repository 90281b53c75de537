"""Layer 3, the engine: the plan, the scheduler, the participant drivers, sampling, and the ports tiers plug into.

- `ports`: the `typing.Protocol` seams: what a run lends a participant or tier (`RunContext`), the slice
  of a driver a media leg may touch (`ParticipantHost`), a per-participant `MediaLeg`, a per-run `MediaTier`.
- `outcome`: `Outcome(kind, reason)`, the one way a participant ends.
- `record`: `RunRecord`, the plain data `Engine.run()` returns and the report is built from.
- `engine`: `Engine`, the open-model scheduler. `participant`: `ParticipantDriver`, one participant's I/O.
- `leg`: the signaling glue both media tiers share (connected -> ACTIVE -> announce; offers, answers, trickle).
- `plan`: every arrival, fixed before the run. `timeline`: once-a-second `Snapshot`s.

The engine imports no tier and no report code: the composition root (`lkswarm.app`) injects the tiers.
"""
