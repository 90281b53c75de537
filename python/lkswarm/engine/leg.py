"""The signaling glue both media tiers share, written once: `SignalingLeg` and the tiers' `LegFilters`.

Theory of operation
-------------------
A media leg carries one participant's media signaling; the tier below it
(the Rust hub, or aiortc on the probe loop) does the packet work. The flow
is the same for both tiers, only the operations differ::

    Joined ──> on_joined (tier: create the peer; a fresh join starts the leg over)
    OfferReceived ──> answer_offer (tier) ──> answer         (subscriber PC; re-offers too)
    TrickleReceived ──> add_candidate (tier)
    primary PC connected ──> ACTIVE ──> addTrack per published track (once per join)
    TrackPublished for all of them ──> publish (tier: the publisher offer)
    TrackMuteRequested / TrackUnpublished of ours ──> mute_track (tier), the mute acknowledged
    AnswerReceived ──> latency_ms.offer_answer, accept_answer (tier)
    peer failed ──> the participant fails with the peer's reason

On the single-PC path (``/rtc/v1``) the order differs: `prepare_join` opens the
one PeerConnection before the WebSocket, and its tracks and offer travel in
the join request, so nothing is announced or offered afterwards. The server
never offers; when it needs more receive sections it sends
``media_sections_requirement`` (MediaSectionsRequired), which the tier answers
with a re-offer (one at a time: a requirement that arrives while an offer is
pending is folded into the next, which follows the answer).

Tracks are announced once the primary (subscriber) PeerConnection is
connected, as an SDK's app publishes after ``connect`` returns. The
fault-injection `LegFilters` (for tests) rewrite a server offer, our answer
or a trickled candidate on the way through, whichever tier runs the leg.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from lkswarm.engine.outcome import Outcome
from lkswarm.engine.ports import ParticipantHost, RunContext
from lkswarm.errors import MediaError
from lkswarm.signal.events import (
    AnswerReceived,
    MediaSectionsRequired,
    OfferReceived,
    RemoteTrackPublished,
    SessionEvent,
    TrackMuteRequested,
    TrackPublished,
    TrackUnpublished,
    TrickleReceived,
)
from lkswarm.signal.join_request import JoinMedia
from lkswarm.signal.session import SessionState, SignalSession

LegT = TypeVar("LegT", bound="SignalingLeg")


class LegFilters(Generic[LegT]):
    """Fault-injection seams a tier offers tests: rewrite a server offer, our answer or a trickled
    candidate (return None from ``trickle_filter`` to drop it). Each receives the leg concerned."""

    def __init__(self) -> None:
        self.offer_filter: Callable[[LegT, str], str] | None = None
        self.answer_filter: Callable[[LegT, str], str] | None = None
        self.trickle_filter: Callable[[LegT, str], str | None] | None = None


class SignalingLeg:
    """A `MediaLeg`'s shared half; a tier subclasses it with its operations (the ``_``-prefixed hooks)."""

    __slots__ = (
        "_announced",
        "_cids",
        "_deferred_sections",
        "_filters",
        "_join_prepared",
        "_muted_cids",
        "_offered",
        "_offered_at",
        "_pending_offer",
        "_published",
        "_published_muted",
        "_restart_after_answer",
        "_track_sids",
        "active",
        "driver",
        "run",
        "single_pc",
    )
    single_pc_capable = False  # a tier that can join /rtc/v1 with one PeerConnection says so

    def __init__(
        self, run: RunContext, driver: ParticipantHost, filters: LegFilters[Any], cids: dict[str, str]
    ) -> None:
        self.run = run
        self.driver = driver
        self._filters = filters
        self._cids = cids  # cid -> "audio" | "video": the tracks this participant publishes, in announce order
        self.active = False  # the current primary (subscriber) PeerConnection is connected
        self._published: set[str] = set()
        self._track_sids: dict[str, str] = {}  # track sid -> cid of our tracks the server acknowledged
        # Our tracks the server has muted (and not unmuted), kept across joins: a fresh join republishes them muted
        # and silent, as an SDK does with a track it muted on the server's request.
        self._muted_cids: set[str] = set()
        self._published_muted: set[str] = set()  # of those, the ones this join's addTrack sent muted
        self._announced = False  # addTrack sent for this join
        self._offered = False  # the publisher offer sent for this join
        self._offered_at = 0.0
        self._pending_offer: tuple[str, int] | None = None  # single PC: the offer awaiting its answer (sdp, id)
        self._restart_after_answer = False  # single PC: a resume found an offer pending; restart ICE after it
        self.single_pc = False  # this join is /rtc/v1's: one PeerConnection, opened by `prepare_join`
        self._join_prepared = False  # the single PeerConnection of the join in flight exists already
        # single PC: receive sections asked for before ICE connected, (audios, videos); None when none waits
        self._deferred_sections: tuple[int, int] | None = None

    def _start_join_over(self) -> None:
        """What belongs to one join: a fresh join (leave RECONNECT) starts all of it over."""
        self.active = False
        self._published = set()
        self._published_muted = set()
        self._track_sids = {}
        self._announced = False
        self._offered = False
        self._offered_at = 0.0
        self._pending_offer = None
        self._restart_after_answer = False
        self._deferred_sections = None
        # The next join decides its path again (`prepare_join` sets these for /rtc/v1): a fresh join after a
        # resume that fell back from /rtc/v1 to /rtc makes the dual-PC peer of /rtc.
        self.single_pc = self._join_prepared = False

    # -- the tier's operations --------------------------------------------------------------------

    def _has_peer(self) -> bool:
        raise NotImplementedError

    def _answer_offer(self, sdp: str, offer_id: int) -> None:
        raise NotImplementedError

    def _accept_answer(self, sdp: str, mid_to_track_id: dict[str, str]) -> tuple[str, int] | None:
        """Applies the answer; on the single PC, returns the re-offer that waited for it, if any."""
        raise NotImplementedError

    def _open_single_pc(self, now: float) -> tuple[str, int]:
        """Creates the single PeerConnection (dropping any earlier one) and returns its join offer and id."""
        raise MediaError("this tier cannot join /rtc/v1 with one PeerConnection")

    def _reoffer(self, num_audios: int, num_videos: int) -> tuple[str, int] | None:
        """Single PC: a re-offer with that many more receive sections (``0, 0``: the same); None while one is
        pending (it follows that one's answer)."""
        raise NotImplementedError

    def _close_peer(self) -> None:
        """Releases this leg's PeerConnections (a tier hook)."""

    def _add_candidate(self, target: int, candidate: str) -> None:
        raise NotImplementedError

    def _track_request(self, cid: str, kind: str) -> dict[str, Any]:
        """The ``addTrack`` request of one of this participant's tracks."""
        raise NotImplementedError

    def _publish(self, now: float) -> None:
        """Every announced track is acknowledged: make the publisher offer (the tier sends it when it has it)."""
        raise NotImplementedError

    def _on_track_published(self, event: TrackPublished) -> None:
        """One of our tracks was acknowledged (a hook; nothing by default)."""

    def _on_remote_track(self, event: RemoteTrackPublished) -> None:
        """Someone else's track appeared in a participant update (a hook; nothing by default)."""

    def _mute_track(self, video: bool, muted: bool) -> bool:
        """Stops (or resumes) sending our audio or ``video`` track; False where the tier cannot (the default)."""
        return False

    # -- session side (the main loop) ---------------------------------------------------------------

    @property
    def session(self) -> SignalSession:
        session = self.driver.session
        assert session is not None, "a leg acts only after its participant joined"
        return session

    def on_session_event(self, event: SessionEvent, now: float) -> None:
        """Handles the media-related session events; raises MediaError on refusal."""
        if isinstance(event, (TrackMuteRequested, TrackUnpublished)):
            self._on_server_takes_track(event)  # counted with or without a peer
            return
        if not self._has_peer():
            return
        filters = self._filters
        if isinstance(event, OfferReceived):
            if self.single_pc:
                raise MediaError("the server sent an offer on a single-PC (/rtc/v1) session")
            sdp = filters.offer_filter(self, event.sdp) if filters.offer_filter is not None else event.sdp
            self._answer_offer(sdp, event.id)
        elif isinstance(event, AnswerReceived):
            if self.single_pc:
                pending = self._pending_offer
                if pending is None or (event.id and event.id != pending[1]):
                    # The answer to an offer we resent or replaced (a resume): the server answers each copy.
                    self.run.counters["stale_answers"] += 1
                    return
                self._pending_offer = None
            if self._offered_at:
                self.run.metrics.record("offer_answer", (now - self._offered_at) * 1000)
                self._offered_at = 0.0
            follow_up = self._accept_answer(event.sdp, event.mid_to_track_id)
            if self.single_pc and self._restart_after_answer:
                # The resume's ICE restart, deferred until the server answered the offer it had: a follow-up
                # offer was never sent, so the restart offer folds its sections in (Rust drops it).
                self._restart_after_answer = False
                follow_up = self._ice_restart()
            if follow_up is not None:
                self.send_offer(follow_up[0], now, follow_up[1])
        elif isinstance(event, MediaSectionsRequired):
            if self.single_pc:
                self.run.counters["media_sections_requirements"] += 1
                if not self.active:
                    # Before ICE connected the server's pion may not have started its ICE agent (it does so
                    # asynchronously after the join offer); a re-offer then reads to it as an ICE restart, and
                    # its answer's new credentials fail ours ("ICE restart in answer without one in the
                    # offer"). Once we are connected its agent has our credentials: the re-offer goes then.
                    audios, videos = self._deferred_sections or (0, 0)
                    self._deferred_sections = (audios + event.num_audios, videos + event.num_videos)
                    self.run.counters["reoffers_deferred"] += 1
                    return
                self._send_reoffer(event.num_audios, event.num_videos, now)
        elif isinstance(event, TrickleReceived):
            candidate: str | None = event.candidate_init
            if filters.trickle_filter is not None:
                candidate = filters.trickle_filter(self, event.candidate_init)
            if candidate is not None:
                self._add_candidate(event.target, candidate)
        elif isinstance(event, TrackPublished):
            if event.cid in self._cids:
                self._published.add(event.cid)
                if event.cid in self._published_muted:
                    self._published_muted.discard(event.cid)
                    self.run.counters["server_mutes_kept_on_rejoin"] += 1
                self._track_sids[event.track_sid] = event.cid
                self._on_track_published(event)
                if not self._offered and self._published == set(self._cids):
                    self._offered = True
                    self._publish(now)
        elif isinstance(event, RemoteTrackPublished):
            self._on_remote_track(event)

    def _on_server_takes_track(self, event: TrackMuteRequested | TrackUnpublished) -> None:
        """The server muted (or unmuted) one of our tracks (an admin's MutePublishedTrack), or unpublished it (its
        publish permission revoked). As the SDKs do, the track stops sending, and a mute's new state goes back to
        the server; the report counts what was honoured (signal.server_mutes)."""
        counters = self.run.counters
        if isinstance(event, TrackUnpublished):
            cid = self._track_sids.pop(event.track_sid, None)
            if cid is not None:
                honoured = self._mute_track(self._cids[cid] == "video", True)
                counters[f"server_unpublishes_{'honoured' if honoured else 'not_honoured'}"] += 1
            return
        cid = self._track_sids.get(event.track_sid)
        if cid is None:
            counters["server_mutes_unknown_track"] += 1
        elif self._mute_track(self._cids[cid] == "video", event.muted):
            counters["server_mutes_honoured"] += 1
            if event.muted:
                self._muted_cids.add(cid)
            else:
                self._muted_cids.discard(cid)
            self.session.send_request({"mute": {"sid": event.track_sid, "muted": event.muted}})
        else:
            counters["server_mutes_not_honoured"] += 1

    def _send_reoffer(self, num_audios: int, num_videos: int, now: float) -> None:
        offer = self._reoffer(num_audios, num_videos)
        if offer is not None:
            self.send_offer(offer[0], now, offer[1])

    def send_answer(self, sdp: str, offer_id: int) -> None:
        """Our answer to the server's offer, through the answer filter."""
        filters = self._filters
        answer = filters.answer_filter(self, sdp) if filters.answer_filter is not None else sdp
        self.session.send_answer(answer, offer_id)

    def send_offer(self, sdp: str, at: float, offer_id: int = 1) -> None:
        """An offer (the publisher's, or a single PC's re-offer), sent at ``at``: the answer's arrival closes
        latency_ms.offer_answer."""
        self._offered_at = at
        if self.single_pc:
            self._pending_offer = (sdp, offer_id)
        self.run.counters[f"offers_sent:{'v1' if self.single_pc else 'v0'}"] += 1
        self.session.send_offer(sdp, offer_id)

    # -- the single-PC join (/rtc/v1) ------------------------------------------------------------

    def prepare_join(self, now: float) -> JoinMedia:
        """Opens the one PeerConnection of a ``/rtc/v1`` join: its tracks and offer go in the join request."""
        self._start_join_over()
        sdp, offer_id = self._open_single_pc(now)
        self.single_pc = self._join_prepared = True
        self._announced = self._offered = True  # the tracks and the offer travel in the join
        self._offered_at = now
        self._pending_offer = (sdp, offer_id)
        self.run.counters["offers_sent:v1"] += 1
        tracks = [self._add_track(cid, kind)["addTrack"] for cid, kind in self._cids.items()]
        return JoinMedia(tracks, sdp, offer_id)

    def discard_join(self) -> None:
        """The ``/rtc/v1`` join was refused (404): the next join is ``/rtc``'s, with its own PeerConnections."""
        self._close_peer()
        self._start_join_over()
        self.single_pc = self._join_prepared = False

    def abandon_join(self) -> None:
        """A fresh join begins (leave RECONNECT): the old join's PeerConnections go now, not when the new join is
        answered. Until then its session is unanswered while the old peer lived on, and anything that peer
        reported in between (its connect, a failure at its connect deadline, its first packets) was taken as the
        new join's: a `PeerFailed` failed the participant, a connect sent the old join's re-offer."""
        self._close_peer()
        self._start_join_over()

    def on_resumed(self, now: float, last_message_seq: int) -> bool:
        """A resume: the single PC offers an ICE restart (the server restarts only a subscriber PC, and answers
        ours with new credentials); a dual-PC peer waits for the server's restart offer. Either way the peer
        reports media flowing again. Without a connected peer there is nothing to restart. A data publisher
        sends again the reliable messages the server lacks (past ``last_message_seq``), as the SDKs do."""
        if not self.active or not self._has_peer():
            return False
        self._resend_data(last_message_seq)
        self.run.counters["ice_restarts_expected"] += 1
        if self.single_pc:
            if self.resend_pending_offer(now):
                self._restart_after_answer = True  # the restart offer follows the answer
            else:
                sdp, offer_id = self._ice_restart()
                self.send_offer(sdp, now, offer_id)
        return True

    def resend_pending_offer(self, now: float) -> bool:
        """After a resume (connected or not), single PC: the offer still awaiting its answer, sent again as it was
        (same id, same mids). Its answer may be lost with the old WebSocket or still coming on the new one, and the
        server may have applied it; it answers an identical offer again, and the second answer is stale."""
        if not self.single_pc or self._pending_offer is None or not self._has_peer():
            return False
        sdp, offer_id = self._pending_offer
        self.run.counters["offers_resent"] += 1
        self.send_offer(sdp, now, offer_id)
        return True

    def _resend_data(self, last_message_seq: int) -> None:
        """After a resume: the reliable data messages past the server's last sequence, again (a tier hook;
        nothing by default)."""

    def _ice_restart(self) -> tuple[str, int]:
        """Single PC: the ICE-restart offer after a resume (a tier hook)."""
        raise MediaError("this tier cannot restart ICE")

    def _take_prepared_join(self) -> bool:
        """On the JoinResponse: whether its single PeerConnection was opened with the join (so none is made now)."""
        prepared, self._join_prepared = self._join_prepared, False
        return prepared

    def _announce_tracks(self) -> None:
        self._announced = True
        for cid, kind in self._cids.items():
            self.session.send_request(self._add_track(cid, kind))

    def _add_track(self, cid: str, kind: str) -> dict[str, Any]:
        """The ``addTrack`` of one of our tracks for this join: one the server muted goes muted, and silent."""
        request = self._track_request(cid, kind)
        if cid in self._muted_cids and self._mute_track(kind == "video", True):
            request["addTrack"]["muted"] = True
            self._published_muted.add(cid)  # counted once the server acknowledges it (a join may be retried)
        return request

    # -- peer side ---------------------------------------------------------------------------------

    def connected(self, primary: bool, at: float, now: float | None = None) -> None:
        """A PeerConnection connected at ``at``, handled at ``now`` (default ``at``); the primary one (dual: the
        subscriber; or the single PC) makes the participant ACTIVE."""
        if not primary:
            return
        session = self.driver.session
        if session is None or session.state is SessionState.CONNECTING:
            # The abandoned join's PeerConnection: a fresh join (leave RECONNECT) has begun and its session has not
            # been answered, so no PeerConnection of the new join can be connected yet. What this one would send
            # (a deferred re-offer with the old credentials and mids, addTrack) would go ahead of the new join.
            # A safety net since `abandon_join` closes that peer when the leave arrives (its events then reach no
            # leg), so this count stays 0 unless a tier keeps an old peer routed.
            self.run.counters["stale_connects"] += 1
            return
        self.active = True
        if not self._announced and self._cids:
            self.driver.media_output(self._announce_tracks)
        deferred, self._deferred_sections = self._deferred_sections, None
        if deferred is not None:
            sent_at = at if now is None else now  # offer_answer runs from the send, not the connect
            self.driver.media_output(lambda: self._send_reoffer(deferred[0], deferred[1], sent_at))
        self._on_primary_connected(at)
        self.driver.media_connected(at)

    def _on_primary_connected(self, at: float) -> None:
        """The primary PeerConnection connected (a hook; nothing by default)."""

    def before_leave(self) -> None:
        """The participant is about to leave politely: last requests (a hook; nothing by default)."""

    def failed(self, reason: str, detail: str) -> None:
        """The peer is dead: the participant fails with its reason."""
        self.driver.finish(Outcome.failed(reason), detail)
