"""One capacity level's hold window (`HoldWindow`) and the server's figures over it (`server_figures`).

The window taps a real `PhaseMetrics`; the media tiers are fakes with running packet counts, and the
clock and CPU time are replaced so that the generator's figures are exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import cast

import pytest

from lkswarm.app import capacity_level
from lkswarm.app.capacity_level import HoldWindow, server_figures
from lkswarm.engine.ports import MediaCounts, MediaTier
from lkswarm.metrics import PhaseMetrics
from lkswarm.observe.server_metrics import Scrape, parse_exposition


class FakeTier:
    """A media tier with running packet totals (None: a tier that counts only at the end)."""

    def __init__(self, counts: MediaCounts | None) -> None:
        self.counts = counts

    def running_counts(self) -> MediaCounts | None:
        return self.counts

    def advance(self, received: int, expected: int, lost: int) -> None:
        assert self.counts is not None
        self.counts = MediaCounts(
            self.counts.packets_received + received,
            self.counts.packets_expected + expected,
            self.counts.packets_lost + lost,
        )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.cpu = 50.0

    def perf_counter(self) -> float:
        return self.now

    def cpu_s(self) -> float:
        return self.cpu


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(capacity_level, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    monkeypatch.setattr(capacity_level, "_cpu_s", clock.cpu_s)
    return clock


def window_of(metrics: PhaseMetrics, tiers: Sequence[FakeTier]) -> HoldWindow:
    return HoldWindow(metrics, cast(Sequence[MediaTier], tiers))


def held_level(clock: Clock) -> tuple[HoldWindow, PhaseMetrics]:
    """A hold of 10 s in two sub-windows, with values recorded before, during and after it."""
    metrics = PhaseMetrics()
    light, probe = FakeTier(MediaCounts(1000, 1100, 100)), FakeTier(MediaCounts(10, 10, 0))
    window = window_of(metrics, [light, probe, FakeTier(None)])
    metrics.record("join_response", 5000.0)  # the ramp: not the hold's
    metrics.record_lateness(500.0)
    light.advance(500, 500, 0)
    window.open()
    metrics.record("join_response", 100.0)
    metrics.record("join_response", 200.0)
    metrics.record("ping_rtt", 30.0)
    metrics.record_loop_lag(5.0)
    metrics.record_lateness(1.0)
    light.advance(900, 1000, 10)
    probe.advance(5, 5, 0)
    clock.now += 5.0
    window.boundary()
    metrics.record("join_response", 300.0)
    metrics.record("ping_rtt", 50.0)
    metrics.record_lateness(2.0)
    light.advance(800, 1000, 200)
    clock.now += 5.0
    clock.cpu += 0.5
    window.close()
    metrics.record("join_response", 9999.0)  # after the hold: not the hold's
    metrics.record_loop_lag(999.0)
    light.advance(1, 1, 1)
    return window, metrics


def test_values_fall_in_the_sub_window_they_were_recorded_in_and_only_within_the_hold(clock: Clock) -> None:
    window, metrics = held_level(clock)
    assert window.values("join_response") == [[100.0, 200.0], [300.0]]
    assert window.values("ping_rtt") == [[30.0], [50.0]]
    assert window.values("loop_lag") == [[5.0], []]
    assert window.values("lateness") == [[1.0], [2.0]]
    assert window.values("media_e2e") == [[], []]
    assert metrics.taps == []  # the tap is gone after close
    assert window.held_s == 10.0


def test_media_trials_are_lost_and_expected_packets_per_sub_window(clock: Clock) -> None:
    window, _ = held_level(clock)
    # Marks (received, expected, lost) over both tiers: open (1510, 1610, 100), boundary (2415, 2615, 110),
    # close (3215, 3615, 310); the tier without running counts adds nothing.
    assert window.media_marks == [(1510, 1610, 100), (2415, 2615, 110), (3215, 3615, 310)]
    assert window.media_trials() == [(10, 1005), (200, 1000)]
    assert window.has_media


def test_a_verdict_read_before_the_close_judges_the_last_sub_window_s_packets_too(clock: Clock) -> None:
    """The controller judges the hold (``read_hold``) before it closes it; the last sub-window then had no
    closing mark, so its loss was never judged: by default the last 10 s of a 60 s hold."""
    metrics = PhaseMetrics()
    light = FakeTier(MediaCounts(0, 0, 0))
    window = window_of(metrics, [light])
    window.open()
    light.advance(1000, 1000, 0)
    window.boundary()
    light.advance(800, 1000, 200)  # all the loss comes late
    assert window.snapshot().media_trials() == [(0, 1000), (200, 1000)]
    assert window.media_marks == [(0, 0, 0), (1000, 1000, 0)], "reading marks nothing: the close still does"
    window.close()
    assert window.media_trials() == [(0, 1000), (200, 1000)]


def test_client_figures_are_the_hold_s_alone(clock: Clock) -> None:
    window, _ = held_level(clock)
    figures = window.client(failed=2, attempted=40, alive=38, active=37)
    assert figures["join_response"] == {"count": 3, "p50": 200.0, "p95": 300.0, "p99": 300.0}
    assert figures["ping_rtt"] == {"count": 2, "p50": 30.0, "p95": 50.0, "p99": 50.0}
    assert figures["joined"] == 3
    assert (figures["failed"], figures["attempted"], figures["alive"], figures["active"]) == (2, 40, 38, 37)
    assert figures["packets_received"] == 3215 - 1510
    assert figures["packets_expected"] == 3615 - 1610
    assert figures["packets_lost"] == 210
    assert figures["loss_ratio"] == round(210 / 2005, 6) == 0.104738


def test_a_window_without_media_has_no_trials_and_no_loss(clock: Clock) -> None:
    metrics = PhaseMetrics()
    window = window_of(metrics, [FakeTier(None)])
    window.open()
    metrics.record("join_response", 120.0)
    clock.now += 2.0
    window.close()
    assert not window.has_media
    assert window.media_trials() == [(0, 0)]
    figures = window.client(failed=0, attempted=1, alive=1, active=1)
    assert (figures["packets_expected"], figures["packets_lost"], figures["loss_ratio"]) == (0, 0, 0.0)
    assert figures["join_response"]["p95"] == 120.0
    assert figures["ping_rtt"] == {"count": 0, "p50": 0.0, "p95": 0.0, "p99": 0.0}


def test_a_healthy_generator_is_not_bound(clock: Clock) -> None:
    window, _ = held_level(clock)
    figures = window.generator(media_lag=(1000, 10))  # exactly 1 % over 20 ms: p99 not above it
    assert figures == {
        "cpu_percent": 5.0,  # 0.5 s of CPU over a 10 s hold
        "lateness_p99_ms": 2.0,
        "loop_lag_p99_ms": 5.0,
        "bound": False,
        "reason": "",
    }


def test_the_generator_is_bound_by_lateness_loop_lag_or_media_lag(clock: Clock) -> None:
    metrics = PhaseMetrics()
    window = window_of(metrics, [])
    window.open()
    for _ in range(10):
        metrics.record_lateness(30.0)  # > 10 ms
        metrics.record_loop_lag(45.0)  # > 20 ms
    clock.now += 4.0
    clock.cpu += 3.8
    window.close()
    figures = window.generator(media_lag=(1000, 11))  # 1.1 % of the media thread's timers over 20 ms
    assert figures["bound"] is True
    assert figures["cpu_percent"] == 95.0
    assert figures["lateness_p99_ms"] == pytest.approx(30.0)
    assert figures["loop_lag_p99_ms"] == pytest.approx(45.0)
    assert figures["reason"] == (
        "scheduler lateness p99 30 ms > 10 ms; event-loop lag p99 45 ms > 20 ms; media thread lag p99 > 20 ms"
    )
    assert window.generator(media_lag=None)["reason"].count(";") == 1
    assert window.generator(media_lag=(0, 0))["reason"].count(";") == 1


def test_media_lag_alone_binds_the_generator(clock: Clock) -> None:
    window = window_of(PhaseMetrics(), [])
    window.open()
    clock.now += 1.0
    window.close()
    assert window.generator(media_lag=(100, 2)) == {
        "cpu_percent": 0.0,
        "lateness_p99_ms": 0.0,
        "loop_lag_p99_ms": 0.0,
        "bound": True,
        "reason": "media thread lag p99 > 20 ms",
    }


# -- server figures --------------------------------------------------------------------------


BEFORE = """\
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 100
process_resident_memory_bytes 1.2e+08
livekit_participant_total{node_id="n1"} 10
livekit_packet_total{direction="incoming",transmission="new",node_id="n1"} 1000
livekit_packet_total{direction="outgoing",transmission="new",node_id="n1"} 5000
livekit_packet_total{direction="outgoing",transmission="retransmit",node_id="n1"} 100
livekit_packet_bytes{direction="incoming",transmission="new",node_id="n1"} 100000
livekit_packet_bytes{direction="outgoing",transmission="new",node_id="n1"} 500000
livekit_packet_bytes{direction="outgoing",transmission="retransmit",node_id="n1"} 10000
livekit_nack_total{direction="incoming",node_id="n1"} 40
livekit_nack_total{direction="outgoing",node_id="n1"} 10
livekit_pli_total{direction="incoming",node_id="n1"} 4
livekit_participant_join_total{state="signal_connected",node_id="n1"} 20
livekit_participant_join_total{state="rtc_connected",node_id="n1"} 18
livekit_participant_join_total{state="rtc_init",node_id="n1"} 19
"""

AFTER = """\
process_cpu_seconds_total 115
process_resident_memory_bytes 1.5e+08
livekit_participant_total{node_id="n1"} 30
livekit_packet_total{direction="incoming",transmission="new",node_id="n1"} 3000
livekit_packet_total{direction="outgoing",transmission="new",node_id="n1"} 44500
livekit_packet_total{direction="outgoing",transmission="retransmit",node_id="n1"} 600
livekit_packet_bytes{direction="incoming",transmission="new",node_id="n1"} 300000
livekit_packet_bytes{direction="outgoing",transmission="new",node_id="n1"} 4000000
livekit_packet_bytes{direction="outgoing",transmission="retransmit",node_id="n1"} 60000
livekit_nack_total{direction="incoming",node_id="n1"} 140
livekit_nack_total{direction="outgoing",node_id="n1"} 30
livekit_pli_total{direction="incoming",node_id="n1"} 9
livekit_pli_total{direction="outgoing",node_id="n1"} 1
livekit_participant_join_total{state="signal_connected",node_id="n1"} 45
livekit_participant_join_total{state="rtc_connected",node_id="n1"} 40
livekit_participant_join_total{state="rtc_init",node_id="n1"} 42
livekit_participant_join_total{state="signal_failed",node_id="n1"} 2
"""


def test_server_figures_are_rates_over_the_hold_from_two_scrapes() -> None:
    figures = server_figures(parse_exposition(BEFORE), parse_exposition(AFTER), 10.0, proc_cpu_s=0.3)
    assert figures == {
        "cores": 1.5,  # 15 CPU seconds in 10 s; Prometheus wins over /proc
        "cpu_source": "prometheus",
        "rss_mb": 150.0,
        "participants": 30.0,  # a gauge: the value at the end
        "packets_in_per_s": 200.0,
        "packets_out_per_s": 4000.0,  # new and retransmitted: (45100 - 5100) / 10
        "bytes_out_per_s": 355000.0,
        "bytes_in_per_s": 20000.0,
        "retransmit_share": 0.0125,  # 50 of the 4000 packets/s out were retransmits
        "nacks_per_s": 12.0,  # both directions
        "plis_per_s": 0.6,
        # Increases over the hold; a state first seen after the hold counts from 0.
        "join_funnel": {"rtc_connected": 22.0, "rtc_init": 23.0, "signal_connected": 25.0, "signal_failed": 2.0},
    }


def test_counters_that_went_backwards_give_no_negative_rate() -> None:
    # A server restarted between the scrapes: its counters started again from 0.
    figures = server_figures(parse_exposition(AFTER), parse_exposition(BEFORE), 10.0, None)
    assert figures is not None
    assert figures["cores"] == 0.0
    assert figures["packets_out_per_s"] == 0.0
    assert figures["retransmit_share"] == 0.0
    assert figures["nacks_per_s"] == 0.0


def test_without_process_metrics_the_cores_come_from_proc() -> None:
    no_process = "\n".join(line for line in AFTER.splitlines() if not line.startswith("process_"))
    before = "\n".join(line for line in BEFORE.splitlines() if not line.startswith("process_"))
    figures = server_figures(parse_exposition(before), parse_exposition(no_process), 10.0, proc_cpu_s=0.42)
    assert figures is not None
    assert (figures["cores"], figures["cpu_source"], figures["rss_mb"]) == (0.42, "proc", None)
    assert figures["packets_out_per_s"] == 4000.0
    unknown = server_figures(parse_exposition(before), parse_exposition(no_process), 10.0, proc_cpu_s=None)
    assert unknown is not None
    assert (unknown["cores"], unknown["cpu_source"]) == (None, "")


def test_proc_only_when_a_scrape_failed_or_none_was_made() -> None:
    expected = {
        "cores": 0.8,
        "cpu_source": "proc",
        "rss_mb": None,
        "participants": None,
        "packets_in_per_s": None,
        "packets_out_per_s": None,
        "bytes_out_per_s": None,
        "bytes_in_per_s": None,
        "retransmit_share": None,
        "nacks_per_s": None,
        "plis_per_s": None,
        "join_funnel": {},
    }
    assert server_figures(None, None, 10.0, proc_cpu_s=0.8) == expected
    failed = "http://127.0.0.1:6789/metrics: connection refused"
    assert server_figures(failed, parse_exposition(AFTER), 10.0, proc_cpu_s=0.8) == expected
    assert server_figures(parse_exposition(BEFORE), parse_exposition(AFTER), 0.0, proc_cpu_s=0.8) == expected


def test_nothing_read_is_none() -> None:
    assert server_figures(None, None, 10.0, None) is None
    assert server_figures("unreachable", "unreachable", 10.0, None) is None
    assert server_figures(Scrape(), "unreachable", 10.0, None) is None
