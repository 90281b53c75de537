"""The sans-I/O signaling session of one participant.

Theory of operation
-------------------
A `SignalSession` is fed whole WebSocket messages (`receive_frame`) and the
current time; it never touches a socket or a clock. It answers with frames
to send (`frames_to_send`), typed events (`events_received`) and the time it
next wants to be woken (`get_timer` / `handle_timer`).

States::

    CONNECTING --join--> JOINED --leave(DISCONNECT) / send_leave / failure--> ENDED
        ^                  |
        |                  +--connection lost, resume--> RESUMING --reconnect--> JOINED
        +--(driver starts a fresh join for leave(RECONNECT))

Timers: in CONNECTING, the join deadline; in JOINED, the next `ping_req`
(every ``ping_interval`` of the JoinResponse) and the silence deadline (no
frame for ``ping_timeout`` ends the session with reason ``ping_timeout``).

Room view: the other participants by identity, each with its current sid and
tracks, from the JoinResponse and each ParticipantUpdate. A new sid under a
known identity replaces the old participant (a fresh join), as in the SDKs.

Frames: binary protobuf by default; with ``json_mode`` requests go out as
text frames (livekit-server then answers in JSON). The first server frame is
always binary. Binary frames are classified with `peek_response`, so variants
the session ignores are never decoded. Every SignalResponse variant is either
handled here or listed in `IGNORED_RESPONSES` with the reason.
"""

from __future__ import annotations

import collections
from enum import Enum
from sys import intern
from typing import Any

from lkswarm.errors import CodecError
from lkswarm.signal import codec
from lkswarm.signal.enums import DisconnectReason, LeaveAction, ParticipantState
from lkswarm.signal.events import (
    AnswerReceived,
    DataTrackHandles,
    DataTrackPublished,
    DataTrackUnpublished,
    Failed,
    Joined,
    LeaveRequested,
    MediaSectionsRequired,
    OfferReceived,
    ParticipantsChanged,
    PongReceived,
    QualityReported,
    RemoteDataTrackPublished,
    RemoteTrackPublished,
    RequestFailed,
    RoomMoved,
    SessionEvent,
    SubscriptionFailed,
    TokenRefreshed,
    TrackMuteRequested,
    TrackPublished,
    TrackSubscribed,
    TrackUnpublished,
    TrickleReceived,
)

HANDLED_RESPONSES = frozenset(
    {
        "join",
        "reconnect",
        "answer",
        "offer",
        "trickle",
        "update",
        "track_published",
        "track_unpublished",
        "mute",
        "track_subscribed",
        "leave",
        "media_sections_requirement",
        "refresh_token",
        "pong_resp",
        "room_moved",
        "request_response",
        "subscription_response",
        "publish_data_track_response",
        "unpublish_data_track_response",
        "data_track_subscriber_handles",
        "connection_quality",
    }
)

IGNORED_RESPONSES: dict[str, str] = {
    "speakers_changed": "speaker activity is driven by the scenario, not read back",
    "room_update": "room membership is tracked from ParticipantUpdate, which carries identities",
    "stream_state_update": "paused/active stream state is visible in the media counters",
    "subscribed_quality_update": "synthetic publishers keep sending every layer they announced",
    "subscription_permission_update": "scenarios do not restrict subscription permissions",
    "pong": "the legacy ping is never sent; ping_req/pong_resp measure RTT",
    "subscribed_audio_codec_update": "synthetic audio publishes one codec",
    "store_data_blob_response": "data blobs are not exercised",
    "get_data_blob_response": "data blobs are not exercised",
}

DEFAULT_PING_INTERVAL_S = 5.0
DEFAULT_PING_TIMEOUT_S = 15.0


class SessionState(Enum):
    CONNECTING = "connecting"
    JOINED = "joined"
    RESUMING = "resuming"
    ENDED = "ended"


class SignalSession:
    """Signaling state of one participant, without I/O."""

    __slots__ = (
        "_deadline",
        "_events",
        "_last_received_at",
        "_next_ping_at",
        "_out",
        "_pending_pings",
        "end_reason",
        "identity",
        "join_timeout_s",
        "json_mode",
        "last_rtt_ms",
        "messages_received",
        "muted_remote_tracks",
        "others",
        "participant_sid",
        "ping_interval_s",
        "ping_timeout_s",
        "remote_data_tracks",
        "remote_tracks",
        "room_name",
        "state",
        "token",
        "tracks_by_participant",
    )

    def __init__(self, identity: str, token: str, *, json_mode: bool = False, join_timeout_s: float = 15.0) -> None:
        self.identity = identity  # our identity (the token's sub)
        self.token = token  # current access token; refresh_token and room_moved replace it
        self.json_mode = json_mode  # send text (protojson) frames instead of binary
        self.join_timeout_s = join_timeout_s  # how long CONNECTING/RESUMING may last
        self.state = SessionState.CONNECTING
        self.participant_sid = ""
        self.room_name = ""
        self.ping_interval_s = DEFAULT_PING_INTERVAL_S
        self.ping_timeout_s = DEFAULT_PING_TIMEOUT_S
        self.last_rtt_ms = 0.0  # reported to the server in each ping_req
        self.others: dict[str, str] = {}  # identity -> current sid of each other participant we see
        self.remote_tracks: set[str] = set()  # track sids announced by others (ever)
        # Of those, the ones muted by their publisher now (a mic muted at join): they send nothing, so a receiver
        # that had nothing of them is not missing them.
        self.muted_remote_tracks: set[str] = set()
        self.remote_data_tracks: set[str] = set()  # data-track sids announced by others (ever)
        self.tracks_by_participant: dict[str, frozenset[str]] = {}  # sid -> its current track sids (publishers only)
        self.messages_received: collections.Counter[str] = collections.Counter()
        self.end_reason = ""  # why the session ended (outcome detail)
        self._deadline: float | None = None  # join or resume deadline
        self._next_ping_at: float | None = None
        self._last_received_at = 0.0
        self._pending_pings: dict[int, float] = {}  # ping timestamp (ms) -> send time (s)
        self._out: list[bytes | str] = []
        self._events: list[SessionEvent] = []

    # -- driver inputs ---------------------------------------------------------

    def start(self, now: float) -> None:
        """The driver is opening the connection (a join, or a resume after `begin_resume`)."""
        self._deadline = now + self.join_timeout_s
        self._last_received_at = now

    def begin_resume(self, now: float) -> None:
        """The connection was lost and the driver reconnects with ``reconnect=1``."""
        self.state = SessionState.RESUMING
        self._next_ping_at = None
        self.start(now)

    def receive_frame(self, data: bytes | str, now: float) -> None:
        if self.state is SessionState.ENDED:
            return
        self._last_received_at = now
        view: codec.MessageView | None
        try:
            if isinstance(data, str):
                view = codec.decode_response_json(data)
                kind = view.kind
            else:
                kind = codec.peek_response(data)
                view = codec.decode_response(data) if kind in HANDLED_RESPONSES else None
        except CodecError as exc:
            self._fail("malformed_frame", str(exc))
            return
        self.messages_received[kind or "unknown"] += 1
        handler = _HANDLERS.get(kind) if kind is not None else None
        if view is None or handler is None:
            return  # unset, or a variant listed in IGNORED_RESPONSES (JSON frames decode them all)
        handler(self, getattr(view, kind), now)

    def handle_timer(self, now: float) -> None:
        if self.state is SessionState.ENDED:
            return
        if self._deadline is not None and now >= self._deadline:
            self._fail("join_timeout" if self.state is SessionState.CONNECTING else "resume_timeout")
            return
        if self.state is not SessionState.JOINED:
            return
        if now - self._last_received_at >= self.ping_timeout_s:
            self._fail("ping_timeout", f"no frame for {self.ping_timeout_s:.0f} s")
            return
        if self._next_ping_at is not None and now >= self._next_ping_at:
            due_at = self._next_ping_at
            self.send_ping(now)
            # The cadence runs from when the ping was due, not from when the driver's timer ran (up to
            # a grid step later): counted from the run, every interval would grow by that step.
            if now - due_at < self.ping_interval_s:
                self._next_ping_at = due_at + self.ping_interval_s

    def get_timer(self) -> float | None:
        if self.state is SessionState.ENDED:
            return None
        if self.state is not SessionState.JOINED:
            return self._deadline
        silence = self._last_received_at + self.ping_timeout_s
        return silence if self._next_ping_at is None else min(silence, self._next_ping_at)

    def connection_closed(self, detail: str) -> None:
        """The WebSocket closed without a leave; the driver may resume or give up."""
        if self.state is not SessionState.ENDED:
            self.end_reason = detail

    # -- driver outputs --------------------------------------------------------

    def frames_to_send(self) -> list[bytes | str]:
        out, self._out = self._out, []
        return out

    def events_received(self) -> list[SessionEvent]:
        events, self._events = self._events, []
        return events

    # -- requests ----------------------------------------------------------------

    def send_request(self, mapping: dict[str, Any]) -> None:
        """Sends any SignalRequest given as its JSON mapping, e.g. ``{"mute": {"sid": ..., "muted": True}}``."""
        self._out.append(codec.encode_request_json(mapping) if self.json_mode else codec.encode_request(mapping))

    def send_ping(self, now: float) -> None:
        timestamp_ms = int(now * 1000)
        rtt_ms = round(self.last_rtt_ms)
        if self.json_mode:
            self.send_request({"pingReq": {"timestamp": timestamp_ms, "rtt": rtt_ms}})
        else:
            self._out.append(codec.encode_ping(timestamp_ms, rtt_ms))
        self._pending_pings[timestamp_ms] = now
        if len(self._pending_pings) > 4:  # unanswered pings are dropped, not kept forever
            del self._pending_pings[min(self._pending_pings)]
        self._next_ping_at = now + self.ping_interval_s

    def send_leave(self, reason: int = DisconnectReason.CLIENT_INITIATED) -> None:
        if self.state in (SessionState.JOINED, SessionState.CONNECTING):
            if self.json_mode:
                self.send_request({"leave": {"reason": int(reason)}})
            else:
                self._out.append(codec.encode_leave(int(reason)))
        self._end(f"left:{DisconnectReason.name_of(reason)}")

    def send_answer(self, sdp: str, answer_id: int = 0) -> None:
        if self.json_mode:
            self.send_request({"answer": {"type": "answer", "sdp": sdp, "id": answer_id}})
        else:
            self._out.append(codec.encode_answer(sdp, answer_id))

    def send_offer(self, sdp: str, offer_id: int = 0) -> None:
        if self.json_mode:
            self.send_request({"offer": {"type": "offer", "sdp": sdp, "id": offer_id}})
        else:
            self._out.append(codec.encode_offer(sdp, offer_id))

    def send_trickle(self, candidate_init: str, target: int, final: bool = False) -> None:
        if self.json_mode:
            self.send_request({"trickle": {"candidateInit": candidate_init, "target": target, "final": final}})
        else:
            self._out.append(codec.encode_trickle(candidate_init, target, final))

    def send_subscription(self, track_sids: list[str], subscribe: bool = True) -> None:
        if self.json_mode:
            self.send_request({"subscription": {"trackSids": track_sids, "subscribe": subscribe}})
        else:
            self._out.append(codec.encode_subscription(track_sids, subscribe))

    # -- room view -----------------------------------------------------------------

    def room_view(self) -> dict[str, str]:
        """The room as this participant sees it, itself included: identity -> participant sid."""
        return {**self.others, self.identity: self.participant_sid}

    def live_remote_tracks(self) -> set[str]:
        """Track sids other participants publish right now, as this participant sees them (muted ones too)."""
        live: set[str] = set()
        for tracks in self.tracks_by_participant.values():
            live |= tracks
        return live

    # -- handlers (one per handled SignalResponse variant) ----------------------------

    def _on_join(self, join: codec.MessageView, now: float) -> None:
        self.state = SessionState.JOINED
        self._deadline = None
        self.participant_sid = join.participant.sid
        self.room_name = join.room.name
        if join.ping_interval > 0:
            self.ping_interval_s = float(join.ping_interval)
        if join.ping_timeout > 0:
            self.ping_timeout_s = float(join.ping_timeout)
        others = join.other_participants
        self._next_ping_at = now + self.ping_interval_s
        self._events.append(
            Joined(
                participant_sid=self.participant_sid,
                room_name=self.room_name,
                room_sid=join.room.sid,
                other_participants=sum(1 for p in others if p.state != ParticipantState.DISCONNECTED),
                server_version=join.server_version,
                subscriber_primary=join.subscriber_primary,
                ping_interval_s=self.ping_interval_s,
                ping_timeout_s=self.ping_timeout_s,
            )
        )
        self._apply_participants(others, now)

    def _on_reconnect(self, reconnect: codec.MessageView, now: float) -> None:
        self.state = SessionState.JOINED
        self._deadline = None
        self._next_ping_at = now + self.ping_interval_s
        self._events.append(
            Joined(
                participant_sid=self.participant_sid,
                room_name=self.room_name,
                room_sid="",
                other_participants=len(self.others),
                server_version="",
                subscriber_primary=True,
                ping_interval_s=self.ping_interval_s,
                ping_timeout_s=self.ping_timeout_s,
                resumed=True,
                last_message_seq=reconnect.last_message_seq,
            )
        )

    def _on_update(self, update: codec.MessageView, now: float) -> None:
        self._apply_participants(update.participants, now)

    def _apply_participants(self, participants: tuple[codec.MessageView, ...], now: float) -> None:
        # The room view is keyed by identity because the server keys rooms by identity: a fresh
        # join under a known identity gets a new sid and replaces the old participant. The server
        # does not always tell us the old one left: an observer that joined between the old
        # participant's removal and its broadcast sees the old sid in its JoinResponse and never
        # its DISCONNECTED. The SDKs treat a new sid as the old one's departure; so do we.
        before = len(self.others)
        changed = False
        for info in participants:
            identity = info.identity
            if identity == self.identity:
                continue  # ourselves, or the predecessor this session replaced
            sid = info.sid
            known_sid = self.others.get(identity)
            if info.state == ParticipantState.DISCONNECTED:
                if known_sid == sid:  # a predecessor's late goodbye must not remove its successor
                    del self.others[identity]
                    changed = True
                self.tracks_by_participant.pop(sid, None)
                continue
            if known_sid != sid:
                if known_sid is not None:
                    self.tracks_by_participant.pop(known_sid, None)
                # Every participant of a room holds the same sids and identities: interned, they are
                # stored once per generator instead of once per observer (O(N) instead of O(N^2)).
                sid = intern(sid)
                self.others[intern(identity)] = sid
                changed = True
            tracks = info.tracks
            if tracks:
                self.tracks_by_participant[sid] = frozenset(intern(track.sid) for track in tracks)
            else:
                self.tracks_by_participant.pop(sid, None)  # most participants publish nothing: no empty sets
            for track in tracks:
                if track.muted:
                    self.muted_remote_tracks.add(intern(track.sid))
                elif self.muted_remote_tracks:
                    self.muted_remote_tracks.discard(track.sid)
                if track.sid not in self.remote_tracks:
                    self.remote_tracks.add(intern(track.sid))
                    self._events.append(RemoteTrackPublished(sid, identity, track.sid, track.type, now))
            for data_track in info.data_tracks:
                if data_track.sid not in self.remote_data_tracks:
                    self.remote_data_tracks.add(intern(data_track.sid))
                    self._events.append(RemoteDataTrackPublished(sid, identity, data_track.sid, data_track.name))
        if changed or len(self.others) != before:
            self._events.append(ParticipantsChanged(len(self.others)))

    def _on_offer(self, offer: codec.MessageView, _now: float) -> None:
        self._events.append(OfferReceived(offer.sdp, offer.id))

    def _on_answer(self, answer: codec.MessageView, _now: float) -> None:
        self._events.append(AnswerReceived(answer.sdp, answer.id, dict(answer.mid_to_track_id)))

    def _on_media_sections_requirement(self, requirement: codec.MessageView, _now: float) -> None:
        self._events.append(MediaSectionsRequired(requirement.num_audios, requirement.num_videos))

    def _on_trickle(self, trickle: codec.MessageView, _now: float) -> None:
        self._events.append(TrickleReceived(trickle.candidateInit, trickle.target, trickle.final))

    def _on_track_published(self, published: codec.MessageView, _now: float) -> None:
        self._events.append(TrackPublished(published.cid, published.track.sid))

    def _on_track_unpublished(self, unpublished: codec.MessageView, _now: float) -> None:
        self._events.append(TrackUnpublished(unpublished.track_sid))

    def _on_mute(self, mute: codec.MessageView, _now: float) -> None:
        self._events.append(TrackMuteRequested(mute.sid, mute.muted))

    def _on_track_subscribed(self, subscribed: codec.MessageView, _now: float) -> None:
        self._events.append(TrackSubscribed(subscribed.track_sid))

    def _on_pong_resp(self, pong: codec.MessageView, now: float) -> None:
        sent_at = self._pending_pings.pop(pong.last_ping_timestamp, None)
        if sent_at is not None:
            self.last_rtt_ms = (now - sent_at) * 1000
            self._events.append(PongReceived(self.last_rtt_ms))

    def _on_connection_quality(self, update: codec.MessageView, _now: float) -> None:
        # Only the entry about ourselves is the server's verdict on our receiver; the others are other
        # participants' connections. The server lists the recipient first (room.go connectionQualityWorker),
        # so the scan usually stops at once.
        for info in update.updates:
            if info.participant_sid == self.participant_sid:
                self._events.append(QualityReported(info.quality, info.score))
                return

    def _on_leave(self, leave: codec.MessageView, _now: float) -> None:
        self._events.append(LeaveRequested(leave.reason, leave.action, leave.can_reconnect))
        if leave.action == LeaveAction.DISCONNECT:
            self._end(f"left:{DisconnectReason.name_of(leave.reason)}")

    def _on_refresh_token(self, token: str, _now: float) -> None:
        self.token = token
        self._events.append(TokenRefreshed(token))

    def _on_room_moved(self, moved: codec.MessageView, now: float) -> None:
        if moved.token:
            self.token = moved.token
        self.room_name = moved.room.name
        self.others.clear()
        self.tracks_by_participant.clear()  # the old room's tracks are no longer ours to receive
        self._apply_participants(moved.other_participants, now)
        self._events.append(RoomMoved(self.room_name, moved.token))

    def _on_request_response(self, response: codec.MessageView, _now: float) -> None:
        if response.reason != 0:
            request = response.kind or ""
            self._events.append(RequestFailed(response.request_id, response.reason, response.message, request))

    def _on_publish_data_track_response(self, response: codec.MessageView, _now: float) -> None:
        info = response.info
        self._events.append(DataTrackPublished(info.pub_handle, info.sid, info.name))

    def _on_unpublish_data_track_response(self, response: codec.MessageView, _now: float) -> None:
        info = response.info
        self._events.append(DataTrackUnpublished(info.pub_handle, info.sid))

    def _on_data_track_subscriber_handles(self, handles: codec.MessageView, _now: float) -> None:
        entries = tuple(
            (int(handle), track.publisher_identity, track.publisher_sid, track.track_sid)
            for handle, track in handles.sub_handles.items()
        )
        self._events.append(DataTrackHandles(entries))

    def _on_subscription_response(self, response: codec.MessageView, _now: float) -> None:
        if response.err != 0:
            self._events.append(SubscriptionFailed(response.track_sid, response.err))

    # -- endings ---------------------------------------------------------------------

    def _end(self, reason: str) -> None:
        if self.state is not SessionState.ENDED:
            self.state = SessionState.ENDED
            self.end_reason = reason
            self._deadline = self._next_ping_at = None

    def _fail(self, reason: str, detail: str = "") -> None:
        if self.state is not SessionState.ENDED:
            self._events.append(Failed(reason, detail))
            self._end(f"failed:{reason}")


_HANDLERS: dict[str, Any] = {kind: getattr(SignalSession, f"_on_{kind}") for kind in HANDLED_RESPONSES}
