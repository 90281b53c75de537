"""Layer 4, the probe tier: a sampled subset of participants on aiortc with real encode and decode.

- `tier`: `ProbeTier` (the probe loop thread) and `ProbeLeg`, through the engine's ports.
- `peer`: `ProbePeer`, one probe's aiortc PeerConnections, on the probe loop.
- `capture`: frame identity (barcodes, audio markers) and what the decoders saw.
- `aiortc_patches`, `barcode`, `netns` (the probes' impaired network namespace), `totals` (``probes`` section).

Probes count packets in Python, from aiortc's ``getStats`` (`peer.ProbePeer.receive_stats`).
"""
