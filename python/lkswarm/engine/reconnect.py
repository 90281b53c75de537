"""When a participant that was joined loses its signal connection: how long to wait before each attempt to
get back, and when to give up. Sans-I/O: time and randomness are arguments.

Theory of operation
-------------------
A *reconnect episode* starts when a joined participant's WebSocket is lost
(or the server asks it to resume or rejoin) and ends when media flows again
(or, without media, when the server has answered the resume or the fresh
join); that time is the ``recovery`` latency phase. Inside an episode every failed attempt (connection refused, an HTTP
refusal, a WebSocket that closes before the answer) is followed by another,
after an exponential backoff with jitter, as the SDKs do, so a restarting
server is not hit by every participant in the same millisecond::

    attempt n waits  min(CAP, BASE * 2**n) * uniform(1 - JITTER, 1 + JITTER)

An episode gives up after `MAX_ATTEMPTS` attempts or `WINDOW_S` seconds,
whichever comes first; the participant then fails with ``reconnect_failed``,
its detail saying it failed *during a reconnect* and why the last attempt did.
A server that no longer knows the participant answers the resume with a leave
asking for a fresh join: that stays in the same episode.
"""

from __future__ import annotations

import random

BASE_S = 0.25
CAP_S = 4.0
JITTER = 0.5
MAX_ATTEMPTS = 12
WINDOW_S = 30.0


class ReconnectEpisode:
    """One episode: from the lost connection to media flowing again, or to giving up."""

    __slots__ = ("attempts", "last_error", "rng", "started_at")

    def __init__(self, started_at: float, rng: random.Random | None = None) -> None:
        self.started_at = started_at  # perf_counter seconds when the connection was lost
        self.attempts = 0  # failed attempts so far
        self.last_error = ""
        self.rng = rng or random.Random()

    def next_delay_s(self, now: float, error: str) -> float | None:
        """A failed attempt: the delay before the next one, or None when the episode gives up."""
        self.attempts += 1
        self.last_error = error
        if self.attempts >= MAX_ATTEMPTS or now - self.started_at >= WINDOW_S:
            return None
        delay_s: float = min(CAP_S, BASE_S * 2.0 ** (self.attempts - 1)) * self.rng.uniform(1 - JITTER, 1 + JITTER)
        return min(delay_s, max(0.0, self.started_at + WINDOW_S - now))

    def give_up_detail(self, now: float) -> str:
        return (
            f"during a reconnect: {self.last_error or 'no answer'} "
            f"({self.attempts} attempt(s) over {now - self.started_at:.1f} s)"
        )
