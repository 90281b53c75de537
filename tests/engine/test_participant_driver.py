"""The participant driver's hand-off of frames to its WebSocket, without sockets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import lkswarm.engine.engine as engine_module
from fakes import fake_run
from lkswarm.auth import Credentials
from lkswarm.engine import participant_reconnect
from lkswarm.engine.engine import Engine
from lkswarm.engine.outcome import Outcome
from lkswarm.engine.participant import ParticipantDriver, refusal_detail
from lkswarm.metrics import LOOP_CLOCK_RESOLUTION_S, LOOP_GRID_MS, loop_grid_time, timer_at
from lkswarm.signal import codec
from lkswarm.signal.enums import ConnectionQuality
from lkswarm.signal.events import QualityReported
from lkswarm.signal.session import SessionState, SignalSession


class RecordingConnection:
    def __init__(self) -> None:
        self.sent: list[bytes | str] = []
        self.open = True

    def is_open(self) -> bool:
        return self.open

    def send(self, frame: bytes | str) -> None:
        self.sent.append(frame)


def make_driver() -> ParticipantDriver:
    engine = Engine(fake_run())
    driver = ParticipantDriver(engine.run_context, engine, 0, "room", "p0", 0.0)
    driver.session = SignalSession("p0", "token", join_timeout_s=15)
    return driver


def test_frames_produced_before_the_connection_is_assigned_are_sent_once_it_is() -> None:
    """uvloop can deliver the JoinResponse and the first offer before `open_websocket` returns:
    the answer produced then must wait for the connection, not vanish (it used to, and the
    server, never hearing our answer, sent no ICE checks: ice_timeout 30 s later)."""
    driver = make_driver()
    session = driver.session
    assert session is not None
    session.send_answer("v=0\r\n", 3)
    driver._flush()  # no connection yet
    connection = RecordingConnection()
    driver._connection = connection  # type: ignore[assignment]
    driver._flush()
    [frame] = connection.sent
    assert isinstance(frame, bytes)
    answer = codec.decode_request(frame)
    assert (answer.kind, answer.answer.sdp, answer.answer.id) == ("answer", "v=0\r\n", 3)
    driver._flush()
    assert len(connection.sent) == 1  # sent once


def test_frames_for_a_closed_connection_are_not_sent() -> None:
    driver = make_driver()
    session = driver.session
    assert session is not None
    connection = RecordingConnection()
    connection.open = False
    driver._connection = connection  # type: ignore[assignment]
    session.send_answer("v=0\r\n", 3)
    driver._flush()
    assert connection.sent == []


def test_timers_fire_on_the_shared_loop_grid_never_before_their_deadline() -> None:
    # Every participant's timer is due on an instant of one grid of the loop's clock, in whole
    # milliseconds, so that uvloop fires all due on it in one pass whenever they were armed. uvloop's
    # clock may be a millisecond behind perf_counter, so a deadline is padded by that millisecond:
    # never due before it, at most a step (and that millisecond) after it.
    loop_now_s, now = 1000.0123, 55.5  # the loop's clock and perf_counter differ in origin
    for delay_s in (0.0, 0.0004, 0.0009, 0.0312, 0.049, 0.0501, 4.9996):
        at = timer_at(now + delay_s, now, loop_now_s)
        assert at >= loop_now_s + delay_s + LOOP_CLOCK_RESOLUTION_S - 1e-9
        assert at - (loop_now_s + delay_s) <= LOOP_GRID_MS / 1000 + LOOP_CLOCK_RESOLUTION_S + 1e-9
        at_ms = round(at * 1000)
        assert abs(at * 1000 - at_ms) < 1e-6 and at_ms % LOOP_GRID_MS == 0
    overdue = timer_at(now - 1.0, now, loop_now_s)
    assert overdue == loop_grid_time(loop_now_s + LOOP_CLOCK_RESOLUTION_S)  # the next instant
    # Two participants whose deadlines fall in one grid step share the instant.
    assert timer_at(now + 0.011, now, loop_now_s) == timer_at(now + 0.020, now + 0.001, loop_now_s + 0.001)


def test_loop_grid_instants_are_whole_multiples_of_the_step() -> None:
    assert loop_grid_time(12.35) == 12.35  # already on the grid: not pushed a step later by float error
    assert loop_grid_time(12.3501) == 12.4
    assert loop_grid_time(0.0) == 0.0
    assert loop_grid_time(7.001, 10) == 7.01


def test_the_room_check_names_a_view_that_holds_a_replaced_sid(monkeypatch: pytest.MonkeyPatch) -> None:
    """ListParticipants has bob under his new sid; a view still holding the old one is `stale`."""
    listed = [{"identity": "p0", "sid": "PA_p0"}, {"identity": "bob", "sid": "PA_bob_new"}]

    class FakeRoomService:
        def __init__(self, *_args: object) -> None:
            pass

        def list_participants(self, room: str) -> list[dict[str, str]]:
            assert room == "room"
            return listed

    monkeypatch.setattr(engine_module, "RoomService", FakeRoomService)
    monkeypatch.setattr(engine_module, "ROOM_CHECK_TIMEOUT_S", 0.0)
    driver = make_driver()
    engine = driver.owner
    assert isinstance(engine, Engine)
    engine.drivers = [driver]
    driver.joined_at = 1.0
    session = driver.session
    assert session is not None
    session.participant_sid = "PA_p0"
    session.others = {"bob": "PA_bob_old"}
    check = asyncio.run(engine._verify_rooms())
    assert check["mismatched"] == 1 and check["matched"] == 0
    assert check["examples"] == [{"identity": "p0", "room": "room", "missing": [], "extra": [], "stale": ["bob"]}]
    session.others = {"bob": "PA_bob_new"}
    assert asyncio.run(engine._verify_rooms())["matched"] == 1


def test_an_http_refusal_keeps_its_cause_and_drops_tokens_and_markup() -> None:
    token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + "eyJpc3MiOiJrZXkiLCJ2aWRlbyI6e30" * 8 + ".c2lnbmF0dXJl"
    body = (
        f"invalid token: {token}, error: go-jose/go-jose: error in cryptographic primitive: token signature is invalid"
    )
    detail = refusal_detail(body)
    assert detail.endswith("token signature is invalid") and "eyJ" not in detail
    assert detail.startswith("invalid token: <token>, error")
    # As the driver calls it, after the credentials' own redaction: the placeholder was stripped as markup.
    redacted = refusal_detail(Credentials("key", "s" * 32).redact(f"/rtc?access_token={token}&auto_subscribe=1"))
    assert redacted == "/rtc?access_token=<token>&auto_subscribe=1", redacted
    page = (
        "<!DOCTYPE html>\n<html>\n<head><title>404 Not Found</title></head>\n<body>\n<h1>Not Found</h1>\n</body></html>"
    )
    assert refusal_detail(page) == "404 Not Found Not Found"
    assert len(refusal_detail("x " * 500)) == 200


def test_the_driver_keeps_the_last_and_the_worst_quality_the_server_told_it() -> None:
    driver = make_driver()
    assert driver.server_quality is None
    for quality, score in [
        (ConnectionQuality.EXCELLENT, 4.5),
        (ConnectionQuality.LOST, 3.9),  # LOST ranks below POOR although its value is higher
        (ConnectionQuality.POOR, 2.1),
        (ConnectionQuality.EXCELLENT, 4.4),
    ]:
        driver._on_session_event(QualityReported(quality, score), 1.0)
    quality = driver.server_quality
    assert quality is not None
    assert (quality.last, quality.last_score) == (ConnectionQuality.EXCELLENT, 4.4)
    assert (quality.worst, quality.worst_score, quality.reports) == (ConnectionQuality.LOST, 2.1, 4)


class _LegThatBreaks:
    """The media half of a /rtc/v1 join, failing with something that is not a MediaError (a bug of ours)."""

    single_pc_capable = True

    def prepare_join(self, now: float) -> object:
        raise OverflowError("can't convert negative int to unsigned")

    def close(self) -> None:
        return None


def test_an_unexpected_error_in_the_media_join_fails_the_participant_with_it() -> None:
    """A non-MediaError from the media half's join (a bad --seed reached the hub as an OverflowError) killed the
    connect task: the participant was later failed as 'not joined by end' with a made-up cause, the server's."""
    driver = make_driver()
    driver.path = "v1"
    driver.leg = _LegThatBreaks()  # type: ignore[assignment]

    async def connect() -> None:
        await driver._connect(resume=False)

    asyncio.run(connect())
    assert driver.outcome is not None and driver.outcome.reason == "internal_error", driver.outcome


def test_a_planned_departure_during_a_join_says_so_not_that_the_run_ended() -> None:
    """A ramp-down's newest joiner, still waiting for its JoinResponse when its departure came, was failed as
    not_joined_by_end, 'the run ended ...', while the run went on."""
    driver = make_driver()
    driver.stop(departure=True)
    assert driver.outcome is not None and driver.outcome.reason == "not_joined_by_departure"
    joined = make_driver()
    joined.joined_at = 1.0
    joined.stop(departure=True)
    assert joined.outcome is not None and joined.outcome.kind.value == "completed"


def test_a_storm_drop_of_a_participant_not_joined_does_nothing_and_says_so() -> None:
    """The storm counted every target as dropped, also those mid-resume or stopping that force_* left alone."""
    driver = make_driver()  # its session never joined
    assert driver.force_resume() is False and driver.force_reconnect() is False
    assert driver.ctx.counters["reconnects"] == 0


class _OpenConnection:
    def __init__(self) -> None:
        self.open = True

    def is_open(self) -> bool:
        return self.open

    def send(self, frame: bytes | str) -> None:
        return None

    def close(self, code: int = 1000) -> None:
        self.open = False


def test_a_resume_the_server_never_answers_is_retried_until_the_episode_gives_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A resume attempt whose WebSocket opened but got no answer before join_timeout_s failed the participant
    at once as resume_timeout: no backoff, no retry, none of the README's 12 attempts or 30 s."""
    import time

    import lkswarm.engine.participant as participant_module
    import lkswarm.engine.reconnect as reconnect_module
    from lkswarm.signal.websocket import Closed, Message, Opened

    monkeypatch.setattr(reconnect_module, "MAX_ATTEMPTS", 3)
    monkeypatch.setattr(reconnect_module, "BASE_S", 0.01)
    opened = []

    async def open_websocket(endpoint: object, target: str, on_event: object, **_: object) -> _OpenConnection:
        opened.append(target)
        loop = asyncio.get_running_loop()
        loop.call_soon(on_event, Opened())
        if len(opened) == 1:  # the first join is answered; every resume after it is not
            join = {"join": {"participant": {"sid": "PA_1", "identity": "p0"}, "room": {"name": "room"}}}
            loop.call_soon(on_event, Message(codec.encode_response(join)))
        return _OpenConnection()

    monkeypatch.setattr(participant_module, "open_websocket", open_websocket)

    async def scenario() -> ParticipantDriver:
        engine = Engine(fake_run())
        run = engine.run_context
        run.config = run.config.replace(resume_on_disconnect=True, join_timeout_s=0.2, signal_path="v0")
        driver = ParticipantDriver(run, engine, 0, "room", "p0", time.perf_counter())
        engine.drivers.append(driver)
        engine.tally.alive += 1
        task = asyncio.create_task(driver.run())
        await asyncio.sleep(0.1)
        assert driver.joined_at is not None
        driver._on_ws_event(Closed(1006, "lost"), driver._generation)  # the network drops the connection
        await asyncio.wait_for(task, 5)
        return driver

    driver = asyncio.run(scenario())
    assert driver.outcome is not None and driver.outcome.reason == "reconnect_failed", driver.outcome
    assert len(opened) == 1 + 3, opened  # the join, then three resume attempts, each timed out
    assert driver.ctx.counters["reconnect_attempts_failed"] == 3


def test_a_connect_that_runs_after_the_participant_ended_makes_nothing() -> None:
    """A rejoin's or retry's connect task that ran after the participant finished made a hub peer and opened a
    WebSocket for it anyway."""
    driver = make_driver()
    driver.path = "v1"
    driver.leg = _LegThatBreaks()  # type: ignore[assignment]  # would raise if its join were prepared
    driver.finish(Outcome.failed("ice_timeout"), "ended first")

    async def connect() -> None:
        await driver._connect(resume=False)

    asyncio.run(connect())
    assert driver.outcome is not None and driver.outcome.reason == "ice_timeout"
    assert driver.ctx.counters["signal_path_connects:v1"] == 0


def _joined(driver_target: list[str], ping_timeout_s: int = 0) -> bytes:
    join: dict[str, object] = {"participant": {"sid": "PA_1", "identity": "p0"}, "room": {"name": "room"}}
    if ping_timeout_s:
        join.update(ping_timeout=ping_timeout_s, ping_interval=ping_timeout_s)
    return codec.encode_response({"join": join})


def _answering_server(monkeypatch: pytest.MonkeyPatch, opened: list[str], *, ping_timeout_s: int = 0) -> None:
    """A fake `open_websocket`: the first connection is answered with a JoinResponse, every resume with a
    ReconnectResponse; after that the fake server says nothing (no pongs)."""
    import lkswarm.engine.participant as participant_module
    from lkswarm.signal.websocket import Message, Opened

    async def open_websocket(endpoint: object, target: str, on_event: object, **_: object) -> _OpenConnection:
        opened.append(target)
        loop = asyncio.get_running_loop()
        loop.call_soon(on_event, Opened())
        answer = _joined(opened, ping_timeout_s) if len(opened) == 1 else codec.encode_response({"reconnect": {}})
        loop.call_soon(on_event, Message(answer))
        return _OpenConnection()

    monkeypatch.setattr(participant_module, "open_websocket", open_websocket)


def _running_driver(**config: object) -> tuple[Engine, ParticipantDriver]:
    import time

    engine = Engine(fake_run())
    run = engine.run_context
    run.config = run.config.replace(signal_path="v0", **config)
    driver = ParticipantDriver(run, engine, 0, "room", "p0", time.perf_counter())
    engine.drivers.append(driver)
    engine.tally.alive += 1
    return engine, driver


def test_a_silent_connection_is_resumed_when_resumes_are_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A half-dead link (no close, no reset) ends in ping_timeout; with --resume-on-disconnect the SDKs resume
    it, and so must we: it failed at once, resumes_attempted 0."""
    opened: list[str] = []
    _answering_server(monkeypatch, opened, ping_timeout_s=1)

    async def scenario() -> ParticipantDriver:
        _engine, driver = _running_driver(resume_on_disconnect=True)
        task = asyncio.create_task(driver.run())
        await asyncio.sleep(1.6)  # past the 1 s silence limit the JoinResponse set
        driver.stop()
        await asyncio.wait_for(task, 5)
        return driver

    driver = asyncio.run(scenario())
    assert len(opened) == 2 and "reconnect=1" in opened[1], opened
    assert driver.ctx.counters["resumes_attempted"] == 1 and driver.ctx.counters["resumes_succeeded"] == 1
    assert driver.outcome is not None and driver.outcome.kind.value == "completed", driver.outcome


def test_a_silent_connection_fails_with_ping_timeout_when_resumes_are_off(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    _answering_server(monkeypatch, opened, ping_timeout_s=1)

    async def scenario() -> ParticipantDriver:
        _engine, driver = _running_driver(resume_on_disconnect=False)
        await asyncio.wait_for(driver.run(), 5)
        return driver

    driver = asyncio.run(scenario())
    assert driver.outcome is not None and driver.outcome.reason == "ping_timeout", driver.outcome
    assert len(opened) == 1


def test_the_resume_limit_counts_resumes_in_a_row_not_over_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rolling restart: each outage was recovered, yet the fourth failed at once with resume_limit."""
    from lkswarm.engine.participant_reconnect import MAX_RESUMES
    from lkswarm.signal.websocket import Closed

    monkeypatch.setattr(participant_reconnect, "STABLE_AFTER_RESUME_S", 0.02)  # each outage is over after 20 ms
    opened: list[str] = []
    _answering_server(monkeypatch, opened)

    async def scenario() -> ParticipantDriver:
        _engine, driver = _running_driver(resume_on_disconnect=True)
        task = asyncio.create_task(driver.run())
        await asyncio.sleep(0.05)
        for _ in range(MAX_RESUMES + 2):
            driver._on_ws_event(Closed(1006, "lost"), driver._generation)  # an outage, recovered below
            await asyncio.sleep(0.05)
        driver.stop()
        await asyncio.wait_for(task, 5)
        return driver

    driver = asyncio.run(scenario())
    assert driver.ctx.counters["resumes_succeeded"] == MAX_RESUMES + 2
    assert driver.ctx.counters["reconnects_recovered"] == MAX_RESUMES + 2
    assert driver.outcome is not None and driver.outcome.kind.value == "completed", driver.outcome


def test_a_participant_still_reconnecting_when_the_run_ends_is_not_alive() -> None:
    """The server was dead for the run's last 12 s; its participants read completed, alive and ACTIVE."""
    from lkswarm.engine.reconnect import ReconnectEpisode

    driver = make_driver()
    driver.joined_at = 1.0
    episode = ReconnectEpisode(0.0)
    episode.next_delay_s(0.5, "connect_failed: refused")
    driver._reconnect = episode
    driver.settle_at_end()
    assert driver.outcome is not None and driver.outcome.reason == "reconnecting_at_end"
    assert not driver.ended_alive
    [row] = driver.owner.tally.failed_rows  # type: ignore[attr-defined]
    assert "into a reconnect" in row.detail and "last attempt: connect_failed: refused" in row.detail


def test_a_fresh_join_keeps_the_count_of_messages_received_before_it() -> None:
    driver = make_driver()
    assert driver.session is not None
    driver.session.messages_received.update({"join": 1, "update": 3})
    fresh = driver._fresh_session(driver.session)
    fresh.messages_received["join"] += 1
    assert fresh.messages_received == {"join": 2, "update": 3}


def test_a_timer_served_after_a_stall_reads_the_sockets_before_judging_silence() -> None:
    """After a stall the loop runs expired timers before it polls: a silence decided then blamed the server
    for frames that sat unread in our own sockets."""
    import time

    served: list[float] = []

    class RecordingSession(SignalSession):
        def handle_timer(self, now: float) -> None:
            served.append(now)

    async def scenario() -> tuple[int, int]:
        driver = make_driver()
        driver.session = RecordingSession("p0", "token", join_timeout_s=15)
        driver._timer_at = time.perf_counter() - 2.0  # due two seconds ago: the loop was stalled
        driver._on_timer()
        deferred = len(served)
        await asyncio.sleep(0.05)
        return deferred, len(served)

    deferred, later = asyncio.run(scenario())
    assert (deferred, later) == (0, 1)


def test_a_participant_the_server_moved_is_checked_in_its_new_room_and_counted_in_its_planned_one() -> None:
    """The room check read the room the driver started in, forever; the report's rows must still reconcile with
    the plan (a move into an unplanned room, a breakout, must not cost the run its report)."""
    from lkswarm.signal.events import RoomMoved

    driver = make_driver()
    assert driver.session is not None
    driver.session.room_name = "breakout"  # what the session's room_moved handler sets
    driver._on_session_event(RoomMoved("breakout", "new-token"), 1.0)
    assert driver.current_room == "breakout" and driver.room == "room"
    assert driver.ctx.counters["room_moves"] == 1


def test_a_server_that_accepts_every_resume_and_drops_it_at_once_is_not_resumed_forever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Counting resumes 'in a row' from the server's answer let a flapping server take 424 connections in
    0.5 s from one participant: back counts only once it has held."""
    import lkswarm.engine.participant as participant_module
    from lkswarm.signal.websocket import Closed, Message, Opened

    opened: list[str] = []

    async def open_websocket(endpoint: object, target: str, on_event: Any, **_: object) -> _OpenConnection:
        opened.append(target)
        loop = asyncio.get_running_loop()
        loop.call_soon(on_event, Opened())
        answer = _joined(opened) if len(opened) == 1 else codec.encode_response({"reconnect": {}})
        loop.call_soon(on_event, Message(answer))
        if len(opened) > 1:
            loop.call_later(0.005, on_event, Closed(1006, "flap"))  # accepted, then dropped at once
        return _OpenConnection()

    monkeypatch.setattr(participant_module, "open_websocket", open_websocket)

    async def scenario() -> ParticipantDriver:
        _engine, driver = _running_driver(resume_on_disconnect=True)
        task = asyncio.create_task(driver.run())
        await asyncio.sleep(0.05)
        driver._on_ws_event(Closed(1006, "lost"), driver._generation)
        await asyncio.wait_for(task, 5)
        return driver

    driver = asyncio.run(scenario())
    assert driver.outcome is not None and driver.outcome.reason == "resume_limit", driver.outcome
    assert len(opened) == 1 + participant_reconnect.MAX_RESUMES, len(opened)


def test_a_participant_failed_after_the_end_still_leaves_and_closes_its_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Completed at the end, then a failure during the room check: finish kept the connection for stop(), which
    found none once the participant was let go, so the WebSocket stayed open and no leave was sent."""
    connections: list[_OpenConnection] = []
    opened: list[str] = []
    _answering_server(monkeypatch, opened)
    import lkswarm.engine.participant as participant_module

    answering = participant_module.open_websocket

    async def recording(*args: Any, **kwargs: Any) -> _OpenConnection:
        connection: _OpenConnection = await answering(*args, **kwargs)
        connections.append(connection)
        return connection

    monkeypatch.setattr(participant_module, "open_websocket", recording)

    async def scenario() -> ParticipantDriver:
        _engine, driver = _running_driver()
        task = asyncio.create_task(driver.run())
        await asyncio.sleep(0.05)
        driver.settle_at_end()
        driver.finish(Outcome.failed("ping_timeout"), "no frame")  # during the room check: counted apart
        await asyncio.wait_for(task, 5)
        driver.stop()
        return driver

    driver = asyncio.run(scenario())
    assert driver.outcome is not None and driver.outcome.kind.value == "completed"
    assert [c.open for c in connections] == [False]


def test_an_ended_participant_lets_its_session_go_and_keeps_its_message_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With churn every ended participant kept its room view, track sets and connection to the run's end."""
    from lkswarm.signal.websocket import Closed

    opened: list[str] = []
    _answering_server(monkeypatch, opened)

    async def scenario() -> ParticipantDriver:
        _engine, driver = _running_driver()
        task = asyncio.create_task(driver.run())
        await asyncio.sleep(0.05)
        generation = driver._generation
        driver.finish(Outcome.left("PARTICIPANT_REMOVED"))
        await asyncio.wait_for(task, 5)
        driver._on_ws_event(Closed(1000, ""), generation)  # the old connection's last event: ignored
        return driver

    driver = asyncio.run(scenario())
    assert driver.session is None and driver.leg is None and driver._connection is None
    assert driver.messages_received == {"join": 1}


def test_a_fresh_join_releases_the_old_joins_media_before_its_new_session_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """leave(RECONNECT): the media half's old peer must go when the fresh join begins, not when it is answered;
    what that peer reported in between was taken as the new join's."""
    driver = make_driver()
    session = driver.session
    assert session is not None
    session.state = SessionState.JOINED
    steps: list[str] = []

    class RecordingLeg:
        def abandon_join(self) -> None:
            steps.append("abandon" if driver.session is session else "abandon after the new session")

    driver.leg = RecordingLeg()  # type: ignore[assignment]
    spawned: list[Any] = []
    monkeypatch.setattr(type(driver.ctx), "spawn", lambda ctx, coroutine: spawned.append(coroutine))
    assert driver.force_reconnect() is True
    assert steps == ["abandon"] and driver.session is not session and len(spawned) == 1
    spawned[0].close()  # the fresh join's connect, never run


class RecordingLeg:
    """A media leg that records which of its join operations the driver called."""

    def __init__(self, steps: list[str]) -> None:
        self.steps = steps

    def abandon_join(self) -> None:
        self.steps.append("abandon")

    def discard_join(self) -> None:
        self.steps.append("discard")


def test_a_failed_join_attempt_of_a_reconnect_releases_its_media_before_the_backoff() -> None:
    """A /rtc/v1 join's PeerConnection is opened with the join: when the join timed out, that peer lived through
    the backoff, and its failure at its connect deadline failed the participant instead of the retry going on."""
    from lkswarm.engine.reconnect import ReconnectEpisode

    async def scenario() -> list[str]:
        driver = make_driver()
        steps: list[str] = []
        driver.leg = RecordingLeg(steps)  # type: ignore[assignment]
        driver._reconnect = ReconnectEpisode(time.perf_counter())
        driver._attempt_failed(False, Outcome.failed("join_timeout"), "no JoinResponse")
        assert driver._retry is not None and driver.outcome is None
        driver._retry.cancel()
        driver._attempt_failed(True, Outcome.failed("resume_timeout"), "")  # a resume's peer lives on
        return steps

    assert asyncio.run(scenario()) == ["abandon"]


def test_a_resume_that_falls_back_to_rtc_keeps_its_media(monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto``: a /rtc/v1 resume answered 404 went on /rtc after discarding the join's media, which closed the
    live, connected PeerConnection the resume was to restart."""
    driver = make_driver()
    steps: list[str] = []
    driver.leg = RecordingLeg(steps)  # type: ignore[assignment]
    spawned: list[Any] = []
    monkeypatch.setattr(type(driver.ctx), "spawn", lambda ctx, coroutine: spawned.append(coroutine))
    driver._fall_back_to_v0(resuming=True)
    driver._fall_back_to_v0(resuming=False)
    assert steps == ["discard"] and len(spawned) == 2
    for coroutine in spawned:
        coroutine.close()
