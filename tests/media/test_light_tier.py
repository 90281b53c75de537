"""The light media tier without sockets or an engine: its per-peer accounting, its warnings, its live verdict."""

from __future__ import annotations

from fakes import FakeHost, fake_run
from lkswarm.media.tier import LightLeg, LightTier
from lkswarm.media.totals import MediaTotals
from lkswarm.metrics import record_buckets_us, summarize
from lkswarm.signal.session import SignalSession


def make_host() -> FakeHost:
    host = FakeHost(fake_run(), "p0", room="room")
    host.session = SignalSession("p0", "token", join_timeout_s=15)
    return host


def light_leg(host: FakeHost) -> LightLeg:
    return LightTier(host.run).attach(host)


def test_a_published_track_that_sent_nothing_is_named_in_the_report() -> None:
    """tracks_missing alone says something went wrong; the examples and the warning say where."""
    driver = make_host()
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
    light_leg(driver).account(stats, totals)
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
    light_leg(make_host()).account(stats, totals)
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
        tier = LightTier(fake_run())
        tier.hub = hub
        return tier.saturation()

    assert verdict(None) == "" and verdict(FakeHub(0, 0)) == ""
    assert verdict(FakeHub(1000, 10)) == "", "exactly 1 % late: p99 is still within the limit"
    assert verdict(FakeHub(1000, 11)).startswith("media thread lag p99 > 20 ms")
