"""The light tier's figures of the whole run: the report's ``media`` section."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from lkswarm import _core
from lkswarm.media.data import DataTotals
from lkswarm.metrics import new_histogram, summarize

#: Why str0m's receive path consumed an RTP datagram without delivering media (``Rtc::rtp_receive_drops``):
#: one list, kept in Rust (``peer/own_srtp.rs``).
STR0M_DROP_REASONS = _core.STR0M_DROP_REASONS


@dataclass(slots=True)
class SrtpReceiveTotals:
    """Which path received the subscribers' SRTP: our own (a steady stream's packets after its first,
    ``peer/own_srtp.rs``) or str0m's (first packets, RTX, RTCP-era corner cases, or a peer whose DTLS
    negotiated no AES-GCM profile), and what the own path dropped."""

    own_packets: int = 0
    replayed: int = 0  # replays, and duplicates str0m's register already had
    # Older than the 128-packet replay window: dropped unopened, as libsrtp drops them (a packet that late
    # is the network's reordering, not an attack; counted apart so that a report tells the two apart).
    too_old: int = 0
    auth_failed: int = 0
    # Late packets older than their stream's first: str0m's receive register refuses them (it starts
    # at the first packet), so they are not counted as received on either path.
    before_first: int = 0
    # Own-path packets whose receipt str0m refused when it was handed over (deferred; the stream
    # went away meanwhile): counted here, missing from str0m's receiver reports.
    receipts_refused: int = 0
    peers_off: dict[str, int] = field(default_factory=dict)  # why a peer used str0m only -> peers
    # What str0m's path consumed without delivering media, by reason (its duplicates, failed
    # authentication, unknown streams or payload types, malformed packets, RTX padding): the packets the
    # own path left to str0m are accounted as the own path's are.
    str0m_dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STR0M_DROP_REASONS, 0))

    def account(self, stats: dict[str, Any]) -> None:
        self.own_packets += stats.get("srtp_own_packets", 0)
        self.replayed += stats.get("srtp_own_replayed", 0)
        self.too_old += stats.get("srtp_own_too_old", 0)
        self.auth_failed += stats.get("srtp_own_auth_failed", 0)
        self.before_first += stats.get("srtp_own_before_first", 0)
        self.receipts_refused += stats.get("srtp_receipts_refused", 0)
        reason = stats.get("srtp_own_off")
        if reason:
            self.peers_off[reason] = self.peers_off.get(reason, 0) + 1
        for drop, count in (stats.get("srtp_str0m_dropped") or {}).items():
            self.str0m_dropped[drop] = self.str0m_dropped.get(drop, 0) + count

    def report(self, packets_received: int) -> dict[str, Any]:
        return {
            "own_packets": self.own_packets,
            "str0m_packets": max(0, packets_received - self.own_packets),
            "replayed": self.replayed,
            "too_old": self.too_old,
            "auth_failed": self.auth_failed,
            "before_first": self.before_first,
            "receipts_refused": self.receipts_refused,
            "peers_off": dict(sorted(self.peers_off.items())),
            "str0m_dropped": dict(self.str0m_dropped),
        }


@dataclass(slots=True)
class MediaTotals:
    """Media figures of the whole run, gathered from every peer at the end."""

    packets_received: int = 0
    bytes_received: int = 0
    packets_expected: int = 0
    packets_lost: int = 0
    datagrams_sent: int = 0
    bytes_sent: int = 0
    frames_sent: int = 0
    frames_skipped: int = 0  # publishers' frames dropped because the media thread fell behind
    frames_muted: int = 0  # publishers' frames not sent because the server muted or unpublished their track
    foreign_datagrams: int = 0
    datagrams_truncated: int = 0
    keyframe_requests: int = 0
    ice_restarts: int = 0  # begun after resumes: the server's restart offer (dual PC) or ours (single PC)
    # RTP packets of SSRCs first seen after a peer had accounted 1,024 streams (a server that keeps changing
    # SSRCs): counted, in no track's figures (``peer/io.rs`` MAX_RX_STREAMS).
    rtp_past_stream_cap: int = 0
    tracks_received: int = 0
    tracks_missing: int = 0
    tracks_by_codec: dict[str, int] = field(default_factory=dict)  # received tracks per mime type
    # (subscriber, track) pairs counted in tracks_received: a fresh join's second peer receives the same tracks
    received_pairs: set[tuple[str, str]] = field(default_factory=set)
    jitter_ms: HdrHistogram = field(default_factory=new_histogram)
    # latency_ms.track_subscribed split by the track's kind: a video track waits for a keyframe, whose
    # requests the server throttles (README, "Things the server does"), so the two have different modes.
    track_subscribed_ms: dict[str, HdrHistogram] = field(default_factory=dict)
    track_rows: list[dict[str, Any]] = field(default_factory=list)
    rows_not_listed: int = 0  # tracks.csv and data.csv rows of closed peers past tier.MAX_CLOSED_PEER_ROWS
    missing_examples: list[dict[str, str]] = field(default_factory=list)  # the first few, to act on
    cpu_s: float = 0.0  # the media thread's CPU is part of the generator's (the TierTotals port)
    hub_wakeups: int = 0  # media thread loop iterations and peer timeouts served (where its CPU goes)
    hub_timeouts: int = 0
    # The media thread's I/O backend ("io_uring" or "epoll"), why io_uring was refused if it was, and the
    # system calls it made (waits, naps, receives, sends): over the datagrams it read, the backend's cost.
    hub_io: str = ""
    hub_io_fallback: str | None = None
    hub_syscalls: int = 0
    hub_datagrams_received: int = 0
    hub_thread_cpu_s: float | None = None  # the media thread's CPU-s, of ``cpu_s``'s whole process (None: no clock)
    # How late the media thread served its deadlines (µs values); reported under generator.media_lag_ms.
    timer_lag: HdrHistogram = field(default_factory=new_histogram)
    data: DataTotals = field(default_factory=DataTotals)  # the report's ``data`` section
    srtp_receive: SrtpReceiveTotals = field(default_factory=SrtpReceiveTotals)

    def report(self) -> dict[str, Any]:
        expected = self.packets_expected
        return {
            "packets_sent": self.datagrams_sent,
            "bytes_sent": self.bytes_sent,
            "frames_sent": self.frames_sent,
            "frames_skipped": self.frames_skipped,
            "frames_muted": self.frames_muted,
            "packets_received": self.packets_received,
            "bytes_received": self.bytes_received,
            "packets_expected": expected,
            "packets_lost": self.packets_lost,
            "loss_ratio": round(self.packets_lost / expected, 6) if expected else None,  # None: nothing expected
            "jitter_ms": summarize(self.jitter_ms),
            "track_subscribed_ms": {kind: summarize(h) for kind, h in sorted(self.track_subscribed_ms.items())},
            "tracks_received": self.tracks_received,
            "tracks_missing": self.tracks_missing,
            "tracks_by_codec": dict(sorted(self.tracks_by_codec.items())),
            "missing_examples": self.missing_examples,
            "foreign_datagrams": self.foreign_datagrams,
            "datagrams_truncated": self.datagrams_truncated,
            "keyframe_requests": self.keyframe_requests,
            "ice_restarts": self.ice_restarts,
            "rtp_past_stream_cap": self.rtp_past_stream_cap,
            "rows_not_listed": self.all_rows_not_listed,
            "hub": self.hub_report(),
            "srtp_receive": self.srtp_receive.report(self.packets_received),
        }

    @property
    def all_rows_not_listed(self) -> int:
        """tracks.csv and data.csv rows of closed peers past the budget: counted in the totals, not listed."""
        return self.rows_not_listed + self.data.rows_not_listed

    def hub_report(self) -> dict[str, Any]:
        hub: dict[str, Any] = {"wakeups": self.hub_wakeups, "timeouts": self.hub_timeouts}
        if self.hub_io:
            hub["io"] = self.hub_io
            if self.hub_io_fallback:
                hub["io_fallback"] = self.hub_io_fallback
            hub["syscalls"] = self.hub_syscalls
            received = self.hub_datagrams_received
            # The count beside the ratio, so that a merge of several workers divides their sums.
            hub["datagrams_received"] = received
            hub["syscalls_per_datagram"] = round(self.hub_syscalls / received, 4) if received else 0.0
        if self.hub_thread_cpu_s is not None:
            # The media thread's share of the generator's CPU; the rest is Python's (and signaling's).
            hub["thread_cpu_s"] = round(self.hub_thread_cpu_s, 3)
        return hub

    def warnings(self) -> list[str]:
        out: list[str] = self.data.warnings()
        if self.tracks_missing:
            examples = ", ".join(
                f"{row['subscriber']} had nothing of {row['publisher']}'s {row['track_sid']}"
                for row in self.missing_examples
            )
            out.append(
                f"{self.tracks_missing} (subscriber, track) pair(s) received no packets although the track was "
                f"published at the end, e.g. {examples}; see media.missing_examples"
            )
        if self.rtp_past_stream_cap:
            out.append(
                f"{self.rtp_past_stream_cap} RTP packet(s) came on SSRCs first seen after a subscriber had already "
                "accounted 1,024 streams (the server kept changing SSRCs): counted in media.rtp_past_stream_cap, "
                "in no track's figures"
            )
        if self.datagrams_truncated:
            out.append(
                f"{self.datagrams_truncated} datagram(s) were longer than the media thread's ~2 KB receive buffer "
                "and were dropped, counted in no other figure (media.datagrams_truncated): the server sent "
                "datagrams larger than a WebRTC peer's MTU"
            )
        if self.frames_skipped:
            share = self.frames_skipped / max(1, self.frames_skipped + self.frames_sent)
            out.append(
                f"publishers skipped {self.frames_skipped} frame(s) ({share:.2%} of those due) because this "
                "generator's media thread fell more than 100 ms behind: the server was offered less media than "
                "planned. Spread the load over more generator processes."
            )
        return out
