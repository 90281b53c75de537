"""Phases whose values the media thread keeps until the end (data latency), shown live to a Prometheus scrape."""

from __future__ import annotations

from lkswarm.metrics import BUCKET_BOUNDS_MS, PhaseMetrics


def test_a_live_phase_shows_its_source_and_settles_into_the_same_buckets_never_fewer() -> None:
    """The scrape showed data_e2e empty until the end; then the final read, taken apart from the lock, could be
    older than what a scrape had just shown, and a value on a bound (5,000 µs) moved to the next bucket."""
    metrics = PhaseMetrics()
    live = [(800, 3), (5_000, 2)]
    metrics.add_live_source("data_e2e", lambda: list(live))
    counts, sum_ms = metrics.bucket_counts_now("data_e2e")
    bound_5ms = BUCKET_BOUNDS_MS.index(5)
    assert sum(counts) == 5 and counts[bound_5ms] == 2 and sum_ms == 0.8 * 3 + 5.0 * 2
    assert metrics.phases["data_e2e"].get_total_count() == 0  # nothing kept until it settles
    live.append((20_000, 1))  # more arrived after the last scrape: the settle reads it under the lock
    metrics.settle_live_source("data_e2e", lambda: list(live))
    settled, settled_sum_ms = metrics.bucket_counts_now("data_e2e")
    assert settled[bound_5ms] == 2 and sum(settled) == 6 and settled_sum_ms == sum_ms + 20.0
    assert metrics.phases["data_e2e"].get_total_count() == 6
    live.append((1_000, 100))  # the source is gone: nothing counts twice
    assert metrics.bucket_counts_now("data_e2e") == (settled, settled_sum_ms)
