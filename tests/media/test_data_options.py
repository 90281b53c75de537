"""Data-load options without a server: who reads slowly, what the report says of bursts, resends and slow
readers, how those figures merge across processes, and which option values are refused before a run."""

from __future__ import annotations

from typing import Any

import pytest

from lkswarm.config import RunConfig
from lkswarm.fields import FieldError
from lkswarm.media.data import DataTotals, is_slow_reader
from lkswarm.report.merge import _merged_data


def peer_data(received: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"sent": {"reliable": 0, "lossy": 0}, "bytes_sent": {}, "received": received, **extra}


def flow(sender: str, received: int, missing: int) -> dict[str, Any]:
    return dict(sender=sender, channel="_reliable", received=received, bytes=received * 10, expected=received + missing,
                missing=missing, duplicates=0, out_of_order=0, foreign=False)  # fmt: skip


SLOW = {"pauses": 3, "paused_ms": 6000, "held_datagrams": 200, "dropped_datagrams": 1, "max_held_bytes": 60_000}


def test_slow_readers_are_the_last_seats_of_a_room() -> None:
    assert [is_slow_reader(seat, 6, 2) for seat in range(6)] == [False] * 4 + [True] * 2
    assert not any(is_slow_reader(seat, 6, 0) for seat in range(6))


def test_the_section_reports_bursts_resends_and_slow_readers_apart() -> None:
    totals = DataTotals()
    publisher = peer_data([], sent={"reliable": 120, "lossy": 0}, send_burst=100, resumes=1, resent=4)
    totals.account("pub", "r", publisher)
    totals.account("fast", "r", peer_data([flow("pub", 120, 0)]))
    totals.account("slow", "r", peer_data([flow("pub", 110, 10)], slow_reader=SLOW))
    section = totals.report({"count": 0})
    assert section["burst_messages"] == 100
    assert section["resend"] == {"resumes": 1, "resent": 4, "resend_unavailable": 0}
    assert section["slow_readers"] == {"readers": 1, **SLOW, "messages_received": 110, "messages_missing": 10}
    # Every message the room missed is the slow reader's: the others lost nothing.
    assert section["messages_missing"] == section["slow_readers"]["messages_missing"] == 10
    assert [r["slow_reader"] for r in totals.rows] == [False, True]
    assert "slow_readers" not in DataTotals().report({"count": 0}), "only runs with slow readers say so"


def test_slow_reader_figures_merge_by_sum_and_their_peak_by_max() -> None:
    sections = []
    for held in (60_000, 90_000):
        totals = DataTotals()
        totals.account("slow", "r", peer_data([flow("pub", 10, 1)], slow_reader={**SLOW, "max_held_bytes": held}))
        sections.append(totals.report({"count": 0}))
    merged = _merged_data(sections, {"count": 0}, {"count": 0})
    slow = merged["slow_readers"]
    assert (slow["readers"], slow["pauses"], slow["held_datagrams"], slow["messages_missing"]) == (2, 6, 400, 2)
    assert slow["max_held_bytes"] == 90_000


def test_skipped_sends_other_packets_and_untracked_flows_reach_the_report_and_its_warnings() -> None:
    """Counted on the media thread (``peer_stats()["data"]``), these figures were never read into the report:
    a stalled media thread's skipped messages left no trace but a lower send rate."""
    totals = DataTotals()
    track = {"send_skipped": 7, "received": []}
    publisher = peer_data([], sent={"reliable": 90, "lossy": 0}, send_skipped=30, track=track)
    totals.account("pub", "r", publisher)
    totals.account("crowded", "r", peer_data([flow("pub", 90, 0)], other=4, senders_overflow=12))
    section = totals.report({"count": 0})
    assert (section["send_skipped"], section["other_packets"], section["flows_overflow"]) == (30, 4, 12)
    assert section["tracks"]["send_skipped"] == 7
    warnings = totals.warnings()
    assert any(w.startswith("30 data message(s) fell due while the media thread was stalled") for w in warnings)
    assert any(w.startswith("7 data-track frame(s) fell due while the media thread was stalled") for w in warnings)
    assert any(w.startswith("12 data message(s) came from (sender, channel) flows past the 4,096") for w in warnings)
    assert DataTotals().warnings() == [], "a clean run warns of nothing"
    merged = _merged_data([section, section], {"count": 0}, {"count": 0})
    assert (merged["send_skipped"], merged["other_packets"], merged["flows_overflow"]) == (60, 8, 24)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        (dict(data_burst=5), "data_publishers"),
        (dict(data_publishers=1, data_burst=5, data_burst_every_s=0), "greater than 0"),
        (dict(data_slow_readers=7), "slow data readers per room"),
        (dict(data_slow_readers=1, data_slow_pause_s=10, data_slow_every_s=10), "shorter than data_slow_every"),
        (dict(data_slow_readers=1, signal_only=True), "signal-only"),
    ],
)
def test_bad_option_values_are_refused_in_one_line(fields: dict[str, Any], words: str) -> None:
    with pytest.raises(FieldError, match=words):
        RunConfig(participants=6, **fields)


def test_durations_take_units() -> None:
    config = RunConfig(participants=6, data_publishers=1, data_burst=3, data_burst_every_s="2s",
                       data_slow_readers=1, data_slow_pause_s="500ms", data_slow_every_s="1m")  # fmt: skip
    assert (config.data_burst_every_s, config.data_slow_pause_s, config.data_slow_every_s) == (2.0, 0.5, 60.0)


def test_a_participant_with_two_peers_is_one_publisher_and_one_slow_reader() -> None:
    """A fresh join gives a participant a second peer; each peer counted as a publisher and a slow reader."""
    totals = DataTotals()
    for _ in range(2):  # the peer before the fresh join, and the one after
        totals.account("pub", "r", peer_data([], sent={"reliable": 10, "lossy": 0}))
        totals.account("slow", "r", peer_data([flow("pub", 10, 0)], slow_reader=SLOW))
    section = totals.report({"count": 0})
    assert section["publishers"] == 1 and section["slow_readers"]["readers"] == 1
    assert section["messages_sent"] == 20 and section["slow_readers"]["pauses"] == 6  # the figures still add
