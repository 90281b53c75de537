"""What the HTML report and Prometheus show: data-message and data-track rates on every live surface (the
timeline, the Prometheus exposition summed across worker processes, the HTML data tables and plot), and a
capacity report's header."""

from __future__ import annotations

from typing import Any

from lkswarm.engine.timeline import Snapshot
from lkswarm.observe.prometheus import Exposition, combine_expositions, render_metrics
from lkswarm.report.html_figures import data_over_time
from lkswarm.report.html_page import _data


def snapshot(**figures: Any) -> Snapshot:
    return Snapshot(t_s=1.0, **figures)


def test_prometheus_shows_data_tracks_summed_over_processes() -> None:
    parts = [
        Exposition(snapshot(data_sent=10, data_received=90, data_track_sent=30, data_track_received=270)),
        Exposition(snapshot(data_sent=5, data_received=45, data_track_sent=30, data_track_received=240)),
    ]
    text = render_metrics(combine_expositions(parts))
    assert "lkswarm_data_messages_sent_total 15" in text
    assert "lkswarm_data_track_frames_sent_total 60" in text
    assert "lkswarm_data_track_packets_received_total 510" in text


def test_prometheus_writes_values_exactly_and_loss_as_a_gauge() -> None:
    """Values went out as {:g}: 12,345,678 packets read 1.23457e+07. The running loss falls when a retransmission
    fills a gap, so as a counter each fall read as a reset to rate() and increase()."""
    text = render_metrics(Exposition(snapshot(media_packets_received=12_345_678, media_packets_lost=3, rss_mb=123.456)))
    assert "lkswarm_media_packets_received_total 12345678" in text
    assert "# TYPE lkswarm_media_packets_lost gauge" in text and "lkswarm_media_packets_lost 3" in text
    assert "lkswarm_media_packets_lost_total" not in text
    assert "e+0" not in text
    # Products of floats came out with their binary noise: 98262056.96000001 bytes, a lag of 0.0008349999999999999 s.
    snap = snapshot(rss_mb=93.7099237, loop_lag_p99_ms=0.835)
    text = render_metrics(Exposition(snap))
    assert "lkswarm_generator_rss_bytes 98261977\n" in text and "lkswarm_loop_lag_p99_seconds 0.000835\n" in text


def test_the_html_data_section_has_the_tracks_and_the_slow_readers() -> None:
    latency = {"count": 3, "p50": 1.0, "p99": 2.0, "max": 2.0}
    report: dict[str, Any] = {
        "latency_ms": {"data_e2e_slow_readers": {"count": 2, "p50": 900.0, "p99": 1900.0, "max": 1950.0}},
        "data": {
            "messages_sent": 4,
            "resend": {"resumes": 1, "resent": 2, "resend_unavailable": 0},
            "slow_readers": {"readers": 1, "pauses": 2},
            "latency_ms": latency,
            "channels": {},
            "tracks": {"frames_sent": 90, "loss_ratio": 0.0, "latency_ms": latency},
        },
    }
    page = _data(report)
    assert 'id="data-tracks"' in page and "latency_ms (data_track_e2e) p99" in page
    assert "resend.resent" in page and "slow_readers.pauses" in page
    assert "latency_ms (data_e2e_slow_readers) p99" in page


def test_the_data_plot_draws_data_track_rates_alone_too() -> None:
    timeline = {"t_s": [1.0, 2.0], "data_track_sent_per_s": [30.0, 30.0], "data_track_received_per_s": [0.0, 270.0]}
    figure, why = data_over_time({"timeline": timeline})
    assert figure is not None, why
    assert [trace["name"] for trace in figure["data"]] == ["data-track frames/s sent", "data-track packets/s received"]
    assert data_over_time({"timeline": {"t_s": [1.0]}})[0] is None


def test_a_capacity_report_header_shows_the_search_not_the_engine_sizing() -> None:
    from lkswarm.report.html_page import _header

    report: dict[str, Any] = {
        "config": {"rooms": 1, "participants": 2048, "rate": 20},
        "capacity": {
            "grow": "subscribers",
            "shape": {"rooms": 1, "participants_per_room": 8, "rate": 20.0},
            "search": {"max": 2048},
        },
    }
    header = _header(report)
    assert "capacity search growing subscribers from 1 room(s) × 8 participant(s), up to 2048" in header
    assert "× 2048 participant(s)" not in header


def test_the_html_badges_say_what_the_run_did_not_claim_and_did_not_do() -> None:
    """A run without thresholds, where everyone failed, wore a green 'thresholds passed'; not started
    participants and an interruption had no badge."""
    from lkswarm.report.html_page import _header

    outcomes = {"completed": 0, "left": 0, "failed": 3, "not_started": 2}
    report: dict[str, Any] = {"passed": True, "thresholds": [], "participants": {"outcomes": outcomes}}
    report["interrupted"] = {"signal": "SIGINT", "at_s": 3.14}
    header = _header(report)
    assert "no thresholds" in header and "thresholds passed" not in header
    assert '<span class="badge bad">3 failed, 2 not started</span>' in header
    assert '<span class="badge bad">interrupted by SIGINT at 3.1 s</span>' in header
    report.update(thresholds=[{"passed": True}], interrupted=None, participants={"outcomes": {"completed": 4}})
    header = _header(report)
    assert "thresholds passed" in header and "no failures" in header and "interrupted" not in header


def test_the_outcomes_counter_is_there_before_anyone_ended() -> None:
    """It appeared only with the first ended participant: an alert on it read nothing until then."""
    text = render_metrics(Exposition(snapshot()))
    assert 'lkswarm_outcomes_total{outcome="completed"} 0' in text.splitlines()
    ended = render_metrics(Exposition(snapshot(), outcomes={"completed": 3, "failed:http_401": 1}))
    assert 'lkswarm_outcomes_total{outcome="completed"} 3' in ended.splitlines()
    assert 'lkswarm_outcomes_total{outcome="failed:http_401"} 1' in ended.splitlines()
