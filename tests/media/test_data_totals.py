"""The report's ``data`` section from the hub's per-peer figures, and its merge across processes."""

from __future__ import annotations

import copy
from typing import Any

from lkswarm.media.data import DataTotals, destinations, is_data_publisher
from lkswarm.report.merge import _merged_data


def peer_data(sent: int = 0, received: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "sent": {"reliable": sent, "lossy": 0},
        "bytes_sent": {"reliable": sent * 500, "lossy": 0},
        "send_blocked": 0,
        "malformed": 0,
        "malformed_detail": "",
        "other": 0,
        "channels_open": ["_reliable", "_lossy"],
        "received": received or [],
        **extra,
    }


def row(sender: str, received: int, expected: int, **extra: Any) -> dict[str, Any]:
    base = {"sender": sender, "channel": "_reliable", "received": received, "bytes": received * 500}
    base.update(expected=expected, missing=expected - received, duplicates=0, out_of_order=0, foreign=False)
    base.update(extra)
    return base


def test_publishers_are_the_first_seats_and_destinations_are_the_first_others() -> None:
    assert [is_data_publisher(seat, 2) for seat in range(4)] == [True, True, False, False]
    view = {"p3": "PA_3", "p1": "PA_1", "p0": "PA_0", "p2": "PA_2"}
    assert destinations("all", "p1", view) == []
    assert destinations("2", "p1", view) == ["p0", "p2"]
    assert destinations("2", "p1", view, chosen=["p2"]) == ["p2", "p0"]  # kept, then filled in
    assert destinations("1", "p1", view, chosen=["p2"]) == ["p2"]


def test_a_section_counts_delivery_loss_duplicates_and_other_clients() -> None:
    totals = DataTotals(publish_channel="reliable")
    totals.account("p0", "room", peer_data(sent=100, received=[row("p1", 100, 100)]))
    received = [
        row("p0", 98, 100, duplicates=1, out_of_order=3),  # 97 unique of 100
        row("sdk", 7, 0, foreign=True),
    ]
    totals.account("p1", "room", peer_data(sent=100, received=received, send_blocked=2))
    totals.account("p2", "room", peer_data(malformed=1, malformed_detail="truncated varint"))
    section = totals.report({"count": 197, "p50": 3.0, "p99": 9.0})
    assert section["messages_sent"] == 200 and section["publishers"] == 2
    assert section["messages_received"] == 198 and section["messages_expected"] == 200
    assert section["delivery_ratio"] == round(197 / 200, 6)
    assert section["loss_ratio"] == round(2 / 200, 6) and section["duplicates"] == 1 and section["out_of_order"] == 3
    assert section["foreign_messages"] == 7 and section["send_blocked"] == 2
    assert section["malformed"] == 1 and section["malformed_examples"] == ["p2: truncated varint"]
    assert set(section["channels"]) == {"reliable"}
    assert section["latency_ms"]["p99"] == 9.0
    assert [(r["receiver"], r["sender"]) for r in totals.rows] == [("p0", "p1"), ("p1", "p0"), ("p1", "sdk")]
    assert totals.warnings() and "truncated varint" in totals.warnings()[0]


def test_merged_sections_add_counts_and_compute_ratios_again() -> None:
    totals = DataTotals()
    totals.account("p0", "room", peer_data(sent=10, received=[row("p1", 9, 10)]))
    one = totals.report({"count": 9})
    two = copy.deepcopy(one)
    two["messages_received"], two["channels"]["reliable"]["messages_received"] = 10, 10
    two["messages_missing"], two["channels"]["reliable"]["messages_missing"] = 0, 0
    merged = _merged_data([one, two], {"count": 19, "p99": 4.0})
    assert merged["messages_received"] == 19 and merged["messages_expected"] == 20
    assert merged["delivery_ratio"] == 0.95 and merged["channels"]["reliable"]["delivery_ratio"] == 0.95
    assert merged["loss_ratio"] == 0.05 and merged["latency_ms"] == {"count": 19, "p99": 4.0}


def test_a_room_that_got_only_other_kinds_of_data_packets_has_heard_data() -> None:
    """An SDK's text streams and RPCs, with no data publisher of ours: the report's data section was null, so
    data.other_packets (and a threshold on it) had nothing to read."""
    quiet = DataTotals()
    quiet.account("p0", "room", peer_data())
    assert not quiet.heard_anything()
    streams = DataTotals()
    streams.account("p0", "room", peer_data(other=30))
    assert streams.heard_anything() and streams.report({"count": 0})["other_packets"] == 30


def test_other_kinds_of_data_packets_are_counted_by_name_and_an_unanswered_rpc_is_a_warning() -> None:
    """other_packets mixed an SDK's stream packets with RPCs; RPCs are answered (`media/data/rpc.rs`), and one
    that could not be (no channel of ours to answer on) left its caller waiting: a warning."""
    totals = DataTotals()
    rpc = {"requests": 4, "answered": 1, "no_channel": 1, "over_limit": 2, "refused": 0, "unreadable": 0, "pending": 0}
    totals.account("p0", "room", peer_data(other=10, other_by_field={13: 2, 14: 4, 10: 4}, rpc=rpc))
    totals.account("p1", "room", peer_data(other=1, other_by_field={14: 1}))
    section = totals.report({"count": 0})
    assert section["other_packets"] == 11
    assert section["other_packets_by_kind"] == {"rpc_request": 4, "stream_chunk": 5, "stream_header": 2}
    assert section["rpc"] == {**rpc, "unanswered": 3}
    [warning] = [w for w in totals.warnings() if "RPC" in w]
    assert warning.startswith("3 of 4 RPC request(s) to our participants went unanswered")
    # each cause is named: a burst on /rtc/v1 is not told to move to /rtc/v1
    assert "1: on /rtc only data publishers" in warning
    assert "2: more than 512 KiB of answers waited at one participant" in warning
    answered = DataTotals()
    answered.account("p0", "room", peer_data(other=1, other_by_field={10: 1}, rpc={"requests": 1, "answered": 1}))
    assert answered.report({"count": 0})["rpc"]["unanswered"] == 0
    assert not [w for w in answered.warnings() if "RPC" in w]


def test_the_names_of_other_data_packet_kinds_are_the_schemas() -> None:
    from livekit.protocol import models

    from lkswarm.media.data import OTHER_VARIANTS

    by_number = {f.number: f.name for f in models.DataPacket.DESCRIPTOR.oneofs_by_name["value"].fields}
    assert {number: name for number, name in by_number.items() if name != "user"} == OTHER_VARIANTS
