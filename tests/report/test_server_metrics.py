"""The server's own counters (lkswarm.observe.server_metrics) and what the report concludes from them."""

from __future__ import annotations

from lkswarm.observe.server_metrics import parse_exposition, server_section
from lkswarm.report.build import loss_at_server_warning

BEFORE = """# HELP livekit_packet_total packets
# TYPE livekit_packet_total counter
livekit_packet_total{direction="incoming",transmission="initial",country="",node_id="N1"} 100
livekit_packet_total{direction="outgoing",transmission="initial",country="",node_id="N1"} 300
process_cpu_seconds_total 10
livekit_participant_total{node_id="N1"} 0
"""
AFTER = """livekit_packet_total{direction="incoming",transmission="initial",country="",node_id="N1"} 1100
livekit_packet_total{direction="outgoing",transmission="initial",country="",node_id="N1"} 2300
livekit_packet_total{direction="outgoing",transmission="retransmit",country="",node_id="N1"} 100
livekit_packet_loss_total{direction="incoming",source="x",type="audio",country=""} 1
livekit_nack_total{direction="incoming",country=""} 7
process_cpu_seconds_total 15
process_resident_memory_bytes 5.0e+07
livekit_participant_total{node_id="N1"} 20
not a sample line
livekit_packet_total{direction="outgoing"} NaN
"""


def test_the_server_section_is_the_difference_of_two_scrapes() -> None:
    section = server_section(parse_exposition(BEFORE), parse_exposition(AFTER), wall_s=10.0)
    assert section["available"] and section["packets_in"] == 1000 and section["packets_out"] == 2100
    assert section["packets_out_retransmit"] == 100 and section["retransmit_share"] == round(100 / 2100, 6)
    assert section["cores"] == 0.5 and section["participants"] == 20 and section["nacks_in"] == 7
    assert section["loss_in_ratio"] == round(1 / 1001, 6)


def test_what_could_not_be_read_is_said() -> None:
    assert server_section("http://x/metrics: refused", parse_exposition(AFTER), 1.0) == {
        "available": False,
        "reason": "http://x/metrics: refused",
    }


def test_loss_is_placed_at_the_server_only_when_the_evidence_says_so() -> None:
    media = {"loss_ratio": 0.25}
    server = {"available": True, "loss_in_ratio": 0.0, "cores": 1.9, "packets_out": 1e6}
    warning = loss_at_server_warning(media, server, rcvbuf_errors=0)
    assert warning is not None and "the loss happened at the server" in warning and "25.0%" in warning
    assert loss_at_server_warning(media, server, rcvbuf_errors=12) is None  # our sockets dropped some
    assert loss_at_server_warning(media, server, rcvbuf_errors=None) is None  # not known
    assert loss_at_server_warning(media, {"available": False}, rcvbuf_errors=0) is None
    assert loss_at_server_warning({"loss_ratio": 0.001}, server, rcvbuf_errors=0) is None
    assert loss_at_server_warning(media, {**server, "loss_in_ratio": 0.05}, rcvbuf_errors=0) is None


HEALTH_BEFORE = (
    BEFORE
    + """\
livekit_rtt_ms_bucket{direction="outgoing",source="MICROPHONE",type="AUDIO",country="",le="50"} 4
livekit_rtt_ms_bucket{direction="outgoing",source="MICROPHONE",type="AUDIO",country="",le="+Inf"} 4
livekit_rtt_ms_sum{direction="outgoing",source="MICROPHONE",type="AUDIO",country=""} 8
livekit_rtt_ms_count{direction="outgoing",source="MICROPHONE",type="AUDIO",country=""} 4
livekit_quality_rating_bucket{le="0"} 0
livekit_quality_rating_bucket{le="1"} 1
livekit_quality_rating_bucket{le="2"} 5
livekit_quality_rating_bucket{le="+Inf"} 5
livekit_quality_score_sum 20
livekit_quality_score_count 5
"""
)
HEALTH_AFTER = (
    AFTER
    + """livekit_packet_loss_total{direction="outgoing",source="MICROPHONE",type="AUDIO",country=""} 21
livekit_rtt_ms_sum{direction="outgoing",source="MICROPHONE",type="AUDIO",country=""} 38
livekit_rtt_ms_count{direction="outgoing",source="MICROPHONE",type="AUDIO",country=""} 14
livekit_rtt_ms_sum{direction="incoming",source="MICROPHONE",type="AUDIO",country=""} 900
livekit_rtt_ms_count{direction="incoming",source="MICROPHONE",type="AUDIO",country=""} 1
livekit_quality_rating_bucket{le="0"} 1
livekit_quality_rating_bucket{le="1"} 3
livekit_quality_rating_bucket{le="2"} 25
livekit_quality_rating_bucket{le="+Inf"} 26
livekit_quality_score_sum 109
livekit_quality_score_count 26
"""
)


def test_the_subscribers_health_as_the_server_saw_it_between_the_scrapes() -> None:
    section = server_section(parse_exposition(HEALTH_BEFORE), parse_exposition(HEALTH_AFTER), wall_s=10.0)
    assert section["loss_out_ratio"] == round(21 / 2100, 6)
    # Only the down tracks' RTT (direction outgoing), and only what the run added: 30 ms over 10 reports.
    assert (section["rtt_out_samples"], section["rtt_out_ms_mean"]) == (10, 3.0)
    # Cumulative buckets become one count per rating: le=0 POOR, le=1 GOOD, le=2 EXCELLENT, +Inf LOST.
    assert section["quality_samples"] == {"poor": 1, "good": 1, "excellent": 18, "lost": 1}
    assert section["quality_score_mean"] == round(89 / 21, 4)


def test_no_rtt_or_quality_observed_is_none_not_zero() -> None:
    section = server_section(parse_exposition(BEFORE), parse_exposition(AFTER), wall_s=10.0)
    assert section["rtt_out_samples"] == 0 and section["rtt_out_ms_mean"] is None
    assert section["quality_score_mean"] is None and sum(section["quality_samples"].values()) == 0
