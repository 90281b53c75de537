"""A participant's reconnection: resumes, fresh joins and the episodes that span them.

Theory of operation
-------------------
A lost connection (a close, a reset, a silent link past the ping timeout) or the server's leave(RESUME) starts
a *resume*: the same session, a new WebSocket with ``reconnect=1``; the server's leave(RECONNECT) or a storm's
forced reconnect starts a *fresh join*: a new session with the old one's token and message counts, and new
PeerConnections. Either begins a `ReconnectEpisode` (lkswarm.engine.reconnect) unless one is running, and the
episode ends when the participant is back: media flows again (`media_resumed`, or a fresh join's
`media_connected`) or, without media, the server answered. A failed attempt is retried after the episode's
backoff until it gives up (``reconnect_failed``); resumes in a row are capped (``resume_limit``), so a server
that accepts every resume and drops it at once cannot loop a participant forever.

`Reconnection` is a mixin of `ParticipantDriver` (lkswarm.engine.participant), kept apart to keep each file
readable; the driver's slots hold the state its methods use (declared here for the type checker).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from lkswarm.engine.outcome import Outcome
from lkswarm.engine.reconnect import ReconnectEpisode
from lkswarm.errors import MediaError
from lkswarm.signal.session import SessionState, SignalSession

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from typing import Any

    from lkswarm.engine.ports import MediaLeg, RunContext

# Resumes in a row, so that a server that accepts every resume and drops the connection at once cannot loop us
# forever. Being back for STABLE_AFTER_RESUME_S starts the count again: a rolling restart is not a flapping server.
MAX_RESUMES = 3
STABLE_AFTER_RESUME_S = 10.0


class Reconnection:
    """Resumes, fresh joins and reconnect episodes of a `ParticipantDriver`."""

    # The reconnection's own state; the driver's __init__ sets it.
    __slots__ = ("_back_at", "_reconnect", "_rejoin_started", "_resume_started", "_retry", "_waiting_media", "resumes")

    if TYPE_CHECKING:  # the driver's state and steps this mixin uses (its slots and methods)
        ctx: RunContext
        leg: MediaLeg | None
        outcome: Outcome | None
        path: str
        session: SignalSession | None
        _stopping: bool
        _back_at: float | None
        _reconnect: ReconnectEpisode | None
        _rejoin_started: float
        _resume_started: float
        _retry: asyncio.TimerHandle | None
        _waiting_media: bool
        resumes: int

        def finish(self, outcome: Outcome, detail: str = "") -> None: ...
        def _connect(self, *, resume: bool) -> Coroutine[Any, Any, None]: ...
        def _drop_connection(self) -> None: ...
        def _media_step(self, step: Callable[[], None]) -> None: ...
        def _renew_session(self) -> None: ...

    def _on_resumed(self, now: float, last_message_seq: int) -> None:
        """The server took the resume. Without media, that is being back. With a connected media leg, its
        PeerConnections outlived the WebSocket and restart ICE (the server's offer, or our own on a single PC):
        back is when media flows again (`media_resumed`). A leg that was not connected is back when it connects."""
        counters, metrics, leg = self.ctx.counters, self.ctx.metrics, self.leg
        counters["resumes_succeeded"] += 1
        counters[f"signal_path_resumes:{self.path}"] += 1
        since_ms = (now - self._resume_started) * 1000
        metrics.record("resume_signal", since_ms)
        if leg is not None and leg.active:
            try:
                self._waiting_media = leg.on_resumed(now, last_message_seq)
            except MediaError as exc:
                self.finish(Outcome.failed("media_setup"), str(exc))
                return
            if self._waiting_media:
                return
        elif leg is not None:
            try:
                leg.resend_pending_offer(now)  # not connected yet: no ICE restart, but an offer may be pending
            except MediaError as exc:
                self.finish(Outcome.failed("media_setup"), str(exc))
                return
        metrics.record("resume", since_ms)
        if leg is None or leg.active:
            self._reconnected(now)

    def media_resumed(self, at: float) -> None:
        """After a resume, media flows again on the restarted PeerConnection: the resume and its episode end."""
        if not self._waiting_media:
            return
        self._waiting_media = False
        self.ctx.metrics.record("resume", max(0.0, at - self._resume_started) * 1000)
        self._reconnected(at)

    def _start_resume(self) -> None:
        now = time.perf_counter()
        if self._back_at is not None and now - self._back_at >= STABLE_AFTER_RESUME_S:
            self.resumes = 0  # the last outage is long over: this is a new one
        if self.resumes >= MAX_RESUMES:
            detail = f"{MAX_RESUMES} resumes in a row, none of which held for {STABLE_AFTER_RESUME_S:g} s"
            self.finish(Outcome.failed("resume_limit"), detail)
            return
        self.resumes += 1
        self.ctx.counters["resumes_attempted"] += 1
        self._resume_started = now
        self._begin_reconnect(now)
        self._drop_connection()
        if self.session is not None:
            # Resuming from now: a session that ended on a silent connection (ping_timeout) is not over, and the
            # pump must not finish it before the spawned connect begins the resume.
            self.session.begin_resume(self._resume_started)
        self.ctx.spawn(self._connect(resume=True))

    def force_resume(self) -> bool:
        """Drops the WebSocket as a network fault would and resumes (the reconnect storm); False when this
        participant is not joined now (mid-resume, stopping, ended), and nothing was done."""
        if self.outcome or self._stopping or self.session is None or self.session.state is not SessionState.JOINED:
            return False
        self._start_resume()
        return True

    def force_reconnect(self) -> bool:
        """Starts a fresh join, as the server's leave(RECONNECT) asks; counted as a reconnect. False when this
        participant is not joined now, and nothing was done."""
        if self.outcome or self._stopping or self.session is None or self.session.state is not SessionState.JOINED:
            return False
        self.ctx.counters["reconnects"] += 1
        self._restart_join()
        return True

    def _restart_join(self) -> None:
        session = self.session
        assert session is not None
        self._rejoin_started = time.perf_counter()
        self._waiting_media = False  # a fresh join: its new PeerConnections connect afresh (media_connected)
        self._begin_reconnect(self._rejoin_started)
        self._drop_connection()
        if self.leg is not None:
            self._media_step(self.leg.abandon_join)
        self._renew_session()
        self.ctx.spawn(self._connect(resume=False))

    def _begin_reconnect(self, now: float) -> None:
        if self._reconnect is None:  # a resume the server answers with "rejoin" stays in its episode
            self._reconnect = ReconnectEpisode(now)
            self.ctx.counters["reconnect_episodes"] += 1

    def _reconnected(self, now: float) -> None:
        """Back: media flows again (or, without media, the server answered). Ends the episode."""
        episode, self._reconnect = self._reconnect, None
        self._back_at = now  # the resume count starts again once this has lasted (`_start_resume`)
        if episode is not None:
            self.ctx.counters["reconnects_recovered"] += 1
            self.ctx.metrics.record("recovery", (now - episode.started_at) * 1000)

    def _attempt_failed(self, resume: bool, outcome: Outcome, detail: str) -> None:
        """A connection attempt failed: during a reconnect, try again after a backoff; otherwise it is the outcome."""
        episode = self._reconnect
        if episode is None or self._stopping or self.outcome:
            self.finish(outcome, detail)
            return
        if self._retry is not None:
            return  # the dead attempt's deadline passed during the backoff: the next attempt is already due
        now = time.perf_counter()
        self.ctx.counters["reconnect_attempts_failed"] += 1
        delay_s = episode.next_delay_s(now, f"{outcome.reason}: {detail}".rstrip(": "))
        if delay_s is None:
            self.finish(Outcome.failed("reconnect_failed"), episode.give_up_detail(now))
            return
        if not resume and self.leg is not None:
            # The failed join's media (a /rtc/v1 join's PeerConnection, opened with it) goes now: its failure at
            # its connect deadline, during the backoff, would otherwise fail the participant instead of the retry.
            self._media_step(self.leg.abandon_join)
        self._retry = asyncio.get_running_loop().call_later(delay_s, self._retry_now, resume)

    def _retry_now(self, resume: bool) -> None:
        self._retry = None
        if self.outcome or self._stopping or self.session is None:
            return
        if not resume and self.session.state is SessionState.ENDED:  # a join that timed out ended its session
            self._renew_session()
        self._drop_connection()
        self.ctx.spawn(self._connect(resume=resume))
