"""Layer 4, the light media tier: str0m PeerConnections in the Rust `MediaHub`, synthetic media.

- `tier`: `LightTier` (one hub per run) and `LightLeg` (one participant's peer), through the engine's ports.
- `totals`: `MediaTotals`, the run's media figures (the report's ``media`` section).
- `clips`: the synthetic VP8/H.264/Opus clips publishers send.

RTP packets are counted in Rust: ``rust/src/media/peer.rs`` (``on_rtp``) -> ``rxstats.rs``.
"""
