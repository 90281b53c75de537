"""Layer 1, sans-I/O signaling: LiveKit's ``/rtc`` protocol as bytes in, events and bytes out.

- `codec`: the Rust codec (`lkswarm._core`) behind typed Python calls: where a frame is decoded.
- `enums`: the protocol's enums (`SignalTarget`, `DisconnectReason`, ...).
- `events`: what a session tells its driver (`Joined`, `OfferReceived`, ...), frozen dataclasses.
- `session`: `SignalSession`, one participant's signal state machine (join, pings, resume, room view).
- `websocket`: the sans-I/O WebSocket client (RFC 6455) under the session.
- `requests`: the track requests both media tiers send (``addTrack``, ``trackSetting``).

Nothing here imports asyncio or reads a clock: time is an argument.
"""
