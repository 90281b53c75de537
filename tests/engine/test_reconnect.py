"""Reconnect backoff without sockets: growing, jittered, bounded in attempts and time (lkswarm.engine.reconnect)."""

from __future__ import annotations

import random

from lkswarm.engine import reconnect
from lkswarm.engine.reconnect import ReconnectEpisode


def test_the_backoff_grows_with_jitter_and_is_capped() -> None:
    episode = ReconnectEpisode(100.0, random.Random(7))
    delays = [episode.next_delay_s(100.0, "connect_failed: refused") for _ in range(8)]
    assert all(d is not None for d in delays)
    nominal = [min(reconnect.CAP_S, reconnect.BASE_S * 2**n) for n in range(8)]
    for delay, base in zip(delays, nominal, strict=True):
        assert delay is not None and base * (1 - reconnect.JITTER) <= delay <= base * (1 + reconnect.JITTER)
    assert max(d for d in delays if d is not None) <= reconnect.CAP_S * (1 + reconnect.JITTER)


def test_participants_do_not_retry_in_lockstep() -> None:
    """A restarted server must not see every participant's second attempt in the same millisecond."""
    firsts = {ReconnectEpisode(0.0, random.Random(seed)).next_delay_s(0.0, "x") for seed in range(50)}
    assert len(firsts) == 50


def test_an_episode_gives_up_after_its_attempts_or_its_window() -> None:
    by_count = ReconnectEpisode(0.0, random.Random(1))
    results = [by_count.next_delay_s(0.1 * k, "connect_failed: refused") for k in range(reconnect.MAX_ATTEMPTS)]
    assert results[-1] is None and all(r is not None for r in results[:-1])
    detail = by_count.give_up_detail(5.0)
    assert (
        detail.startswith("during a reconnect: connect_failed: refused")
        and f"{reconnect.MAX_ATTEMPTS} attempt" in detail
    )
    by_time = ReconnectEpisode(0.0, random.Random(1))
    assert by_time.next_delay_s(reconnect.WINDOW_S + 0.1, "http_503") is None
    late = ReconnectEpisode(0.0, random.Random(1)).next_delay_s(reconnect.WINDOW_S - 0.05, "x")
    assert late is not None and late <= 0.05 + 1e-9  # never waits past the window
