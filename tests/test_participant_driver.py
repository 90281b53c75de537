"""The participant driver's hand-off of frames to its WebSocket, without sockets."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

import lkswarm.engine as engine_module
from lkswarm import codec
from lkswarm.auth import Credentials
from lkswarm.config import RunConfig
from lkswarm.engine import Engine
from lkswarm.media import MediaParticipant, MediaTotals
from lkswarm.metrics import record_buckets_us, summarize
from lkswarm.participant import ParticipantDriver, timer_delay_s
from lkswarm.session import SignalSession
from lkswarm.timeline import Sampler


class RecordingConnection:
    def __init__(self) -> None:
        self.sent: list[bytes | str] = []
        self.open = True

    def is_open(self) -> bool:
        return self.open

    def send(self, frame: bytes | str) -> None:
        self.sent.append(frame)


def make_driver() -> ParticipantDriver:
    config = RunConfig(url="ws://127.0.0.1:7880", rooms=1, participants=1, signal_only=True)
    engine = Engine(config, Credentials("key", "secret-0123456789abcdef0123456789abcdef"), config.url)
    driver = ParticipantDriver(engine, 0, "room", "p0", 0.0)
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


def test_timer_delays_round_up_to_whole_milliseconds_so_libuv_never_fires_early() -> None:
    # libuv rounds a delay to the nearest millisecond: 0.4 ms became 0 and the driver spun on
    # its timer until the deadline passed. Every delay is now whole milliseconds, never shorter.
    for delay_s in (0.0001, 0.0004, 0.0009, 0.0015, 0.0031, 4.9996):
        rounded_s = timer_delay_s(100.0 + delay_s, 100.0)
        assert rounded_s >= delay_s
        assert rounded_s - delay_s <= 0.001 + 1e-9
        assert abs(rounded_s * 1000 - round(rounded_s * 1000)) < 1e-6
    assert timer_delay_s(99.0, 100.0) == 0.0  # overdue: at once


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
    driver.engine.drivers = [driver]
    driver.joined_at = 1.0
    session = driver.session
    assert session is not None
    session.participant_sid = "PA_p0"
    session.others = {"bob": "PA_bob_old"}
    check = asyncio.run(driver.engine._verify_rooms())
    assert check["mismatched"] == 1 and check["matched"] == 0
    assert check["examples"] == [{"identity": "p0", "room": "room", "missing": [], "extra": [], "stale": ["bob"]}]
    session.others = {"bob": "PA_bob_new"}
    assert asyncio.run(driver.engine._verify_rooms())["matched"] == 1


def test_a_published_track_that_sent_nothing_is_named_in_the_report() -> None:
    """tracks_missing alone says something went wrong; the examples and the warning say where."""
    driver = make_driver()
    session = driver.session
    assert session is not None
    session.others = {"pub-a": "PA_a", "pub-b": "PA_b"}
    session.tracks_by_participant = {"PA_a": frozenset({"TR_heard"}), "PA_b": frozenset({"TR_silent"})}
    heard = {"track_id": "TR_heard", "kind": "audio", "codec": "audio/opus", "packets": 50, "bytes": 5000}
    heard.update(expected=50, lost=0)
    stats = {
        "datagrams_sent": 0,
        "bytes_sent": 0,
        "frames_sent": 0,
        "frames_skipped": 0,
        "foreign_datagrams": 0,
        "keyframe_requests": 0,
        "tracks": [{**heard, "jitter_ms": 0.5}],
    }
    totals = MediaTotals()
    MediaParticipant.account(SimpleNamespace(driver=driver), stats, totals)  # type: ignore[arg-type]
    assert (totals.tracks_received, totals.tracks_missing) == (1, 1)
    assert totals.report()["tracks_by_codec"] == {"audio/opus": 1}
    example = {"subscriber": "p0", "room": "room", "publisher": "pub-b", "track_sid": "TR_silent"}
    assert totals.report()["missing_examples"] == [example]
    [warning] = totals.warnings()
    assert "p0 had nothing of pub-b's TR_silent" in warning
    assert MediaTotals().warnings() == []


def test_frames_a_stalled_media_thread_skipped_are_counted_and_warned_about() -> None:
    """Skipped frames mean the server was offered less than planned: the report must say so, and why."""
    totals = MediaTotals()
    stats = {
        "datagrams_sent": 900,
        "bytes_sent": 90_000,
        "frames_sent": 950,
        "frames_skipped": 50,
        "foreign_datagrams": 0,
        "keyframe_requests": 0,
        "tracks": [],
    }
    MediaParticipant.account(SimpleNamespace(driver=make_driver()), stats, totals)  # type: ignore[arg-type]
    assert totals.report()["frames_skipped"] == 50
    [warning] = totals.warnings()
    assert "skipped 50 frame(s) (5.00% of those due)" in warning and "media thread" in warning


def test_the_media_thread_lag_buckets_replay_into_an_hdr_histogram() -> None:
    totals = MediaTotals()
    record_buckets_us(totals.timer_lag, [(500, 98), (30_720, 1), (45_000, 1)])
    lag = summarize(totals.timer_lag)
    assert lag["count"] == 100 and 45.0 <= lag["max"] <= 45.05  # HdrHistogram at 3 significant digits
    assert 0.5 <= lag["p50"] <= 0.501 and 30.72 <= lag["p99"] <= 30.75
    record_buckets_us(totals.timer_lag, [(0, 1), (10**13, 1)])  # clamped into range, never an exception
    assert summarize(totals.timer_lag)["count"] == 102


def test_the_live_verdict_turns_invalid_when_the_media_thread_lags() -> None:
    """The once-a-second check (live view, Prometheus) sees what the end-of-run report sees."""

    class FakeHub:
        def __init__(self, served: int, late: int) -> None:
            self.answer = (served, late)

        def timer_lag_above(self, limit_s: float) -> tuple[int, int]:
            assert limit_s == 0.02
            return self.answer

    def verdict(hub: FakeHub | None) -> str:
        engine = SimpleNamespace(media=SimpleNamespace(hub=hub))
        return Sampler(engine, [])._media_saturation()  # type: ignore[arg-type]

    assert verdict(None) == "" and verdict(FakeHub(0, 0)) == ""
    assert verdict(FakeHub(1000, 10)) == "", "exactly 1 % late: p99 is still within the limit"
    assert verdict(FakeHub(1000, 11)).startswith("media thread lag p99 > 20 ms")
