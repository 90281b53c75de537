"""Report warnings for what the server did to a run and for a stalled generator, from a socket-free engine run.

Participants "join" at once (`ParticipantDriver.run` is replaced), so the engine's record and the report built
from it are tested without a server, as in ``test_open_plan.py``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from fakes import fake_run
from lkswarm.config import RunConfig
from lkswarm.engine.engine import Engine
from lkswarm.engine.outcome import Outcome
from lkswarm.engine.participant import ParticipantDriver
from lkswarm.report.build import build_report
from lkswarm.signal import codec
from lkswarm.signal.session import SignalSession


def _joining_with(on_join: Any) -> Any:
    async def run(self: ParticipantDriver) -> None:
        self._done = asyncio.get_running_loop().create_future()
        self.session = SignalSession(self.identity, "token", join_timeout_s=15)
        self.joined_at = time.perf_counter()
        on_join(self)
        await self._done

    return run


def _report(
    monkeypatch: pytest.MonkeyPatch, on_join: Any, scraped: dict[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    monkeypatch.setattr(ParticipantDriver, "run", _joining_with(on_join))
    settings: dict[str, Any] = {"participants": 4, "rate": 100, "signal_only": True, "duration_s": 0.3}
    config = RunConfig(url="ws://127.0.0.1:7880", verify_rooms=False, **(settings | fields))
    engine = Engine(fake_run(config))

    async def main() -> dict[str, Any]:
        return build_report(await engine.run(), server_metrics=scraped)

    return asyncio.run(main())


def test_participants_the_server_removed_are_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """DeleteRoom or a server shutdown removed everyone: exit 0 and no word of it in the report."""

    def removed_if_even(driver: ParticipantDriver) -> None:
        if driver.index % 2 == 0:
            driver.finish(Outcome.left("ROOM_DELETED"))

    report = _report(monkeypatch, removed_if_even)
    assert report["participants"]["outcomes"]["left"] == 2
    [warning] = [w for w in report["warnings"] if "removed" in w]
    assert warning.startswith("the server removed 2 participant(s) (ROOM_DELETED 2)") and "left==0" in warning


def test_the_servers_mutes_and_unpublishes_of_our_tracks_are_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def muted(driver: ParticipantDriver) -> None:
        assert driver.session is not None
        driver.session.messages_received.update({"mute": 1, "track_unpublished": driver.index})

    report = _report(monkeypatch, muted)
    [warning] = [w for w in report["warnings"] if "muted" in w]
    assert "tracks 4 time(s) and unpublished 6 of them" in warning
    assert not any("removed" in w for w in report["warnings"])


def test_the_servers_refusals_of_our_requests_are_counted_and_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request_response the server sent with a non-OK reason (a mute of a track it no longer has) was dropped:
    nothing counted it, nothing said so."""
    answers = [
        {"requestResponse": {"requestId": 3, "reason": "NOT_FOUND", "message": "gone", "mute": {"sid": "TR_x"}}},
        {"requestResponse": {"requestId": 4, "reason": "QUEUED", "message": "later"}},  # taken, not refused
    ]

    def refused(driver: ParticipantDriver) -> None:
        session = driver.session
        assert session is not None
        for answer in answers[: 1 + driver.index % 2]:
            session.receive_frame(codec.encode_response(answer), 1.0)
        for event in session.events_received():
            driver._on_session_event(event, 1.0)

    report = _report(monkeypatch, refused)
    assert report["signal"]["request_responses"] == {"mute:NOT_FOUND": 4, "unnamed:QUEUED": 2}
    [warning] = [w for w in report["warnings"] if "refused" in w]
    assert warning.startswith("the server refused 4 of our participants' requests (mute:NOT_FOUND 4;"), warning


def test_one_long_stall_of_the_event_loop_makes_the_run_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 24 s stall (a paused generator) is one tick in hundreds: the p99 rule alone kept the run valid."""

    def stalled_once(driver: ParticipantDriver) -> None:
        if driver.index == 0:
            for _ in range(500):  # a calm run's ticks, so that the stall is past its p99
                driver.ctx.metrics.record_loop_lag(1.0)
            driver.ctx.metrics.record_loop_lag(1500.0)

    report = _report(monkeypatch, stalled_once)
    assert report["generator"]["valid"] is False
    assert any(w.startswith("the event loop stalled for 1.5 s once") for w in report["warnings"]), report["warnings"]
    calm = _report(monkeypatch, lambda driver: None)
    assert calm["generator"]["valid"] is True


def test_a_run_that_ends_before_its_duration_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """Everyone failed at once: the run ended after 0.1 s of its 8 and its report did not say why."""

    def refused(driver: ParticipantDriver) -> None:
        driver.finish(Outcome.failed("connect_failed"), "refused")

    report = _report(monkeypatch, refused, duration_s=8)
    assert report["duration_s"] < 2
    [note] = [n for n in report["notes"] if n.startswith("the run ended after")]
    assert note.endswith("of its 8 s: every participant had ended and none was left to start"), note
    calm = _report(monkeypatch, lambda driver: None)
    assert not any(n.startswith("the run ended after") for n in calm["notes"])


def test_a_loop_lag_p99_is_judged_over_enough_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that ended at once (everyone refused) had 5 ticks: one 25 ms blip was its 'p99', and the report said
    the generator was saturated."""

    def ticks(calm: int, slow: int) -> Any:
        def record(driver: ParticipantDriver) -> None:
            if driver.index == 0:
                for lag_ms in [1.0] * calm + [30.0] * slow:
                    driver.ctx.metrics.record_loop_lag(lag_ms)

        return record

    few = _report(monkeypatch, ticks(3, 1))
    assert few["generator"]["valid"] is True and not any("event-loop lag" in w for w in few["warnings"])
    many = _report(monkeypatch, ticks(190, 10))  # 5 % of 200 ticks at 30 ms: a p99 of 30 ms
    assert many["generator"]["valid"] is False
    assert any(w.startswith("event-loop lag p99 30.0 ms > 20 ms") for w in many["warnings"]), many["warnings"]


def test_a_run_leaves_nothing_frozen_for_the_next_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """gc.freeze() at the start of a run was never undone: each run's engine, plan and clips stayed in the
    permanent generation, and a Ray actor's or an embedding program's memory grew run after run."""
    import gc

    _report(monkeypatch, lambda driver: None)
    assert gc.get_freeze_count() == 0


def test_server_metrics_that_could_not_be_read_are_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """--server-metrics at a wrong port: exit 0, and the reason only deep in the JSON."""
    url = "http://127.0.0.1:9/metrics?token=abc"
    unread = {"available": False, "reason": f"{url}: Connection refused"}
    report = _report(monkeypatch, lambda driver: None, unread, server_metrics=url)
    [warning] = [w for w in report["warnings"] if "metrics" in w]
    assert warning.startswith("the server's metrics at http://127.0.0.1:9/metrics could not be read (http://127")
    assert "token" not in warning


def test_server_metrics_must_be_an_http_url() -> None:
    from lkswarm.errors import ConfigError

    for bad in ("127.0.0.1:9100", "ws://127.0.0.1:9100/metrics", "http://", "http://u:pw@127.0.0.1:9100/metrics"):
        with pytest.raises(ConfigError, match=r"server_metrics must (be|not carry)"):
            RunConfig(url="ws://127.0.0.1:7880", server_metrics=bad)
    RunConfig(url="ws://127.0.0.1:7880", server_metrics="https://sfu.example:6789/metrics")


def test_timeline_intervals_without_joins_or_media_have_no_latency_or_loss() -> None:
    """join_p50_ms and join_p99_ms read 0.0 (and so did the loss ratio) in intervals with nothing to measure."""
    from lkswarm.engine.timeline import Sampler, Snapshot

    sampler = Sampler(source=None, observers=[])  # type: ignore[arg-type]
    sampler.samples = [
        Snapshot(t_s=1.0, join_count=3, join_p50_ms=40.0, join_p99_ms=90.0, media_packets_per_s=50.0),
        Snapshot(t_s=2.0, join_count=0, media_packets_per_s=0.0),
    ]
    timeline = sampler.report()
    assert timeline["join_p50_ms"] == [40.0, None] and timeline["join_p99_ms"] == [90.0, None]
    assert timeline["media_loss_ratio"] == [0.0, None]
