"""LiveKit data tracks: who publishes, the signaling of one participant's tracks, and the report's ``data.tracks``.

Theory of operation
-------------------
A data track is a named, lossy stream of frames that travels over the ``_data_track`` SCTP channel
(unordered, no retransmission) rather than RTP. Packets and their accounting live on the media thread
(``rust/src/media/data/track.rs``, ``track_stats.rs``); this module carries the signaling.

One `DataTrackRole` per light-tier participant, a small state machine over its session's events::

    publisher (first ``data_tracks`` seats of a room):
      primary PC connected ──> publish_data_track_request{pub_handle 1, name "lkswarm-dt-<identity>"}
      publish_data_track_response ──> MediaHub.data_track_publish (frames from the channel's opening)
      request_response error ──> a publish failure, counted with the server's reason (no crash)
      end of the participant (run end, churn) ──> unpublish_data_track_request, before the leave
    everyone:
      a remote data track in a participant update ──> update_data_subscription{subscribe} (explicit,
        as the SDKs do: the server's auto-subscribe is opt-in)
      data_track_subscriber_handles (the full map) ──> MediaHub.data_track_handles, once per map

A fresh join (leave RECONNECT) is a new participant to the server: the role publishes and subscribes
again. The dual-PC publisher PeerConnection carries ``_data_track`` (its offer adds all three channels);
a single PeerConnection has it from the join offer. The server writes to subscribers on their primary
PeerConnection: the subscriber PC (dual) or the single one.

`DataTrackTotals` turns each peer's ``data["track"]`` figures into the report's ``data.tracks`` section
and ``data.csv`` rows (channel ``data_track``, one per (receiver, track)). The server drops data-track
packets once a subscriber's queue passes about 100 ms (``datachannel_data_track_target_latency``), so
loss on a loaded server is expected, not a generator fault.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lkswarm.signal.enums import RequestResponseReason
from lkswarm.signal.events import (
    DataTrackHandles,
    DataTrackPublished,
    RemoteDataTrackPublished,
    RequestFailed,
    SessionEvent,
)
from lkswarm.signal.requests import publish_data_track, unpublish_data_track, update_data_subscription

if TYPE_CHECKING:
    from lkswarm._core import MediaHub
    from lkswarm.engine.ports import RunContext
    from lkswarm.signal.session import SignalSession

PUB_HANDLE = 1  # each publisher has one track; handles are per publisher, so 1 is always free
SERVER_DROP_NOTE = (
    "livekit-server drops data-track packets once a subscriber's queue exceeds about 100 ms of its bitrate "
    "(datachannel_data_track_target_latency, 8 KiB floor): loss on a loaded server is expected"
)


def is_data_track_publisher(seat: int, data_tracks: int) -> bool:
    """The first ``data_tracks`` seats of each room publish one data track each."""
    return seat < data_tracks


def track_name(identity: str) -> str:
    """A publisher's track name (unique per participant, as the server requires)."""
    return f"lkswarm-dt-{identity}"


class DataTrackRole:
    """One participant's data-track signaling; see the module doc."""

    __slots__ = ("identity", "published_sid", "publishes", "requested", "run", "subscribed")

    def __init__(self, run: RunContext, identity: str, seat: int) -> None:
        self.run = run
        self.identity = identity
        self.publishes = is_data_track_publisher(seat, run.config.data_tracks)
        self.requested = False  # publish_data_track_request sent for this join
        self.published_sid = ""  # the server's DTR_ sid once it took our track
        self.subscribed: set[str] = set()  # remote data-track sids we asked for (this join)

    def new_join(self) -> None:
        """A fresh join: the server forgot our track and subscriptions."""
        self.requested = False
        self.published_sid = ""
        self.subscribed = set()

    def start(self, session: SignalSession) -> None:
        """The primary PeerConnection is connected: publish our track, subscribe to every known one."""
        if self.publishes and not self.requested:
            self.requested = True
            session.send_request(publish_data_track(PUB_HANDLE, track_name(self.identity)))
            self.run.counters["data_track_publish_requests"] += 1
        known = sorted(session.remote_data_tracks - self.subscribed)
        if known:
            self._subscribe(session, known)

    def _subscribe(self, session: SignalSession, track_sids: list[str]) -> None:
        self.subscribed.update(track_sids)
        session.send_request(update_data_subscription(track_sids))
        self.run.counters["data_track_subscriptions"] += len(track_sids)

    def on_event(self, event: SessionEvent, session: SignalSession, hub: MediaHub, peer: int, started: bool) -> None:
        """A data-track session event; ``started``: the primary PeerConnection connected (`start` ran)."""
        config = self.run.config
        if isinstance(event, DataTrackPublished):
            if event.pub_handle == PUB_HANDLE and self.publishes:
                self.published_sid = event.track_sid
                self.run.counters["data_tracks_published"] += 1
                hub.data_track_publish(peer, PUB_HANDLE, config.data_track_rate, config.data_track_size)
        elif isinstance(event, RequestFailed):
            if event.request == "publish_data_track":
                reason = RequestResponseReason.name_of(event.reason)
                self.run.counters[f"data_track_publish_failed:{reason}"] += 1
                self.run.counters["data_track_publish_failures"] += 1
        elif isinstance(event, RemoteDataTrackPublished):
            if started and event.track_sid not in self.subscribed:
                self._subscribe(session, [event.track_sid])
        elif isinstance(event, DataTrackHandles):
            hub.data_track_handles(peer, [(handle, identity, sid) for handle, identity, _, sid in event.handles])

    def before_leave(self, session: SignalSession, hub: MediaHub | None, peer: int | None) -> None:
        """The participant leaves: stop the frames and unpublish the track."""
        if hub is not None and peer is not None and self.published_sid:
            hub.data_track_stop(peer)
        if self.published_sid:
            session.send_request(unpublish_data_track(PUB_HANDLE))
            self.published_sid = ""


@dataclass(slots=True)
class DataTrackTotals:
    """The run's data-track figures, gathered from every live peer at the end."""

    tracks_published: int = 0
    frames_sent: int = 0
    bytes_sent: int = 0
    send_blocked: int = 0
    send_skipped: int = 0
    frames_received: int = 0
    frames_expected: int = 0
    lost: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    bytes_received: int = 0
    unknown_handle: int = 0
    foreign_frames: int = 0  # frames without an lkswarm user timestamp (an SDK's): counted, no latency
    malformed: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    subscriptions: int = 0  # (receiver, track) pairs that received anything

    def account(self, identity: str, room: str, track: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        """Adds one peer's ``data["track"]`` figures; appends its ``data.csv`` rows to ``rows``."""
        self.frames_sent += track.get("frames_sent", 0)
        self.bytes_sent += track.get("bytes_sent", 0)
        self.send_blocked += track.get("send_blocked", 0)
        self.send_skipped += track.get("send_skipped", 0)
        self.unknown_handle += track.get("unknown_handle", 0)
        self.malformed += track.get("malformed", 0)
        detail = track.get("malformed_detail") or ""
        if detail and len(self.malformed_examples) < 5:
            self.malformed_examples.append(f"{identity}: {detail}")
        for flow in track.get("received") or []:
            if not flow["track_sid"]:
                continue  # a handle no map named: in unknown_handle
            self.subscriptions += 1
            self.frames_received += flow["received"]
            self.frames_expected += flow["expected"]
            self.lost += flow["missing"]
            self.duplicates += flow["duplicates"]
            self.out_of_order += flow["out_of_order"]
            self.bytes_received += flow["bytes"]
            if flow["foreign"]:
                self.foreign_frames += flow["received"]
            rows.append(
                {
                    "receiver": identity,
                    "room": room,
                    "sender": flow["publisher"],
                    "channel": "data_track",
                    "track_sid": flow["track_sid"],
                    "received": flow["received"],
                    "bytes": flow["bytes"],
                    "duplicates": flow["duplicates"],
                    "out_of_order": flow["out_of_order"],
                    "missing": flow["missing"],
                    "expected": flow["expected"],
                    "foreign": flow["foreign"],
                }
            )

    def report(self, counters: dict[str, int], latency: dict[str, Any]) -> dict[str, Any]:
        """The report's ``data.tracks``; ``counters`` are the run's (publish outcomes), ``latency``
        ``latency_ms.data_track_e2e``'s summary."""
        failures = {
            key.split(":", 1)[1]: value
            for key, value in counters.items()
            if key.startswith("data_track_publish_failed:") and value
        }
        unique = self.frames_received - self.duplicates
        expected = self.frames_expected
        return {
            "tracks_published": counters.get("data_tracks_published", 0),
            "publish_failures": sum(failures.values()),
            "publish_failure_reasons": failures,
            "frames_sent": self.frames_sent,
            "bytes_sent": self.bytes_sent,
            "send_blocked": self.send_blocked,
            "send_skipped": self.send_skipped,
            "frames_received": self.frames_received,
            "frames_expected": expected,
            "lost": self.lost,
            "loss_ratio": round(self.lost / expected, 6) if expected else None,  # None: nothing expected
            "delivery_ratio": round(min(1.0, unique / expected), 6) if expected else None,
            "out_of_order": self.out_of_order,
            "duplicates": self.duplicates,
            "bytes_received": self.bytes_received,
            "unknown_handle": self.unknown_handle,
            "foreign_frames": self.foreign_frames,
            "malformed": self.malformed,
            "malformed_examples": self.malformed_examples,
            "subscriptions": self.subscriptions,
            "latency_ms": latency,
            "note": SERVER_DROP_NOTE,
        }

    def used(self) -> bool:
        return bool(
            self.frames_sent or self.send_skipped or self.frames_received or self.unknown_handle or self.malformed
        )


__all__ = [
    "PUB_HANDLE",
    "SERVER_DROP_NOTE",
    "DataTrackRole",
    "DataTrackTotals",
    "is_data_track_publisher",
    "track_name",
]
