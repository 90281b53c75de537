"""A participant's signaling path: the ``/rtc/v1`` join target, ``auto``'s fallback on a 404, and the errors."""

from __future__ import annotations

import base64
import gzip
import urllib.parse
from collections.abc import Coroutine
from typing import Any

from livekit.protocol import rtc

from fakes import fake_run
from lkswarm.config import RunConfig
from lkswarm.engine.context import Run
from lkswarm.engine.engine import Engine
from lkswarm.engine.participant import ParticipantDriver
from lkswarm.signal.events import Joined
from lkswarm.signal.session import SessionState, SignalSession
from lkswarm.signal.websocket import Rejected


class RecordingRun(Run):
    """A `Run` that keeps the coroutines it is asked to spawn (a reconnect) instead of running them."""

    __slots__ = ("spawned",)

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self.spawned.append(coroutine)


def make_driver(signal_path: str, index: int = 0) -> tuple[ParticipantDriver, list[Coroutine[Any, Any, None]]]:
    config = RunConfig(url="ws://127.0.0.1:7880", participants=1, signal_only=True, signal_path=signal_path)
    plain = fake_run(config)
    run = RecordingRun(plain.config, plain.credentials, plain.url)
    run.spawned = []
    engine = Engine(run)
    driver = ParticipantDriver(engine.run_context, engine, index, "room", f"p{index}", 0.0)
    driver.session = SignalSession(driver.identity, "token", join_timeout_s=15)
    return driver, run.spawned


def detail_of(driver: ParticipantDriver) -> str:
    engine = driver.owner
    assert isinstance(engine, Engine) and driver.outcome is not None
    return engine.tally.failure_details[driver.outcome]


def join_request_of(target: str) -> rtc.JoinRequest:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
    wrapped = rtc.WrappedJoinRequest()
    wrapped.ParseFromString(base64.urlsafe_b64decode(query["join_request"][0]))
    request = rtc.JoinRequest()
    request.ParseFromString(gzip.decompress(wrapped.join_request))
    return request


def close_all(spawned: list[Coroutine[Any, Any, None]]) -> None:
    for coroutine in spawned:
        coroutine.close()


def test_v1_joins_and_resumes_through_the_join_request() -> None:
    driver, _ = make_driver("v1")
    assert driver.path == "v1" and not driver.may_fall_back
    join = driver._rtc_path(False, 0.0)
    assert join.startswith("/rtc/v1?access_token=token&join_request=")
    request = join_request_of(join)
    assert request.connection_settings.auto_subscribe and not request.reconnect
    assert driver.session is not None
    driver.session.participant_sid = "PA_1"
    resume = join_request_of(driver._rtc_path(True, 0.0))
    assert resume.reconnect and resume.participant_sid == "PA_1"


def test_auto_falls_back_to_v0_on_a_404_once_and_for_good() -> None:
    driver, spawned = make_driver("auto")
    assert driver.path == "v1" and driver.may_fall_back
    driver._handle_ws_event(Rejected(404, "404 page not found\n"))
    assert driver.outcome is None, "a fallback is not a failed attempt"
    assert driver.ctx.counters["signal_path_fallbacks"] == 1
    assert driver.path == "v0" and len(spawned) == 1
    assert driver._rtc_path(False, 0.0).startswith("/rtc?access_token=token&auto_subscribe=1")
    assert driver.session is not None
    driver.session.participant_sid = "PA_1"
    resume = urllib.parse.parse_qs(urllib.parse.urlsplit(driver._rtc_path(True, 0.0)).query)
    assert resume["reconnect"] == ["1"] and resume["sid"] == ["PA_1"]  # v0 sticks for resumes
    driver._handle_ws_event(Rejected(404, "404 page not found\n"))  # a 404 on /rtc is no reason to try v1 again
    assert driver.outcome is not None and driver.outcome.reason == "http_404"
    close_all(spawned)


def test_a_missing_room_is_a_404_of_v1_itself_not_a_missing_path() -> None:
    driver, spawned = make_driver("auto")
    driver._handle_ws_event(Rejected(404, "requested room does not exist"))
    assert spawned == [] and driver.ctx.counters["signal_path_fallbacks"] == 0
    assert driver.outcome is not None and driver.outcome.reason == "http_404"


def test_v1_alone_never_falls_back_and_says_why() -> None:
    driver, spawned = make_driver("v1")
    driver._handle_ws_event(Rejected(404, "404 page not found\n"))
    assert spawned == [] and driver.outcome is not None and driver.outcome.reason == "http_404"
    assert detail_of(driver) == (
        "GET /rtc/v1 returned 404: this server has no single-PC path (use --signal-path auto or v0)"
    )


def test_a_400_keeps_the_servers_message() -> None:
    driver, _ = make_driver("v1")
    driver._handle_ws_event(Rejected(400, "cannot unmarshal wrapped join request"))
    assert driver.outcome is not None and driver.outcome.reason == "http_400"
    assert detail_of(driver) == "cannot unmarshal wrapped join request"


def test_a_mix_deals_paths_by_arrival_index() -> None:
    paths = [make_driver("v1:50,v0:50", index)[0].path for index in range(6)]
    assert paths.count("v1") == 3 and paths.count("v0") == 3


def test_a_fallback_during_a_resume_resumes_on_v0() -> None:
    driver, spawned = make_driver("auto")
    assert driver.session is not None
    driver.session.state = SessionState.RESUMING
    driver._handle_ws_event(Rejected(404, "404 page not found\n"))
    assert driver.path == "v0" and len(spawned) == 1
    assert spawned[0].cr_frame.f_locals["resume"] is True  # type: ignore[attr-defined]
    close_all(spawned)


class WaitingLeg:
    """A connected media leg whose ICE restart reports media back later (or not at all: ``waits`` False)."""

    active = True
    single_pc_capable = True

    def __init__(self, waits: bool) -> None:
        self.waits = waits
        self.resumed = 0

    def on_resumed(self, now: float, last_message_seq: int) -> bool:
        self.resumed += 1
        return self.waits

    def close(self) -> None:
        pass


def resumed_event() -> Joined:
    return Joined("PA_1", "room", "", 0, "", True, 5.0, 15.0, resumed=True)


def test_a_resume_with_media_ends_when_media_flows_again() -> None:
    driver, _ = make_driver("v1")
    leg = WaitingLeg(waits=True)
    driver.leg = leg  # type: ignore[assignment]
    driver._resume_started = 10.0
    driver._begin_reconnect(10.0)
    driver._on_session_event(resumed_event(), 10.2)
    metrics, counters = driver.ctx.metrics, driver.ctx.counters
    assert leg.resumed == 1
    assert metrics.phases["resume_signal"].get_total_count() == 1
    assert metrics.phases["resume"].get_total_count() == 0 and counters["reconnects_recovered"] == 0
    driver.media_resumed(10.9)
    assert metrics.phases["resume"].get_total_count() == 1 and counters["reconnects_recovered"] == 1
    assert 880 <= metrics.phases["resume"].get_max_value() / 1000 <= 910  # ms, from the drop to media
    driver.media_resumed(11.5)  # a second report of the same restart changes nothing
    assert metrics.phases["resume"].get_total_count() == 1


def test_a_resume_whose_leg_has_nothing_to_restart_is_back_at_once() -> None:
    driver, _ = make_driver("v0")
    driver.leg = WaitingLeg(waits=False)  # type: ignore[assignment]
    driver._resume_started = 10.0
    driver._begin_reconnect(10.0)
    driver._on_session_event(resumed_event(), 10.2)
    metrics = driver.ctx.metrics
    assert metrics.phases["resume_signal"].get_total_count() == metrics.phases["resume"].get_total_count() == 1
    assert driver.ctx.counters["reconnects_recovered"] == 1
