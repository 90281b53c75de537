"""The asyncio driver of one participant: a WebSocket, a `SignalSession` and one timer.

Theory of operation
-------------------
`ParticipantDriver.run` opens ``/rtc`` at the participant's intended start and
then lives on callbacks: each WebSocket event feeds the session, the session's
frames are written, its events are turned into metrics, and its single timer
is re-armed with ``loop.call_at`` on the loop grid (`lkswarm.metrics.timer_at`), which all
participants share. No task runs per participant after the connection is open.

Outcome: every driver ends in exactly one `Outcome`: completed (alive when the run
ended), left (the server's leave with DISCONNECT, with its reason) or failed (with
a reason code); the first decision wins and later ones are ignored. The outcome of
a participant alive at the run's end is decided then (`settle_at_end`): whatever
happens to it afterwards (the room check, the stop) is counted apart, never as its
outcome.
Latencies are measured from the intended start, not the actual one, so a
late scheduler cannot hide queueing (coordinated omission).
"""

from __future__ import annotations

import asyncio
import collections
import html
import re
import time
from collections.abc import Callable
from typing import Protocol

from lkswarm.auth import ACCESS_TOKEN, mint_token
from lkswarm.engine.outcome import COMPLETED, Outcome
from lkswarm.engine.participant_reconnect import Reconnection
from lkswarm.engine.ports import MediaLeg, RunContext
from lkswarm.engine.reconnect import ReconnectEpisode
from lkswarm.engine.record import ServerQuality
from lkswarm.errors import MediaError, SignalError
from lkswarm.metrics import timer_at
from lkswarm.net.ws_driver import WebSocketProtocol, open_websocket
from lkswarm.signal.enums import DisconnectReason, LeaveAction, RequestResponseReason, SubscriptionError
from lkswarm.signal.events import (
    Failed,
    Joined,
    LeaveRequested,
    PongReceived,
    QualityReported,
    RequestFailed,
    RoomMoved,
    SessionEvent,
    SubscriptionFailed,
)
from lkswarm.signal.join_request import join_request_mapping, rtc_path, rtc_v1_path, wrap_join_request
from lkswarm.signal.paths import signal_path_for
from lkswarm.signal.session import SessionState, SignalSession
from lkswarm.signal.websocket import Closed, Event, Message, Opened, Rejected

# livekit-server's 404 for a room that must exist beforehand: an answer of /rtc/v1, so no reason to fall back.
ROOM_NOT_FOUND = "requested room does not exist"
# A timer served this late means the event loop stalled (a paused or starved process): input may be waiting
# unread in the sockets, so it is served once more after the loop has polled them, not judged from stale state.
STALLED_TIMER_S = 0.5
REJECTED_DETAIL_CHARS = 200  # of an HTTP refusal's body (once tokens and markup are out), in the outcome's detail
# Markup, but not the placeholder `Credentials.redact` leaves for an access token (it runs first).
_TAG = re.compile(r"<(?!token>)[^>]{0,200}>|<!--.*?-->", re.S)


class DriverOwner(Protocol):
    """What a driver reports to the run that owns it (the engine)."""

    def on_outcome(self, driver: ParticipantDriver, outcome: Outcome, detail: str) -> None: ...
    def on_joined(self, driver: ParticipantDriver, event: Joined) -> None: ...
    def on_pong(self, driver: ParticipantDriver) -> None: ...


def refusal_detail(body: str) -> str:
    """One line of an HTTP refusal's body: tags stripped (a proxy's HTML error page), white space folded, and any
    access token (a bearer credential, which livekit-server quotes back) replaced, so the cause that follows
    it ("token signature is invalid") is what the detail keeps."""
    text = ACCESS_TOKEN.sub("<token>", _TAG.sub(" ", body))
    text = " ".join(html.unescape(text).split())
    return text if len(text) <= REJECTED_DETAIL_CHARS else text[: REJECTED_DETAIL_CHARS - 1] + "…"


class ParticipantDriver(Reconnection):
    """One simulated participant (its reconnection: `Reconnection`, lkswarm.engine.participant_reconnect)."""

    __slots__ = (
        "_connection",
        "_counted_active",
        "_done",
        "_ended_alive",
        "_generation",
        "_messages_received",
        "_opened_at",
        "_stopping",
        "_timer",
        "_timer_at",
        "ctx",
        "identity",
        "index",
        "intended_start",
        "joined_at",
        "leg",
        "may_fall_back",
        "outcome",
        "outcome_detail",
        "owner",
        "path",
        "room",
        "seat",
        "server_quality",
        "session",
    )

    def __init__(
        self,
        run: RunContext,
        owner: DriverOwner,
        index: int,
        room: str,
        identity: str,
        intended_start: float,
        *,
        seat: int = 0,
    ) -> None:
        self.ctx = run  # the run: config, credentials, metrics, counters
        self.owner = owner  # hears of joins, pongs and the outcome
        self.index = index  # position in the arrival schedule
        self.room = room
        self.seat = seat  # position within the room; the first seats publish
        self.identity = identity
        self.intended_start = intended_start  # perf_counter time the arrival was scheduled for
        self.joined_at: float | None = None
        self.outcome: Outcome | None = None  # None while running
        self.outcome_detail = ""  # the sentence beside a failed or left outcome
        self.resumes = 0
        self.session: SignalSession | None = None
        # The session's count of messages, kept when the ended participant lets its session go (`run`).
        self._messages_received: collections.Counter[str] = collections.Counter()
        self.server_quality: ServerQuality | None = None  # what the server told us of our own connection
        # The media half, attached by the engine from the tier that claims this participant (None: signal only).
        self.leg: MediaLeg | None = None
        self._connection: WebSocketProtocol | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None  # the session deadline `_timer` is armed for
        self._done: asyncio.Future[None] | None = None
        self._stopping = False
        self._generation = 0  # bumps per connection; events of older connections are ignored
        self._resume_started = 0.0
        self._rejoin_started = 0.0
        # From a lost connection until media flows again (lkswarm.engine.reconnect); None when not reconnecting.
        self._reconnect: ReconnectEpisode | None = None
        self._back_at: float | None = None  # when the last reconnect episode got it back (perf_counter)
        self._retry: asyncio.TimerHandle | None = None  # the next reconnect attempt, waiting out its backoff
        self._counted_active = False  # in counters["active"] and latency_ms.active, once per participant
        self._waiting_media = False  # resumed; its ICE restart has not brought media back yet
        self._ended_alive = False  # joined and alive when the run ended: its outcome is completed, whatever follows
        self._opened_at: float | None = None  # when the first WebSocket upgrade completed (perf_counter)
        # The signaling path (lkswarm.signal.paths): "v1" (/rtc/v1, one PeerConnection) or "v0" (/rtc); in
        # ``auto`` a 404 on v1 switches to v0 once, for good (resumes included), as the SDKs do.
        choice = signal_path_for(index, run.config.signal_path_weights)
        self.path: str = "v0" if choice == "v0" else "v1"
        self.may_fall_back = choice == "auto"

    # -- lifecycle -----------------------------------------------------------------

    async def run(self) -> None:
        """Joins, then waits until an outcome is decided."""
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        config = self.ctx.config
        try:
            token = mint_token(self.ctx.credentials, identity=self.identity, room=self.room)
            self.session = SignalSession(
                self.identity, token, json_mode=config.json_frames, join_timeout_s=config.join_timeout_s
            )
            await self._connect(resume=False)
        except Exception as exc:  # a task that died here left the participant to be failed as 'not joined by end'
            self.finish(Outcome.failed("internal_error"), repr(exc))
        await self._done
        self._let_go()

    def _let_go(self) -> None:
        """Ended: keeps what the report reads (outcome, room, latencies, quality, the message counts) and lets the
        rest go: the session's room view and track sets, the media half, the connection. With churn, every ended
        participant kept them to the end of the run (~3 KB each). Events of the old connection are ignored."""
        session, connection = self.session, self._connection
        if session is not None:
            self._messages_received = session.messages_received
        if connection is not None:
            # Completed, then failed after the end (counted apart): `finish` left it open for `stop()`, which
            # would find no connection once it is let go. Leave politely and close it now.
            if session is not None and session.state is SessionState.JOINED:
                session.send_leave(DisconnectReason.CLIENT_INITIATED)
                self._flush()
            connection.close()
        self._generation += 1
        self._connection = None
        self.session = None
        self.leg = None

    @property
    def current_room(self) -> str:
        """The room this participant is in now: its planned one, unless the server moved it (RoomMoved)."""
        return (self.session.room_name if self.session is not None else "") or self.room

    @property
    def messages_received(self) -> collections.Counter[str]:
        """The SignalResponse messages received over every session of this participant, by kind."""
        return self.session.messages_received if self.session is not None else self._messages_received

    def _rtc_path(self, resume: bool, now: float) -> str:
        """The request target of this connection: ``/rtc`` with query parameters, or ``/rtc/v1`` with a
        ``join_request`` that carries, on a fresh join, the media half's tracks and its one offer."""
        session = self.session
        assert session is not None
        config = self.ctx.config
        resume_sid = session.participant_sid if resume else None
        if self.path == "v0":
            return rtc_path(
                session.token, auto_subscribe=config.auto_subscribe, protocol=config.protocol, resume_sid=resume_sid
            )
        media = None
        if not resume and self.leg is not None:
            media = self.leg.prepare_join(now)  # MediaError: the caller fails this participant
        request = join_request_mapping(
            auto_subscribe=config.auto_subscribe, protocol=config.protocol, media=media, resume_sid=resume_sid
        )
        return rtc_v1_path(session.token, wrap_join_request(request, config.join_request_compression))

    async def _connect(self, *, resume: bool) -> None:
        if self.outcome or self._stopping:
            # Spawned as a task (a rejoin, a retry): the participant may have ended before it ran, and then a
            # media peer made for it would live, unowned, until the tier closed.
            return
        session = self.session
        assert session is not None
        now = time.perf_counter()
        if resume:
            session.frames_to_send()  # what the lost connection never sent is stale on the new one
            session.begin_resume(now)
        else:
            session.start(now)
        self._arm_timer()
        self._generation += 1
        generation = self._generation
        if self.path == "v1" and self.leg is not None and not self.leg.single_pc_capable:
            self.path, self.may_fall_back = "v0", False  # a probe (aiortc) joins the dual-PC way
        self.ctx.counters[f"signal_path_connects:{self.path}"] += 1
        try:
            target = self._rtc_path(resume, now)
        except MediaError as exc:
            self.finish(Outcome.failed("media_setup"), str(exc))
            return
        except Exception as exc:  # our own bug (the media half's join): this participant fails with it, counted
            self.finish(Outcome.failed("internal_error"), repr(exc))
            return
        try:
            connection = await open_websocket(
                self.ctx.endpoint,
                target,
                lambda event: self._on_ws_event(event, generation),
                max_frame_bytes=self.ctx.config.max_frame_bytes,
            )
        except SignalError as exc:
            if generation == self._generation:
                self._attempt_failed(resume, Outcome.failed(exc.reason), exc.detail)
            return
        except Exception as exc:  # a participant never takes the run down with it
            self.finish(Outcome.failed("internal_error"), repr(exc))
            return
        if generation != self._generation or self.outcome or self._stopping:
            connection.close()  # superseded or finished while connecting
        else:
            self._connection = connection
            self._flush()  # frames produced by events that beat this assignment

    def stop(self, *, departure: bool = False) -> None:
        """The run is over (or, with ``departure``, this participant's planned stay): a live participant
        completes, leaves politely and disconnects; one still joining fails with where its join was stuck."""
        self._stopping = True
        session = self.session
        if not self.outcome:
            if self.joined_at is not None:
                self.finish(COMPLETED)
            elif departure:
                detail = f"its planned departure came {self._join_stage()}"
                self.finish(Outcome.failed("not_joined_by_departure"), detail)
            else:
                self.finish(Outcome.failed("not_joined_by_end"), f"the run ended {self._join_stage()}")
        if session is not None and self._connection is not None:
            if self.leg is not None:
                self._media_step(self.leg.before_leave)
            session.send_leave(DisconnectReason.CLIENT_INITIATED)
            self._flush()
            self._connection.close()

    @property
    def ended_alive(self) -> bool:
        """Joined and alive when the run ended (its outcome then is completed)."""
        return self._ended_alive

    def settle_at_end(self, interrupted_by: str | None = None) -> None:
        """The run ended (its duration, or a stop signal): decides this participant's outcome now.

        Joined and alive: completed, and any failure from here on (a server that stops answering during
        the room check) is counted apart (``counters["failed_after_end"]``), not as its outcome. Not yet
        joined: failed now, with the stage it was stuck in.
        """
        if self.outcome or self._ended_alive:
            return
        if self._reconnect is not None:
            # Joined once, but its connection was lost and it was not back when the run ended: not alive.
            lost_s = time.perf_counter() - self._reconnect.started_at
            detail = f"the run ended {lost_s:.1f} s into a reconnect that had not got it back"
            if self._reconnect.last_error:
                detail += f" (last attempt: {self._reconnect.last_error})"
            self.finish(Outcome.failed("reconnecting_at_end"), detail)
            return
        if self.joined_at is not None:
            self._ended_alive = True
            return
        if interrupted_by is not None:
            self.finish(Outcome.failed("interrupted"), f"the run was stopped ({interrupted_by}) {self._join_stage()}")
        else:
            self.finish(Outcome.failed("not_joined_by_end"), f"the run ended {self._join_stage()}")

    def _join_stage(self) -> str:
        """Where a join that never completed was stuck, for an outcome's detail."""
        if self._opened_at is None:
            return "before the WebSocket upgrade completed (no 101 from the server)"
        waited_s = time.perf_counter() - self._opened_at
        return f"while waiting for the JoinResponse ({waited_s:.1f} s after the WebSocket opened)"

    def finish(self, outcome: Outcome, detail: str = "") -> None:
        """Decides the outcome (first call wins) and releases the waiter."""
        if self.outcome:
            return
        if self._ended_alive and outcome != COMPLETED:
            # Decided at the end: alive then. What failed afterwards is counted apart, never as its outcome.
            self.ctx.counters["failed_after_end"] += 1
            self.ctx.counters[f"failed_after_end:{outcome}"] += 1
            outcome, detail = COMPLETED, ""
        self.outcome, self.outcome_detail = outcome, self.ctx.credentials.redact(detail) if detail else ""
        self.owner.on_outcome(self, outcome, detail)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if outcome != COMPLETED and self._connection is not None:
            self._connection.close()
        if self.leg is not None:
            self.leg.close()
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    # -- events ------------------------------------------------------------------------

    def _on_ws_event(self, event: Event, generation: int) -> None:
        if generation != self._generation:
            return  # a connection we already replaced (resume or reconnect)
        try:
            self._handle_ws_event(event)
        except Exception as exc:  # keep the exactly-one-outcome promise even on our own bugs
            self.finish(Outcome.failed("internal_error"), repr(exc))

    def _handle_ws_event(self, event: Event) -> None:
        session = self.session
        assert session is not None
        now = time.perf_counter()
        if isinstance(event, Message):
            session.receive_frame(event.data, now)
            self._pump(now)
        elif isinstance(event, Opened):
            if self._opened_at is None:
                self._opened_at = now
            if self.joined_at is None:
                self.ctx.metrics.record("ws_connect", (now - self.intended_start) * 1000)
        elif isinstance(event, Rejected):
            self._connection = None
            resuming = session.state is SessionState.RESUMING
            detail = refusal_detail(self.ctx.credentials.redact(event.body))
            if event.status == 404 and self.path == "v1" and ROOM_NOT_FOUND not in event.body:
                if self.may_fall_back:
                    self._fall_back_to_v0(resuming)
                    return
                detail = "GET /rtc/v1 returned 404: this server has no single-PC path (use --signal-path auto or v0)"
            self._attempt_failed(resuming, Outcome.failed(f"http_{event.status}"), detail)
        elif isinstance(event, Closed):
            self._connection = None
            if self._stopping or self.outcome:
                return
            if session.state is SessionState.JOINED and self.ctx.config.resume_on_disconnect and not event.cause:
                self._start_resume()  # not after our own refusal (a frame over the limit): that would repeat
            elif self._reconnect is not None and session.state is not SessionState.JOINED:
                # The attempt's WebSocket closed before the server answered it (a server still starting).
                detail = f"WebSocket closed (code {event.code}) {event.reason}".strip()
                self._attempt_failed(
                    session.state is SessionState.RESUMING, Outcome.failed(event.cause or "signal_closed"), detail
                )
            else:
                session.connection_closed(f"code {event.code}")
                self.finish(
                    Outcome.failed(event.cause or "signal_closed"),
                    f"WebSocket closed (code {event.code}) {event.reason}".strip(),
                )

    def _fall_back_to_v0(self, resuming: bool) -> None:
        """``auto``: the server has no ``/rtc/v1`` (404), so join (or resume) on ``/rtc`` at once and stay there.
        Not a failed attempt: the SDKs do the same, and the time it costs stays in this participant's latencies."""
        self.ctx.counters["signal_path_fallbacks"] += 1
        self.path, self.may_fall_back = "v0", False
        if self.leg is not None and not resuming:  # a resume prepared no join; its peer lives on (ICE restart)
            self.leg.discard_join()
        self._drop_connection()
        self.ctx.spawn(self._connect(resume=resuming))

    def _pump(self, now: float) -> None:
        session = self.session
        assert session is not None
        for event in session.events_received():
            self._on_session_event(event, now)
        self._flush()
        if session.state is SessionState.ENDED and not self.outcome and self._retry is None:
            # (With a retry due, the session ended with one timed-out attempt of a reconnect: the next goes on.)
            self.finish(Outcome.parse(session.end_reason or "failed:session_ended"))
        elif not self.outcome:
            self._arm_timer()

    def _on_session_event(self, event: SessionEvent, now: float) -> None:
        metrics = self.ctx.metrics
        counters = self.ctx.counters
        leg = self.leg
        if isinstance(event, Joined):
            if event.resumed:
                self._on_resumed(now, event.last_message_seq)
            else:
                if self.joined_at is None:
                    self.joined_at = now
                    metrics.record("join_response", (now - self.intended_start) * 1000)
                    if len(self.ctx.config.signal_path_weights) > 1:
                        metrics.record(f"join_response_{self.path}", (now - self.intended_start) * 1000)
                    self.owner.on_joined(self, event)
                else:  # a fresh join (leave RECONNECT): this participant is counted as joined once
                    counters["rejoins_succeeded"] += 1
                    metrics.record("rejoin", (now - self._rejoin_started) * 1000)
                    if leg is None:
                        self._reconnected(now)  # without media, back is when the server answered
                if leg is not None:
                    self._media_step(lambda: leg.on_joined(now))
        elif isinstance(event, PongReceived):
            metrics.record("ping_rtt", event.rtt_ms)
            self.owner.on_pong(self)
        elif isinstance(event, QualityReported):
            if self.server_quality is None:
                self.server_quality = ServerQuality.first(event.quality, event.score)
            else:
                self.server_quality.add(event.quality, event.score)
        elif isinstance(event, LeaveRequested):
            counters[f"leave_{LeaveAction(event.action).name.lower()}"] += 1
            if event.action == LeaveAction.RESUME:
                self._start_resume()
            elif event.action == LeaveAction.RECONNECT:
                counters["reconnects"] += 1
                self._restart_join()
        elif isinstance(event, Failed):
            detail = event.detail or self._failure_detail(event.reason)
            resumable = self.ctx.config.resume_on_disconnect and self._reconnect is None and not self._ended_alive
            if event.reason == "ping_timeout" and resumable:
                # A silent connection (no close, no reset: a half-dead link) is a lost one, as for the SDKs.
                self._start_resume()
            elif self._reconnect is not None and event.reason in ("join_timeout", "resume_timeout"):
                # One attempt of a reconnect that the server never answered: retried after a backoff like any
                # other failed attempt, until the episode gives up (reconnect_failed), as the README promises.
                self._attempt_failed(event.reason == "resume_timeout", Outcome.failed(event.reason), detail)
            else:
                self.finish(Outcome.failed(event.reason), detail)
        elif isinstance(event, RoomMoved):
            # The server moved us (MoveParticipant). The outcome stays counted in the planned room (`room`: the
            # report's rows reconcile with the plan); the room check reads the room it is in now (`current_room`).
            counters["room_moves"] += 1
        elif isinstance(event, SubscriptionFailed):
            counters[f"subscription_failed:{SubscriptionError.name_of(event.error)}"] += 1
        elif isinstance(event, RequestFailed):
            # Every non-OK answer is counted here (signal.request_responses); the media leg acts on its own ones.
            reason = RequestResponseReason.name_of(event.reason)
            counters[f"request_response:{event.request or 'unnamed'}:{reason}"] += 1
            if leg is not None:
                self._media_step(lambda: leg.on_session_event(event, now))
        elif leg is not None:
            self._media_step(lambda: leg.on_session_event(event, now))

    def _failure_detail(self, reason: str) -> str:
        """A sentence for a session failure that came without one."""
        if reason == "join_timeout":
            stage = "the WebSocket was open" if self._opened_at is not None else "the WebSocket never opened"
            return f"no JoinResponse within {self.ctx.config.join_timeout_s:g} s of connecting ({stage})"
        return ""

    def _media_step(self, step: Callable[[], None]) -> None:
        """Runs one media signaling step; a refusal fails this participant only."""
        try:
            step()
        except MediaError as exc:
            self.finish(Outcome.failed("media_setup"), str(exc))

    def media_connected(self, at: float) -> None:
        """The primary (subscriber) PeerConnection connected at ``at``: ACTIVE, counted once per participant
        (a fresh join's new PeerConnection connects again, but the participant became ACTIVE once)."""
        if self._reconnect is not None and self.session is not None and self.session.state is SessionState.JOINED:
            self._reconnected(at)  # media flows again after a reconnect
        if self._counted_active:
            return
        self._counted_active = True
        self.ctx.counters["active"] += 1
        self.ctx.metrics.record("active", (at - self.intended_start) * 1000)
        if len(self.ctx.config.signal_path_weights) > 1:
            self.ctx.metrics.record(f"active_{self.path}", (at - self.intended_start) * 1000)

    def media_output(self, step: Callable[[], None]) -> None:
        """Runs a media step that no session event triggered (a probe's answer from its own loop) and sends."""
        if self.outcome or self.session is None:
            return
        self._media_step(step)
        self._flush()

    def _flush(self) -> None:
        session = self.session
        if session is None:
            return
        connection = self._connection
        if connection is None:
            # Still connecting: the JoinResponse, the first offer and our answer can all pass
            # before `open_websocket` returns (uvloop delivers them in the same tick), so the
            # frames wait in the session until `_connect` assigns the connection and flushes.
            return
        frames = session.frames_to_send()
        if connection.is_open():
            for frame in frames:
                connection.send(frame)

    # -- timers and the connection ---------------------------------------------------------

    def _arm_timer(self) -> None:
        session = self.session
        if session is None:
            return
        deadline = session.get_timer()
        if self._timer is not None:
            if deadline == self._timer_at:
                return  # most frames move no deadline (the next ping comes before the silence limit)
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(timer_at(deadline, time.perf_counter(), loop.time()), self._on_timer)

    def _on_timer(self) -> None:
        due_at = self._timer_at
        if due_at is not None and time.perf_counter() - due_at > STALLED_TIMER_S:
            # The loop serves expired timers before it polls the sockets: after a stall, frames the server sent
            # meanwhile are still unread, and silence judged now would blame the server for our own stall. So
            # the deadline is served a millisecond later, after a poll (`_arm_timer` keeps this timer for it).
            self._timer = asyncio.get_running_loop().call_later(0.001, self._serve_timer)
            return
        self._serve_timer()

    def _serve_timer(self) -> None:
        self._timer = None
        session = self.session
        if session is None or self.outcome:
            return
        try:
            now = time.perf_counter()
            session.handle_timer(now)
            self._pump(now)
        except Exception as exc:
            self.finish(Outcome.failed("internal_error"), repr(exc))

    def _renew_session(self) -> None:
        """A fresh join's session replaces the old one (`_fresh_session`)."""
        assert self.session is not None
        self.session = self._fresh_session(self.session)

    def _fresh_session(self, session: SignalSession) -> SignalSession:
        """A new signal session for a fresh join, with ``session``'s token and settings, and its count of the
        messages received so far (the report counts every message of the run, not the last session's)."""
        fresh = SignalSession(
            self.identity, session.token, json_mode=session.json_mode, join_timeout_s=session.join_timeout_s
        )
        fresh.messages_received = session.messages_received
        return fresh

    def _drop_connection(self) -> None:
        # Events of the dropped connection (its Closed above all) must not count as the new one's.
        self._generation += 1
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()
