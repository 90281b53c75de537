"""Data messages over LiveKit's data channels: who publishes, and the report's ``data`` section.

Theory of operation
-------------------
Sending and receiving happen on the media thread (the Rust hub), not here: a data publisher's peer
is told once to write a `DataPacket` every ``1/data_rate`` s on ``_reliable`` or ``_lossy``
(`MediaHub.data_publish`), from when that channel opens. Each payload starts with our stamp (the
magic ``LKSW``, the send time in µs since the epoch and a per-sender counter), so every receiver
accounts, per (sender identity, channel), what arrived, what was duplicated, reordered or missing,
and the end-to-end latency, into the hub's histogram. Messages without the stamp (an SDK's) are
counted by sender as ``foreign``: received, with no sequence or latency accounting.

Options on top of the rate: a publisher's bursts (``--data-burst`` messages back to back every
``--data-burst-every``); after a signal resume, the reliable messages the server lacks (past its
``last_message_seq``) are written again from the peer's bounded buffer; and slow readers
(``--data-slow-readers``, the last seats of a room) stop draining their data channels for a while, on
the media thread (`lkswarm._core`'s ``data_slow_reader``): their latency is ``data_e2e_slow_readers``,
kept apart from everyone else's ``data_e2e``, which is what a stalled reader does to the room.

This module only decides who publishes what and who reads slowly, and turns each peer's figures into the
report's ``data`` section and ``data.csv`` rows (`DataTotals`).

Receivers know ``expected`` only from the counters they saw: from the first to the highest one. A
loss after a receiver's last message, or before its first, is not counted.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lkswarm.media.data_track import DataTrackTotals

CHANNELS = ("reliable", "lossy")
# DataPacket's other `value` variants by field number (livekit-protocol's models.proto; checked in the tests):
# what an SDK sends besides user packets, counted by name in the report's ``other_packets_by_kind``.
OTHER_VARIANTS = {
    3: "speaker",
    6: "sip_dtmf",
    7: "transcription",
    8: "metrics",
    9: "chat_message",
    10: "rpc_request",
    11: "rpc_ack",
    12: "rpc_response",
    13: "stream_header",
    14: "stream_chunk",
    15: "stream_trailer",
    18: "encrypted_packet",
}
RESEND_KEYS = ("resumes", "resent", "resend_unavailable")
# A peer's data["rpc"] (`_core.MediaHub.peer_stats`): each request ends in exactly one of the keys after the first
# (``pending``: its answers not yet written when the figures were read).
RPC_KEYS = ("requests", "answered", "no_channel", "over_limit", "refused", "unreadable", "pending")
# Why a request went unanswered, for the warning (its callers waited out their timeouts).
RPC_UNANSWERED_WHY = {
    "no_channel": "on /rtc only data publishers have channels of their own to answer on (/rtc/v1 gives everyone "
    "one), and none opened within 3 s",
    "over_limit": "more than 512 KiB of answers waited at one participant at once (some 30 echoes of 15 KB)",
    "refused": "a write failed, an answer was over 64 KiB (an id of tens of KB), or the reliable channel's "
    "buffer had no room for 3 s",
    "unreadable": "the request could not be read (no id), or its caller is hidden (no identity to answer)",
}
# A slow reader's figures (`MediaHub.peer_stats()["data"]["slow_reader"]`), after the count of readers.
SLOW_READER_KEYS = ("readers", "pauses", "paused_ms", "held_datagrams", "dropped_datagrams", "max_held_bytes")
# What the slow readers received of the data messages (their rows' sums), to tell their loss from the others'.
SLOW_READER_RECEIVE_KEYS = ("messages_received", "messages_missing")


def is_slow_reader(seat: int, participants: int, slow_readers: int) -> bool:
    """The last ``slow_readers`` seats of each room are slow data readers (`--data-slow-readers`)."""
    return slow_readers > 0 and seat >= participants - slow_readers


def is_data_publisher(seat: int, data_publishers: int) -> bool:
    """The first ``data_publishers`` seats of each room publish data (media publishers may too)."""
    return seat < data_publishers


def destinations(data_to: str, own_identity: str, room_view: dict[str, str], chosen: Sequence[str] = ()) -> list[str]:
    """``all``: none named (the server sends to everyone else); ``N``: ``chosen`` (those named so far), then the
    first other identities not among them, sorted, up to N: a publisher that started in a room still filling
    adds destinations as others join, and keeps those it has."""
    if data_to == "all":
        return []
    wanted = int(data_to)
    others = sorted(identity for identity in room_view if identity != own_identity and identity not in chosen)
    return [*chosen, *others[: max(0, wanted - len(chosen))]][:wanted]


@dataclass(slots=True)
class ChannelFigures:
    """One channel's totals over every (receiver, sender) pair."""

    messages_sent: int = 0
    bytes_sent: int = 0
    send_blocked: int = 0
    messages_received: int = 0
    messages_expected: int = 0
    messages_missing: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    bytes_received: int = 0

    def report(self) -> dict[str, Any]:
        unique = self.messages_received - self.duplicates
        expected = self.messages_expected
        return {
            "messages_sent": self.messages_sent,
            "messages_received": self.messages_received,
            "messages_expected": expected,
            "messages_missing": self.messages_missing,
            "delivery_ratio": round(min(1.0, unique / expected), 6) if expected else None,
            "loss_ratio": round(self.messages_missing / expected, 6) if expected else None,  # None: nothing expected
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "send_blocked": self.send_blocked,
        }


@dataclass(slots=True)
class DataTotals:
    """The run's data figures, gathered from every live peer at the end."""

    publish_channel: str = "reliable"  # what this run's publishers send on (--data-channel)
    channels: dict[str, ChannelFigures] = field(default_factory=lambda: {c: ChannelFigures() for c in CHANNELS})
    foreign_messages: int = 0  # received without our stamp (the SDK's): counted by sender, no latency
    foreign_bytes: int = 0
    malformed: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # data.csv: one per (receiver, sender, channel)
    rows_not_listed: int = 0  # of closed peers past the row budget (media.tier.MAX_CLOSED_PEER_ROWS): counted only
    # Who was counted: a participant's fresh join (leave RECONNECT, a rejoin storm) gives it a second peer,
    # whose figures add up but which is not a second publisher or slow reader.
    publisher_ids: set[str] = field(default_factory=set)
    _slow_reader_ids: set[str] = field(default_factory=set)
    tracks: DataTrackTotals = field(default_factory=DataTrackTotals)  # data tracks (lkswarm.media.data_track)
    burst_messages: int = 0  # sent in bursts (--data-burst), among messages_sent
    # Due while the media thread was stalled past its catch-up bound, and skipped rather than sent in a burst
    # (``media/data/sender.rs``): the publishers sent fewer messages than their rate asked for.
    send_skipped: int = 0
    # DataPackets of another kind than user (chat, RPC, transcription, ...): not messages of ours or an SDK's.
    other_packets: int = 0
    other_by_kind: collections.Counter[str] = field(default_factory=collections.Counter)  # by variant name
    # RPC calls to our participants (``media/data/rpc.rs``): each acked and refused as "method not supported"
    # (1400), as by an SDK participant without handlers, or with ``--rpc-echo`` answered with its payload; or
    # unanswered for one of RPC_UNANSWERED_WHY.
    rpc: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RPC_KEYS, 0))
    # Messages of (sender, channel) flows past the 4,096 a receiver tracks: in no flow's figures, so not in
    # messages_received either.
    flows_overflow: int = 0
    resend: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESEND_KEYS, 0))
    slow_readers: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(SLOW_READER_KEYS + SLOW_READER_RECEIVE_KEYS, 0)
    )

    def heard_anything(self) -> bool:
        """Whether any data came in: messages, or only packets of other kinds (an SDK's text streams, RPCs) or
        unreadable ones, which the report must still show though no publisher of ours sent."""
        return bool(self.rows or self.rows_not_listed or self.other_packets or self.malformed or self.flows_overflow)

    def account(self, identity: str, room: str, data: dict[str, Any], *, keep_rows: bool = True) -> None:
        """Adds one peer's ``data`` figures (`MediaHub.peer_stats`); its ``data.csv`` rows too unless ``keep_rows``
        is false (then they are counted in ``rows_not_listed``)."""
        rows: list[dict[str, Any]] = self.rows if keep_rows else []
        if "track" in data:
            self.tracks.account(identity, room, data["track"], rows)
        for channel, count in (data.get("sent") or {}).items():
            figures = self.channels.setdefault(channel, ChannelFigures())
            figures.messages_sent += count
            figures.bytes_sent += (data.get("bytes_sent") or {}).get(channel, 0)
        if any((data.get("sent") or {}).values()):
            self.publisher_ids.add(identity)
        self.burst_messages += data.get("send_burst", 0)
        self.send_skipped += data.get("send_skipped", 0)
        self.other_packets += data.get("other", 0)
        for number, count in (data.get("other_by_field") or {}).items():
            self.other_by_kind[OTHER_VARIANTS.get(number, f"field_{number}")] += count
        self.flows_overflow += data.get("senders_overflow", 0)
        for key, count in (data.get("rpc") or {}).items():
            if key in self.rpc:
                self.rpc[key] += count
        for key in RESEND_KEYS:
            self.resend[key] += data.get(key, 0)
        slow = data.get("slow_reader")
        if slow is not None:
            if identity not in self._slow_reader_ids:
                self._slow_reader_ids.add(identity)
                self.slow_readers["readers"] += 1
            for key in SLOW_READER_KEYS[1:-1]:
                self.slow_readers[key] += slow.get(key, 0)
            self.slow_readers["max_held_bytes"] = max(
                self.slow_readers["max_held_bytes"], slow.get("max_held_bytes", 0)
            )
        # A run publishes on one channel, so a peer's blocked writes are that channel's.
        self.channels.setdefault(self.publish_channel, ChannelFigures()).send_blocked += data.get("send_blocked", 0)
        self.malformed += data.get("malformed", 0)
        detail = data.get("malformed_detail") or ""
        if detail and len(self.malformed_examples) < 5:
            self.malformed_examples.append(f"{identity}: {detail}")
        for received in data.get("received") or []:
            # The hub names a receiving channel by its label: "_reliable" is what publishers call "reliable".
            label = received["channel"]
            row = {**received, "channel": label[1:] if label in ("_reliable", "_lossy") else label}
            rows.append({"receiver": identity, "room": room, **row, "slow_reader": slow is not None})
            if row.get("foreign"):
                self.foreign_messages += row["received"]
                self.foreign_bytes += row["bytes"]
                continue
            if slow is not None:
                self.slow_readers["messages_received"] += row["received"]
                self.slow_readers["messages_missing"] += row["missing"]
            figures = self.channels.setdefault(row["channel"], ChannelFigures())
            figures.messages_received += row["received"]
            figures.messages_expected += row["expected"]
            figures.messages_missing += row["missing"]
            figures.duplicates += row["duplicates"]
            figures.out_of_order += row["out_of_order"]
            figures.bytes_received += row["bytes"]
        if not keep_rows:
            self.rows_not_listed += len(rows)

    def report(
        self,
        latency: dict[str, Any],
        track_latency: dict[str, Any] | None = None,
        counters: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        """The report's ``data`` section; ``latency`` is ``latency_ms.data_e2e``'s summary, ``track_latency``
        ``data_track_e2e``'s; ``counters`` (the run's) carry the data-track publish outcomes."""
        by_channel = {name: figures.report() for name, figures in self.channels.items() if _used(figures)}
        whole = ChannelFigures()
        for figures in self.channels.values():
            for name in whole.__slots__:
                setattr(whole, name, getattr(whole, name) + getattr(figures, name))
        return {
            **whole.report(),
            "publishers": len(self.publisher_ids),
            "foreign_messages": self.foreign_messages,
            "foreign_bytes": self.foreign_bytes,
            "malformed": self.malformed,
            "malformed_examples": self.malformed_examples,
            "latency_ms": latency,
            "channels": by_channel,
            "burst_messages": self.burst_messages,
            "send_skipped": self.send_skipped,
            "other_packets": self.other_packets,
            "other_packets_by_kind": dict(sorted(self.other_by_kind.items())),
            "rpc": {**self.rpc, "unanswered": sum(self.rpc[key] for key in RPC_UNANSWERED_WHY)},
            "flows_overflow": self.flows_overflow,
            # After a resume: reliable messages written again past the server's last sequence (and those no
            # longer kept, which are lost).
            "resend": dict(self.resend),
            **({"slow_readers": dict(self.slow_readers)} if self.slow_readers["readers"] else {}),
            **(
                {"tracks": self.tracks.report(counters or {}, track_latency or {})}
                if self.tracks.used() or (counters or {}).get("data_track_publish_requests")
                else {}
            ),
        }

    def warnings(self) -> list[str]:
        out = []
        if self.send_skipped:
            out.append(
                f"{self.send_skipped} data message(s) fell due while the media thread was stalled and were skipped, "
                "not sent: the publishers sent fewer messages than --data-rate asked for"
            )
        if self.tracks.send_skipped:
            out.append(
                f"{self.tracks.send_skipped} data-track frame(s) fell due while the media thread was stalled and "
                "were skipped, not sent"
            )
        if unanswered := {key: self.rpc[key] for key in RPC_UNANSWERED_WHY if self.rpc[key]}:
            why = "; ".join(f"{count}: {RPC_UNANSWERED_WHY[key]}" for key, count in unanswered.items())
            out.append(
                f"{sum(unanswered.values())} of {self.rpc['requests']} RPC request(s) to our participants went "
                f"unanswered (their callers waited out their timeouts): {why}"
            )
        if self.flows_overflow:
            out.append(
                f"{self.flows_overflow} data message(s) came from (sender, channel) flows past the 4,096 a receiver "
                "tracks: counted here only, not in messages_received"
            )
        if self.tracks.malformed:
            out.append(
                f"{self.tracks.malformed} data-track packet(s) could not be read, e.g. "
                + "; ".join(self.tracks.malformed_examples[:2])
            )
        if self.malformed:
            out.append(
                f"{self.malformed} data message(s) could not be read as a DataPacket, e.g. "
                + "; ".join(self.malformed_examples[:2])
            )
        return out


def _used(figures: ChannelFigures) -> bool:
    return bool(figures.messages_sent or figures.messages_received or figures.send_blocked)


__all__ = ["CHANNELS", "ChannelFigures", "DataTotals", "destinations", "is_data_publisher", "is_slow_reader"]
