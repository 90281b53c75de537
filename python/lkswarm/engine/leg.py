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
    AnswerReceived ──> latency_ms.offer_answer, accept_answer (tier)
    peer failed ──> the participant fails with the peer's reason

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
from lkswarm.signal.events import (
    AnswerReceived,
    OfferReceived,
    RemoteTrackPublished,
    SessionEvent,
    TrackPublished,
    TrickleReceived,
)
from lkswarm.signal.session import SignalSession

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

    __slots__ = ("_announced", "_cids", "_filters", "_offered", "_offered_at", "_published", "active", "driver", "run")

    def __init__(
        self, run: RunContext, driver: ParticipantHost, filters: LegFilters[Any], cids: dict[str, str]
    ) -> None:
        self.run = run
        self.driver = driver
        self._filters = filters
        self._cids = cids  # cid -> "audio" | "video": the tracks this participant publishes, in announce order
        self.active = False  # the current primary (subscriber) PeerConnection is connected
        self._published: set[str] = set()
        self._announced = False  # addTrack sent for this join
        self._offered = False  # the publisher offer sent for this join
        self._offered_at = 0.0

    def _start_join_over(self) -> None:
        """What belongs to one join: a fresh join (leave RECONNECT) starts all of it over."""
        self.active = False
        self._published = set()
        self._announced = False
        self._offered = False
        self._offered_at = 0.0

    # -- the tier's operations --------------------------------------------------------------------

    def _has_peer(self) -> bool:
        raise NotImplementedError

    def _answer_offer(self, sdp: str, offer_id: int) -> None:
        raise NotImplementedError

    def _accept_answer(self, sdp: str) -> None:
        raise NotImplementedError

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

    # -- session side (the main loop) ---------------------------------------------------------------

    @property
    def session(self) -> SignalSession:
        session = self.driver.session
        assert session is not None, "a leg acts only after its participant joined"
        return session

    def on_session_event(self, event: SessionEvent, now: float) -> None:
        """Handles the media-related session events; raises MediaError on refusal."""
        if not self._has_peer():
            return
        filters = self._filters
        if isinstance(event, OfferReceived):
            sdp = filters.offer_filter(self, event.sdp) if filters.offer_filter is not None else event.sdp
            self._answer_offer(sdp, event.id)
        elif isinstance(event, AnswerReceived):
            if self._offered_at:
                self.run.metrics.record("offer_answer", (now - self._offered_at) * 1000)
                self._offered_at = 0.0
            self._accept_answer(event.sdp)
        elif isinstance(event, TrickleReceived):
            candidate: str | None = event.candidate_init
            if filters.trickle_filter is not None:
                candidate = filters.trickle_filter(self, event.candidate_init)
            if candidate is not None:
                self._add_candidate(event.target, candidate)
        elif isinstance(event, TrackPublished):
            if event.cid in self._cids:
                self._published.add(event.cid)
                self._on_track_published(event)
                if not self._offered and self._published == set(self._cids):
                    self._offered = True
                    self._publish(now)
        elif isinstance(event, RemoteTrackPublished):
            self._on_remote_track(event)

    def send_answer(self, sdp: str, offer_id: int) -> None:
        """Our answer to the server's offer, through the answer filter."""
        filters = self._filters
        answer = filters.answer_filter(self, sdp) if filters.answer_filter is not None else sdp
        self.session.send_answer(answer, offer_id)

    def send_offer(self, sdp: str, at: float) -> None:
        """The publisher offer, sent at ``at``: the answer's arrival closes latency_ms.offer_answer."""
        self._offered_at = at
        self.session.send_offer(sdp, 1)

    def _announce_tracks(self) -> None:
        self._announced = True
        for cid, kind in self._cids.items():
            self.session.send_request(self._track_request(cid, kind))

    # -- peer side ---------------------------------------------------------------------------------

    def connected(self, subscriber: bool, at: float) -> None:
        """A PeerConnection connected at ``at``; the primary (subscriber) one makes the participant ACTIVE."""
        if not subscriber:
            return
        self.active = True
        if not self._announced and self._cids:
            self.driver.media_output(self._announce_tracks)
        self.driver.media_connected(at)

    def failed(self, reason: str, detail: str) -> None:
        """The peer is dead: the participant fails with its reason."""
        self.driver.finish(Outcome.failed(reason), detail)
