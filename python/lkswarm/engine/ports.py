"""The engine's seams: what a run lends participants and tiers, and what a media tier must provide.

The engine owns these `typing.Protocol`s and imports no tier: the composition root
(`lkswarm.app.runner`) builds the tiers (`lkswarm.media`, `lkswarm.probe`) and hands
them to `Engine` in priority order; the first tier that `claims` a participant
attaches a `MediaLeg` to its driver. A leg sees its participant only through
`ParticipantHost` and the run only through `RunContext`, never `Engine` or the driver
class, so a tier can be tested with plain fakes of these two.

Where a participant's state lives (one list, in the order a join builds it):

1. `lkswarm.engine.participant.ParticipantDriver`: outcome, join time, resumes, its WebSocket and timer;
2. `lkswarm.signal.session.SignalSession` (``driver.session``): signal state, token, room view, pings;
3. its `MediaLeg` (``driver.leg``): `lkswarm.media.tier.LightLeg` or `lkswarm.probe.tier.ProbeLeg`;
4. below the leg: the Rust peer in the `MediaHub` (``rust/src/media/peer.rs``), or a probe's aiortc `ProbePeer`.

The engine keeps no per-participant tables besides ``drivers``; run-wide tallies are in
`lkswarm.engine.record.Tally`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Coroutine
from typing import Any, NamedTuple, Protocol

from lkswarm.auth import Credentials
from lkswarm.config import RunConfig
from lkswarm.engine.outcome import Outcome
from lkswarm.metrics import PhaseMetrics
from lkswarm.net.ws_driver import Endpoint
from lkswarm.signal.events import SessionEvent
from lkswarm.signal.join_request import JoinMedia
from lkswarm.signal.session import SignalSession


class RunContext(Protocol):
    """What a run lends its participants and tiers (`lkswarm.engine.context.Run` is the one implementation)."""

    @property
    def config(self) -> RunConfig: ...
    @property
    def credentials(self) -> Credentials: ...
    @property
    def endpoint(self) -> Endpoint: ...
    @property
    def metrics(self) -> PhaseMetrics: ...
    @property
    def counters(self) -> collections.Counter[str]: ...
    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None: ...


class ParticipantHost(Protocol):
    """The slice of a participant driver that a media leg may touch."""

    @property
    def index(self) -> int: ...
    @property
    def identity(self) -> str: ...
    @property
    def room(self) -> str: ...
    @property
    def seat(self) -> int: ...
    @property
    def session(self) -> SignalSession | None: ...
    @property
    def outcome(self) -> Outcome | None: ...
    @property
    def outcome_detail(self) -> str:
        """The sentence beside its outcome (why it failed); "" while running."""

    @property
    def joined_at(self) -> float | None:
        """When its (first) JoinResponse came (perf_counter seconds); None while joining."""

    def media_output(self, step: Callable[[], None]) -> None:
        """Runs a media step that no session event triggered, then sends what it produced."""

    def media_connected(self, at: float) -> None:
        """The primary PeerConnection connected at ``at`` (perf_counter seconds): ACTIVE."""

    def media_resumed(self, at: float) -> None:
        """After a resume's ICE restart, media flows again at ``at`` (perf_counter seconds)."""

    def finish(self, outcome: Outcome, detail: str = "") -> None:
        """Decides the participant's outcome (the first decision wins)."""


class MediaLeg(Protocol):
    """One participant's media half."""

    @property
    def active(self) -> bool:
        """Whether the current primary PeerConnection is connected."""

    @property
    def single_pc_capable(self) -> bool:
        """Whether this leg can join ``/rtc/v1`` with one PeerConnection (the probes' aiortc cannot yet)."""

    def prepare_join(self, now: float) -> JoinMedia | None:
        """A ``/rtc/v1`` join is about to be sent: set up the one PeerConnection and return the tracks to publish
        and its offer (None: nothing to put in the join). Raises `lkswarm.errors.MediaError`."""

    def discard_join(self) -> None:
        """The prepared ``/rtc/v1`` join was refused (404, falling back to ``/rtc``): forget its PeerConnection."""

    def abandon_join(self) -> None:
        """A fresh join begins (leave RECONNECT): the server forgot this join's PeerConnections, so release them
        now, before anything of the old join's peer (its connect, a failure) can count as the new join's."""

    def on_resumed(self, now: float, last_message_seq: int) -> bool:
        """The signal connection resumed: restart ICE where the client must (single PC), and send again the
        reliable data messages past ``last_message_seq`` (the last the server has from us). True when the leg will
        report media flowing again (`ParticipantHost.media_resumed`); False when there is nothing to wait for."""

    def resend_pending_offer(self, now: float) -> bool:
        """After a resume of a leg not connected yet: the single PC's offer still awaiting its answer, sent again
        (its answer may have died with the old WebSocket). True when one was sent."""

    def on_joined(self, now: float) -> None:
        """The JoinResponse arrived (again, after a fresh join): set up the PeerConnections."""

    def on_session_event(self, event: SessionEvent, now: float) -> None:
        """A media-related session event; raises `lkswarm.errors.MediaError` to fail this participant."""

    def before_leave(self) -> None:
        """The participant is about to send its leave (run end, planned departure): last requests."""

    def close(self) -> None:
        """The participant ended: release its PeerConnections."""


class MediaCounts(NamedTuple):
    """Running packet totals of a tier, which never go backwards (the timeline's per-interval rates)."""

    packets_received: int
    packets_expected: int
    packets_lost: int
    data_sent: int = 0  # data messages written
    data_received: int = 0  # data messages received (every sender, ours or not)
    data_track_sent: int = 0  # data-track frames written
    data_track_received: int = 0  # data-track packets received (every publisher's)


class TierTotals(Protocol):
    """A tier's figures at the end of the run, for the report."""

    @property
    def cpu_s(self) -> float:
        """CPU seconds of the tier's own threads that the report keeps apart from the generator's."""

    def warnings(self) -> list[str]: ...


class MediaTier(Protocol):
    """One per run: `lkswarm.media.tier.LightTier` or `lkswarm.probe.tier.ProbeTier`."""

    def claims(self, index: int) -> bool:
        """Whether the participant at plan ``index`` is this tier's."""

    def attach(self, host: ParticipantHost) -> MediaLeg: ...
    async def start(self) -> None:
        """Set-up before the clock starts (clips, threads)."""

    def running_counts(self) -> MediaCounts | None:
        """Packet totals so far, for the once-a-second timeline; None when the tier counts only at the end."""

    def saturation(self) -> str:
        """Why this tier's figures cannot be trusted so far ("" while they can)."""

    async def collect(self) -> TierTotals:
        """Final figures (called while participants are still alive)."""

    async def close(self) -> None: ...
