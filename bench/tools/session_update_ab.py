"""Per-update cost of `SignalSession` on one room update of 100 publishers with 2 tracks each (a third of
the audio tracks muted): the median of 7 rounds of 300 updates, in microseconds.

A/B: run it with PYTHONPATH at each tree's ``python/``; a tree of another commit needs this tree's
``_core.abi3.so`` copied in (the codec is unchanged). Recorded in 2026-12-06-session-update-ab.json.
"""

from __future__ import annotations

import statistics
import time

from lkswarm.signal import codec
from lkswarm.signal.session import SignalSession

ROUNDS, UPDATES = 7, 300


def update_frame(publishers: int = 100) -> bytes:
    def tracks(i: int) -> list[dict[str, object]]:
        return [{"sid": f"TR_{i}a", "type": "AUDIO", "muted": i % 3 == 0}, {"sid": f"TR_{i}v", "type": "VIDEO"}]

    parts = [{"sid": f"PA_{i}", "identity": f"p{i}", "state": "ACTIVE", "tracks": tracks(i)} for i in range(publishers)]
    return codec.encode_response({"update": {"participants": parts}})


def joined_session() -> SignalSession:
    join = {"room": {"name": "r"}, "participant": {"sid": "PA_me", "identity": "me"}, "pingInterval": 5}
    session = SignalSession("me", "token", join_timeout_s=15)
    session.start(0.0)
    session.receive_frame(codec.encode_response({"join": join}), 0.0)
    session.events_received()
    return session


def main() -> None:
    frame, session = update_frame(), joined_session()
    rounds_us = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(UPDATES):
            session.receive_frame(frame, 1.0)
            session.events_received()
        rounds_us.append((time.perf_counter() - started) / UPDATES * 1e6)
    print(round(statistics.median(rounds_us), 1))


if __name__ == "__main__":
    main()
