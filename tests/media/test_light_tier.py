"""The light media tier without sockets or an engine: its per-peer accounting, its warnings, its live verdict."""

from __future__ import annotations

import time
from typing import Any

from fakes import FakeHost, fake_run
from lkswarm.media.tier import LightLeg, LightTier
from lkswarm.media.totals import MediaTotals
from lkswarm.metrics import record_buckets_us, summarize
from lkswarm.signal.session import SessionState, SignalSession


def joined(session: SignalSession) -> SignalSession:
    """A session past its JoinResponse: PeerConnections connect only then (a connecting one is a fresh join's)."""
    session.state = SessionState.JOINED
    return session


def make_host() -> FakeHost:
    host = FakeHost(fake_run(), "p0", room="room")
    host.session = joined(SignalSession("p0", "token", join_timeout_s=15))
    return host


def light_leg(host: FakeHost) -> LightLeg:
    return LightTier(host.run).attach(host)


def single_pc_leg(hub: object) -> tuple[LightLeg, list[tuple[str, int]]]:
    """A joined leg on ``hub`` (a stand-in with the single-PC operations a test needs) and the offers it sends."""
    offers: list[tuple[str, int]] = []

    class RecordingSession(SignalSession):
        def send_offer(self, sdp: str, offer_id: int = 0) -> None:
            offers.append((sdp, offer_id))

    host = make_host()
    host.session = joined(RecordingSession("p0", "token", join_timeout_s=15))
    leg = light_leg(host)
    leg.tier.hub, leg.peer_id = hub, 1  # type: ignore[assignment]
    return leg, offers


def peer_stats(**figures: Any) -> dict[str, Any]:
    """One peer's `MediaHub.peer_stats` as the leg accounts it: nothing sent or received, but ``figures``."""
    sent = ("datagrams_sent", "bytes_sent", "frames_sent", "frames_skipped")
    zeros = dict.fromkeys((*sent, "foreign_datagrams", "datagrams_truncated"), 0)
    return {**zeros, "keyframe_requests": 0, "tracks": [], **figures}


def test_a_published_track_that_sent_nothing_is_named_in_the_report() -> None:
    """tracks_missing alone says something went wrong; the examples and the warning say where."""
    driver = make_host()
    session = driver.session
    assert session is not None
    session.others = {"pub-a": "PA_a", "pub-b": "PA_b", "pub-c": "PA_c"}
    session.tracks_by_participant = {
        "PA_a": frozenset({"TR_heard"}),
        "PA_b": frozenset({"TR_silent"}),
        "PA_c": frozenset({"TR_muted"}),  # muted by its publisher: it sends nothing, and is not missing
    }
    session.muted_remote_tracks = {"TR_muted"}
    heard = {"track_id": "TR_heard", "kind": "audio", "codec": "audio/opus", "packets": 50, "bytes": 5000}
    heard.update(expected=50, lost=0)
    stats = {
        "datagrams_sent": 0,
        "bytes_sent": 0,
        "frames_sent": 0,
        "frames_skipped": 0,
        "foreign_datagrams": 0,
        "datagrams_truncated": 0,
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
    # A subscriber that joined just before the end (a capacity search's last churn join) is not judged: its
    # subscriptions and first packets take seconds, and the warning named such pairs in a healthy search.
    driver.joined_at = time.perf_counter() - 1.0
    fresh = MediaTotals()
    light_leg(driver).account(stats, fresh)
    assert (fresh.tracks_received, fresh.tracks_missing, fresh.warnings()) == (1, 0, [])
    # Nor a track announced to this join lately: published near the end, or every track after a fresh join.
    driver.joined_at = time.perf_counter() - 60.0
    leg, lately = light_leg(driver), MediaTotals()
    leg._remote_published_at["TR_silent"] = time.perf_counter() - 1.0
    leg.account(stats, lately)
    assert (lately.tracks_received, lately.tracks_missing) == (1, 0)


def test_truncated_datagrams_are_counted_and_warned_about() -> None:
    """The kernel cut them to the receive buffer: dropped unread, so the report must say how many and why."""
    totals = MediaTotals()
    leg = light_leg(make_host())
    leg.account(peer_stats(datagrams_truncated=2), totals)
    leg.account(peer_stats(datagrams_truncated=1), totals)
    assert totals.report()["datagrams_truncated"] == 3
    [warning] = totals.warnings()
    assert warning.startswith("3 datagram(s) were longer than the media thread's ~2 KB receive buffer")


def test_a_track_received_by_both_peers_of_a_fresh_join_counts_once() -> None:
    totals = MediaTotals()
    track = {"track_id": "TR_a", "kind": "audio", "codec": "audio/opus", "packets": 50, "bytes": 5000}
    track.update(expected=50, lost=0, jitter_ms=0.5)
    stats = peer_stats(tracks=[track])
    leg = light_leg(make_host())
    leg.account(stats, totals, closed=True)  # the peer before the fresh join
    leg.account(stats, totals)  # and the one after
    assert totals.tracks_received == 1 and totals.report()["tracks_by_codec"] == {"audio/opus": 1}
    assert totals.packets_received == 100, "the packets of both peers still add"


def test_frames_a_stalled_media_thread_skipped_are_counted_and_warned_about() -> None:
    """Skipped frames mean the server was offered less than planned: the report must say so, and why."""
    totals = MediaTotals()
    stats = peer_stats(datagrams_sent=900, bytes_sent=90_000, frames_sent=950, frames_skipped=50)
    light_leg(make_host()).account(stats, totals)
    assert totals.report()["frames_skipped"] == 50
    [warning] = totals.warnings()
    assert "skipped 50 frame(s) (5.00% of those due)" in warning and "media thread" in warning


def test_packets_of_streams_past_the_cap_are_counted_and_warned_about() -> None:
    """A server that keeps changing SSRCs would grow each peer's per-stream state forever; past 1,024 streams a
    peer counts the packets of new ones instead of accounting them, and the report says so."""
    totals = MediaTotals()
    stats = peer_stats(rtp_past_stream_cap=37)
    light_leg(make_host()).account(stats, totals)
    assert totals.report()["rtp_past_stream_cap"] == 37
    [warning] = totals.warnings()
    assert warning.startswith("37 RTP packet(s) came on SSRCs first seen after a subscriber had already accounted")


def test_the_hub_section_names_the_io_backend_its_fallback_and_system_calls_per_datagram() -> None:
    totals = MediaTotals(hub_wakeups=10, hub_timeouts=4)
    assert totals.report()["hub"] == {"wakeups": 10, "timeouts": 4}  # a run without the light tier's hub
    totals.hub_io, totals.hub_syscalls, totals.hub_datagrams_received = "io_uring", 30, 400
    assert totals.report()["hub"] == {
        "wakeups": 10,
        "timeouts": 4,
        "io": "io_uring",
        "syscalls": 30,
        "datagrams_received": 400,
        "syscalls_per_datagram": 0.075,
    }
    totals.hub_io, totals.hub_io_fallback = "epoll", "io_uring_setup: Operation not permitted (os error 1)"
    hub = totals.report()["hub"]
    assert (hub["io"], hub["io_fallback"]) == ("epoll", "io_uring_setup: Operation not permitted (os error 1)")
    assert "thread_cpu_s" not in hub  # no thread clock: absent, never a made-up 0
    totals.hub_thread_cpu_s = 0.4567
    assert totals.report()["hub"]["thread_cpu_s"] == 0.457


def test_the_srtp_receive_section_says_which_path_carried_the_packets_and_why_a_peer_had_no_own_path() -> None:
    totals = MediaTotals(packets_received=1_000)
    totals.srtp_receive.account(
        {
            "srtp_own_packets": 900,
            "srtp_own_replayed": 2,
            "srtp_own_too_old": 3,
            "srtp_own_auth_failed": 1,
            "srtp_own_before_first": 4,
            "srtp_receipts_refused": 3,
            "srtp_str0m_dropped": {"duplicates": 5, "padding_only": 7},
        }
    )
    off = "DTLS negotiated an SRTP profile other than AEAD-AES-GCM"
    totals.srtp_receive.account({"srtp_own_packets": 0, "srtp_own_off": off})
    totals.srtp_receive.account({})  # a report from before the own path: nothing to add
    assert totals.report()["srtp_receive"] == {
        "own_packets": 900,
        "str0m_packets": 100,
        "replayed": 2,
        "too_old": 3,
        "auth_failed": 1,
        "before_first": 4,
        "receipts_refused": 3,
        "peers_off": {off: 1},
        "str0m_dropped": {
            "unknown_stream": 0,
            "before_keys": 0,
            "unknown_payload_type": 0,
            "duplicates": 5,
            "auth_failed": 0,
            "malformed": 0,
            "padding_only": 7,
        },
    }


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


class RecordingHub:
    """The hub operations a data publisher's leg calls, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...], dict[str, object]]] = []

    def __getattr__(self, name: str) -> object:
        def call(*args: object, **kwargs: object) -> object:
            self.calls.append((name, args, kwargs))
            return ("v=0\r\n", 1) if name == "join_offer" else "v=0\r\n" if name == "publisher_offer" else (7, 5000)

        return call


def data_leg(data_to: str = "all") -> tuple[LightLeg, RecordingHub]:
    from lkswarm.config import RunConfig

    config = RunConfig(url="ws://127.0.0.1:7880", participants=3, data_publishers=1, data_rate=20, data_size=500)
    config = config.replace(data_topic="t", data_to=data_to)
    host = FakeHost(fake_run(config), "p0", room="room", seat=0)
    host.session = joined(SignalSession("p0", "token", join_timeout_s=15))
    host.session.others = {"p2": "PA_2", "p1": "PA_1"}
    tier = LightTier(host.run)
    hub = RecordingHub()
    tier.hub = hub  # type: ignore[assignment]
    return tier.attach(host), hub


def test_a_data_only_publisher_on_two_pcs_offers_its_channels_once_the_primary_connects() -> None:
    leg, hub = data_leg(data_to="1")
    leg.on_joined(0.0)
    leg.connected(True, 1.0)
    names = [name for name, _, _ in hub.calls]
    assert names == ["add_peer", "publisher_offer", "data_publish"]
    _, _, offer_kwargs = hub.calls[1]
    assert offer_kwargs == {"audio_cid": None, "video_cid": None, "data": True}
    _, args, kwargs = hub.calls[2]
    assert args == (7, "reliable", 20.0, 500)
    assert kwargs == {
        "topic": "t",
        "destinations": ["p1"],
        "identity": "p0",
        "burst_count": 0,
        "burst_every_s": 10.0,
    }
    leg.connected(True, 2.0)  # connecting again (a restart) offers nothing more
    assert [name for name, _, _ in hub.calls].count("publisher_offer") == 1


def test_a_single_pc_publisher_starts_its_data_when_its_one_pc_connects() -> None:
    leg, hub = data_leg()
    media = leg.prepare_join(0.0)
    assert media.offer_sdp == "v=0\r\n" and leg.single_pc
    leg.on_joined(0.5)
    leg.connected(True, 1.0)
    assert [name for name, _, _ in hub.calls] == ["add_peer", "join_offer", "data_publish"]
    assert hub.calls[2][2]["destinations"] == []


def test_data_to_n_waits_for_someone_to_send_to_instead_of_sending_to_everyone() -> None:
    """A data publisher alone in its room computed no destinations, and the server reads an empty list as
    everyone: with --data-to 1, every later joiner (and an SDK viewer) received its messages."""
    from lkswarm.config import RunConfig
    from lkswarm.signal.events import ParticipantsChanged

    class RecordingHub:
        def __init__(self) -> None:
            self.destinations: list[list[str]] = []

        def data_publish(self, peer: int, channel: str, rate: float, size: int, **fields: Any) -> None:
            self.destinations.append(list(fields["destinations"]))

    config = RunConfig(url="ws://127.0.0.1:7880", participants=3, data_publishers=1, data_to="1")
    host = FakeHost(fake_run(config), "p0", room="room")
    host.session = joined(SignalSession("p0", "token", join_timeout_s=15))
    leg = light_leg(host)
    hub = RecordingHub()
    leg.tier.hub, leg.peer_id = hub, 1  # type: ignore[assignment]
    leg._start_data()
    assert hub.destinations == []  # alone: nothing published yet
    host.session.others = {"p2": "PA_2", "p1": "PA_1"}
    leg.on_session_event(ParticipantsChanged(3), 1.0)
    assert hub.destinations == [["p1"]]
    leg.on_session_event(ParticipantsChanged(4), 2.0)
    assert hub.destinations == [["p1"]]  # chosen once: a receiver's expected count starts at its first message


def test_data_to_n_fills_in_destinations_as_the_room_fills() -> None:
    """A publisher in the first seat starts while its room fills: with --data-to 3 it sent to the one other there
    then, for the whole run (1 destination of the 3 asked for), and nothing said so."""
    from lkswarm.config import RunConfig
    from lkswarm.signal.events import ParticipantsChanged

    class RecordingHub:
        def __init__(self) -> None:
            self.destinations: list[list[str]] = []

        def data_publish(self, peer: int, channel: str, rate: float, size: int, **fields: Any) -> None:
            self.destinations.append(list(fields["destinations"]))

    config = RunConfig(url="ws://127.0.0.1:7880", participants=8, data_publishers=1, data_to="3")
    host = FakeHost(fake_run(config), "p5", room="room")
    session = host.session = joined(SignalSession("p5", "token", join_timeout_s=15))
    leg = light_leg(host)
    hub = RecordingHub()
    leg.tier.hub, leg.peer_id = hub, 1  # type: ignore[assignment]
    session.others = {"p7": "PA_7"}
    leg._start_data()
    session.others |= {"p2": "PA_2", "p5": "PA_self", "p6": "PA_6"}
    leg.on_session_event(ParticipantsChanged(4), 1.0)
    session.others |= {"p0": "PA_0", "p1": "PA_1"}
    leg.on_session_event(ParticipantsChanged(6), 2.0)
    # Those it has are kept (their messages' counters run on), newcomers are added in order, up to 3.
    assert hub.destinations == [["p7"], ["p7", "p2", "p6"]]
    del session.others["p2"]  # a destination leaves: its place goes to the first other not chosen
    leg.on_session_event(ParticipantsChanged(5), 3.0)
    assert hub.destinations[-1] == ["p7", "p6", "p0"]


def test_a_fresh_join_forgets_the_old_peers_wait_for_someone_to_send_to() -> None:
    """A data publisher waiting (``--data-to 1``, alone) that joins afresh: its new peer starts its data once
    connected, and a participant update before then must not start it early."""
    from lkswarm.config import RunConfig
    from lkswarm.signal.events import ParticipantsChanged

    config = RunConfig(url="ws://127.0.0.1:7880", participants=3, data_publishers=1, data_to="1")
    host = FakeHost(fake_run(config), "p0", room="room", seat=0)
    host.session = joined(SignalSession("p0", "token", join_timeout_s=15))
    leg = light_leg(host)

    class ClosingHub(RecordingHub):
        def remove_peer(self, peer: int) -> None:
            self.calls.append(("remove_peer", (peer,), {}))  # a peer the hub had no figures for

    hub = ClosingHub()
    leg.tier.hub, leg.peer_id = hub, 1  # type: ignore[assignment]
    leg._start_data()
    assert leg._data_waiting and not any(name == "data_publish" for name, _, _ in hub.calls)
    leg.on_joined(5.0)  # leave RECONNECT: a fresh join, a new peer
    assert not leg._data_waiting
    host.session.others = {"p1": "PA_1"}
    leg.on_session_event(ParticipantsChanged(2), 5.5)  # before the new peer connected
    assert not any(name == "data_publish" for name, _, _ in hub.calls)
    leg.connected(True, 6.0)
    assert [kwargs["destinations"] for name, _, kwargs in hub.calls if name == "data_publish"] == [["p1"]]


def test_a_grid_gives_a_freed_tile_to_the_next_video_track() -> None:
    """Tiles only grew: with churn, a long-lived subscriber of a grid:2 layout disabled every newer publisher's
    video for good (its grid was full of departed publishers' tracks)."""
    from lkswarm.config import RunConfig
    from lkswarm.signal.enums import TrackType
    from lkswarm.signal.events import ParticipantsChanged, RemoteTrackPublished

    config = RunConfig(url="ws://127.0.0.1:7880", participants=4, layout="grid:2")
    asked: list[dict[str, Any]] = []

    class RecordingSession(SignalSession):
        def send_request(self, request: dict[str, Any]) -> None:
            asked.append(request)

    host = FakeHost(fake_run(config), "p0", room="room")
    session = host.session = joined(RecordingSession("p0", "token", join_timeout_s=15))
    leg = light_leg(host)
    leg.tier.hub, leg.peer_id = object(), 1  # type: ignore[assignment]
    for n in (1, 2, 3):
        session.others[f"p{n}"] = f"PA_{n}"
        session.tracks_by_participant[f"PA_{n}"] = frozenset({f"TR_{n}"})
        leg.on_session_event(RemoteTrackPublished(f"PA_{n}", f"p{n}", f"TR_{n}", TrackType.VIDEO, 0.0), 0.0)
    settings = {a["trackSetting"]["trackSids"][0]: a["trackSetting"] for a in asked}
    assert not settings["TR_1"].get("disabled") and not settings["TR_2"].get("disabled")
    assert settings["TR_3"]["disabled"] is True
    asked.clear()
    del session.others["p1"], session.tracks_by_participant["PA_1"]  # p1 left
    leg.on_session_event(ParticipantsChanged(2), 1.0)
    assert [a["trackSetting"] for a in asked] == [
        {"trackSids": ["TR_3"], "quality": "MEDIUM", "width": 640, "height": 360}
    ], asked  # TR_2 keeps its tile; TR_3 takes the freed one
    leg.on_session_event(ParticipantsChanged(2), 2.0)
    assert len(asked) == 1  # nothing changed: nothing asked again


def test_rows_of_closed_peers_are_bounded_but_always_counted(monkeypatch: Any) -> None:
    """Every closed peer's tracks.csv and data.csv rows were kept for the whole run: ~130 MB an hour of churn."""
    import lkswarm.media.tier as tier_module

    monkeypatch.setattr(tier_module, "MAX_CLOSED_PEER_ROWS", 3)
    track = {"track_id": "TR_a", "kind": "audio", "codec": "audio/opus", "packets": 50, "bytes": 5000}
    track.update(expected=50, lost=0, jitter_ms=0.5)
    flow = {"sender": "p9", "channel": "_reliable", "received": 4, "bytes": 400, "expected": 4, "missing": 0}
    flow.update(duplicates=0, out_of_order=0)
    data = {"sent": {}, "received": [flow]}
    totals = MediaTotals()
    leg = light_leg(make_host())
    for _ in range(4):  # each closed peer: one track row, one data row
        leg.account(peer_stats(tracks=[track], data=data), totals, closed=True)
    assert len(totals.track_rows) + len(totals.data.rows) == 4  # two peers listed whole, then the budget is spent
    assert totals.report()["rows_not_listed"] == 4
    assert totals.packets_received == 200 and totals.data.channels["reliable"].messages_received == 16
    leg.account(peer_stats(tracks=[track], data=data), totals)  # a live peer at the end: always listed
    assert len(totals.track_rows) == 3


def test_a_resume_with_an_offer_pending_resends_it_and_restarts_ice_after_its_answer() -> None:
    """The server read offer N on the old WebSocket and answered it on the new one after our ICE-restart offer
    N+1 (which had dropped N): answer N was applied to offer N+1, 'Differing m-line count in offer vs answer'."""
    from lkswarm.signal.events import AnswerReceived

    class SingleHub:
        def __init__(self) -> None:
            self.accepted: list[str] = []
            self.restarts = 0

        def accept_answer(self, peer: int, sdp: str, mapping: Any) -> None:
            self.accepted.append(sdp)

        def ice_restart(self, peer: int) -> tuple[str, int]:
            self.restarts += 1
            return "sdp-restart", 3

    hub = SingleHub()
    leg, offers = single_pc_leg(hub)
    leg.single_pc = leg.active = True
    leg.send_offer("sdp-2", 1.0, 2)  # a re-offer for a new track, in flight when the connection drops
    assert leg.on_resumed(2.0, 0) is True
    assert offers == [("sdp-2", 2), ("sdp-2", 2)] and hub.restarts == 0  # resent as it was; no restart yet
    leg.on_session_event(AnswerReceived("answer-2", 2), 3.0)  # one copy's answer: applied, then the restart
    assert hub.accepted == ["answer-2"] and hub.restarts == 1 and offers[-1] == ("sdp-restart", 3)
    leg.on_session_event(AnswerReceived("answer-2-again", 2), 3.1)  # the other copy's: stale
    assert hub.accepted == ["answer-2"] and leg.run.counters["stale_answers"] == 1
    leg.on_session_event(AnswerReceived("answer-3", 3), 3.2)
    assert hub.accepted == ["answer-2", "answer-3"] and hub.restarts == 1


def test_a_single_pc_reoffer_asked_for_before_ice_connected_waits_for_the_connection() -> None:
    """The server's pion starts its ICE agent asynchronously after the join offer; a re-offer it reads before
    then looks to it like an ICE restart, and its answer's new credentials failed ours ('Ice restart in answer
    without one in the preceeding offer': 1 of 100 v1 participants in CI). Requests before we are connected
    are summed and offered once we are."""
    from lkswarm.signal.events import MediaSectionsRequired

    class SingleHub:
        def __init__(self) -> None:
            self.reoffers: list[tuple[int, int]] = []

        def reoffer(self, peer: int, num_audios: int, num_videos: int) -> tuple[str, int]:
            self.reoffers.append((num_audios, num_videos))
            return f"sdp-{len(self.reoffers) + 1}", len(self.reoffers) + 1

    hub = SingleHub()
    leg, offers = single_pc_leg(hub)
    leg.single_pc = True
    leg.on_session_event(MediaSectionsRequired(num_audios=1, num_videos=0), 1.0)
    leg.on_session_event(MediaSectionsRequired(num_audios=2, num_videos=1), 1.1)
    assert hub.reoffers == [] and offers == [] and leg.run.counters["reoffers_deferred"] == 2
    leg.connected(True, 1.5)
    assert hub.reoffers == [(3, 1)] and offers == [("sdp-2", 2)]
    leg.on_session_event(MediaSectionsRequired(num_audios=0, num_videos=1), 2.0)  # connected: at once
    assert hub.reoffers == [(3, 1), (0, 1)] and leg.run.counters["reoffers_deferred"] == 2
    leg.connected(True, 3.0)  # connecting again (a restart) has nothing deferred to send
    assert len(hub.reoffers) == 2


def test_a_connect_of_the_abandoned_joins_peer_sends_nothing_on_the_fresh_joins_session() -> None:
    """leave(RECONNECT): the fresh join's session exists before its task closes the old peer, and the old peer's
    connect can be dispatched in between. Its deferred re-offer (old credentials and mids) went out on the new
    WebSocket, where the server read it as an ICE restart to the old credentials."""
    from lkswarm.signal.events import MediaSectionsRequired

    class SingleHub:
        def __init__(self) -> None:
            self.reoffers: list[tuple[int, int]] = []

        def reoffer(self, peer: int, num_audios: int, num_videos: int) -> tuple[str, int]:
            self.reoffers.append((num_audios, num_videos))
            return "sdp", 2

    host = make_host()
    leg = light_leg(host)
    hub = SingleHub()
    leg.tier.hub, leg.peer_id = hub, 1  # type: ignore[assignment]
    leg.single_pc = True
    leg.on_session_event(MediaSectionsRequired(num_audios=1, num_videos=0), 1.0)
    host.session = SignalSession("p0", "token", join_timeout_s=15)  # the fresh join's, not answered yet
    leg.connected(True, 1.5)
    assert hub.reoffers == [] and not leg.active and leg.run.counters["stale_connects"] == 1


def test_a_fresh_join_releases_the_old_peer_at_once_so_its_events_reach_nobody() -> None:
    """leave(RECONNECT): the old join's peer lived until the new join was answered, and what it reported in
    between (a failure at its connect deadline, a connect) was taken as the new join's. It is now removed from
    the hub when the fresh join begins: its figures count as a closed peer's, and its events find no leg."""

    class ClosingHub:
        def __init__(self) -> None:
            self.removed: list[int] = []

        def remove_peer(self, peer: int) -> dict[str, Any]:
            self.removed.append(peer)
            return peer_stats(datagrams_sent=7)

    host = make_host()
    leg = light_leg(host)
    hub = ClosingHub()
    leg.tier.hub, leg.peer_id = hub, 4  # type: ignore[assignment]
    leg.tier.participants[4] = leg
    leg.active, leg._announced = True, True
    leg.data_track.requested = True
    leg.abandon_join()
    assert hub.removed == [4] and leg.peer_id is None and 4 not in leg.tier.participants
    assert leg.tier.ended.datagrams_sent == 7  # the old peer's figures still count
    assert not leg.active and not leg._announced and not leg.data_track.requested


def test_the_servers_mute_stops_our_track_and_is_acknowledged_as_the_sdks_do() -> None:
    """An admin's MutePublishedTrack: publishers kept sending (only a warning said so). The track now stops,
    its state goes back to the server as a MuteTrackRequest, and the report counts what was honoured."""
    from lkswarm.signal import codec
    from lkswarm.signal.events import TrackMuteRequested, TrackPublished, TrackUnpublished

    class MutingHub:
        def __init__(self) -> None:
            self.mutes: list[tuple[int, bool, bool]] = []

        def set_track_muted(self, peer: int, video: bool, muted: bool) -> None:
            self.mutes.append((peer, video, muted))

    from lkswarm.config import RunConfig

    config = RunConfig(url="ws://127.0.0.1:7880", rooms=1, participants=2, video_publishers=1)
    host = FakeHost(fake_run(config), "p0", room="room", seat=0)  # the room's first seat publishes video
    session = host.session = joined(SignalSession("p0", "token", join_timeout_s=15))
    leg = light_leg(host)
    hub = MutingHub()
    leg.tier.hub, leg.peer_id = hub, 3  # type: ignore[assignment]
    leg._offered = True  # the track went with a /rtc/v1 join's offer
    leg.on_session_event(TrackPublished("p0-cam", "TR_cam"), 1.0)
    session.frames_to_send()
    leg.on_session_event(TrackMuteRequested("TR_cam", True), 2.0)
    leg.on_session_event(TrackMuteRequested("TR_cam", False), 3.0)
    leg.on_session_event(TrackMuteRequested("TR_someone_elses", True), 3.5)
    assert hub.mutes == [(3, True, True), (3, True, False)]
    acks = [codec.decode_request(frame) for frame in session.frames_to_send()]
    assert [(ack.kind, ack.mute.sid, ack.mute.muted) for ack in acks] == [
        ("mute", "TR_cam", True),
        ("mute", "TR_cam", False),
    ]
    counters = leg.run.counters
    assert (counters["server_mutes_honoured"], counters["server_mutes_unknown_track"]) == (2, 1)
    leg.on_session_event(TrackUnpublished("TR_cam"), 4.0)  # publish permission revoked: the track stops
    assert hub.mutes[-1] == (3, True, True) and counters["server_unpublishes_honoured"] == 1
    leg.on_session_event(TrackMuteRequested("TR_cam", False), 5.0)  # no longer ours
    assert len(hub.mutes) == 3 and counters["server_mutes_unknown_track"] == 2


def test_a_mute_that_comes_before_the_publisher_offer_applies_once_the_offer_makes_the_track() -> None:
    """Two PeerConnections, audio and video: the server mutes the audio track it acknowledged while the video
    one is still unacknowledged, so the publisher (and its tracks) did not exist yet; the mute was lost and the
    track sent at full rate while the server held it muted."""
    from lkswarm.config import RunConfig
    from lkswarm.signal.events import TrackMuteRequested, TrackPublished

    class OfferingHub:
        def __init__(self) -> None:
            self.calls: list[tuple[str, Any]] = []

        def publisher_offer(self, peer: int, **kwargs: Any) -> str:
            self.calls.append(("offer", kwargs))
            return "sdp"

        def set_track_muted(self, peer: int, video: bool, muted: bool) -> None:
            self.calls.append(("mute", (video, muted)))

    config = RunConfig(url="ws://127.0.0.1:7880", rooms=1, participants=2, video_publishers=1)
    host = FakeHost(fake_run(config), "p0", room="room", seat=0)
    host.session = joined(SignalSession("p0", "token", join_timeout_s=15))
    leg = light_leg(host)
    leg._cids = {"p0-mic": "audio", "p0-cam": "video"}  # a publisher of both (the tier seats make one or other)
    hub = OfferingHub()
    leg.tier.hub, leg.peer_id = hub, 3  # type: ignore[assignment]
    leg.on_session_event(TrackPublished("p0-mic", "TR_mic"), 1.0)
    leg.on_session_event(TrackMuteRequested("TR_mic", True), 1.1)
    assert hub.calls == [] and leg.run.counters["server_mutes_honoured"] == 1
    leg.on_session_event(TrackPublished("p0-cam", "TR_cam"), 1.2)  # all acknowledged: the offer
    assert [name for name, _ in hub.calls] == ["offer", "mute"] and hub.calls[1][1] == (False, True)


def test_a_fresh_join_republishes_a_track_the_server_muted_muted_and_silent() -> None:
    """An SDK's track muted on the server's request stays muted when a rejoin republishes it; ours came back
    unmuted, sending at full rate, and the admin's mute was lost. An unmute (on the new track's sid) ends that."""
    from lkswarm.config import RunConfig
    from lkswarm.signal import codec
    from lkswarm.signal.events import TrackMuteRequested, TrackPublished

    class RejoiningHub:
        def __init__(self) -> None:
            self.calls: list[tuple[str, Any]] = []

        def publisher_offer(self, peer: int, **kwargs: Any) -> str:
            self.calls.append(("offer", peer))
            return "sdp"

        def set_track_muted(self, peer: int, video: bool, muted: bool) -> None:
            self.calls.append(("mute", (peer, video, muted)))

        def remove_peer(self, peer: int) -> dict[str, Any]:
            return peer_stats()

    config = RunConfig(url="ws://127.0.0.1:7880", rooms=1, participants=2, video_publishers=1)
    host = FakeHost(fake_run(config), "p0", room="room", seat=0)
    session = host.session = joined(SignalSession("p0", "token", join_timeout_s=15))
    leg = light_leg(host)
    leg._cids = {"p0-mic": "audio", "p0-cam": "video"}
    hub = RejoiningHub()
    leg.tier.hub, leg.peer_id = hub, 3  # type: ignore[assignment]
    leg.tier.participants[3] = leg

    def rejoin(peer: int, sids: tuple[str, str]) -> list[dict[str, Any]]:
        """A fresh join (leave RECONNECT) with a new peer; returns its addTrack requests once announced."""
        leg.abandon_join()
        leg.tier.hub, leg.peer_id = hub, peer  # type: ignore[assignment]
        hub.calls.clear()
        session.frames_to_send()
        leg._announce_tracks()
        requests = [codec.decode_request(frame) for frame in session.frames_to_send()]
        leg.on_session_event(TrackPublished("p0-mic", sids[0]), 1.0)
        leg.on_session_event(TrackPublished("p0-cam", sids[1]), 1.0)  # all acknowledged: the offer
        return [{"cid": r.add_track.cid, "muted": r.add_track.muted} for r in requests if r.kind == "add_track"]

    leg.on_session_event(TrackPublished("p0-mic", "TR_mic"), 1.0)
    leg.on_session_event(TrackPublished("p0-cam", "TR_cam"), 1.0)
    leg.on_session_event(TrackMuteRequested("TR_mic", True), 2.0)
    assert rejoin(4, ("TR_mic2", "TR_cam2")) == [{"cid": "p0-mic", "muted": True}, {"cid": "p0-cam", "muted": False}]
    assert hub.calls == [("offer", 4), ("mute", (4, False, True))]  # the new peer's microphone starts silent
    assert leg.run.counters["server_mutes_kept_on_rejoin"] == 1
    leg.on_session_event(TrackMuteRequested("TR_mic2", False), 3.0)  # the admin unmutes the new track
    assert rejoin(5, ("TR_mic3", "TR_cam3")) == [{"cid": "p0-mic", "muted": False}, {"cid": "p0-cam", "muted": False}]
    assert hub.calls == [("offer", 5)] and leg.run.counters["server_mutes_kept_on_rejoin"] == 1


def test_the_servers_mute_without_a_peer_is_still_counted() -> None:
    """A mute or unpublish that came while the leg had no peer went uncounted: messages_received.mute then
    disagreed with signal.server_mutes."""
    from lkswarm.signal.events import TrackMuteRequested

    leg = light_leg(make_host())
    leg.on_session_event(TrackMuteRequested("TR_x", True), 1.0)
    assert leg.run.counters["server_mutes_unknown_track"] == 1


def test_a_fresh_join_after_a_resume_fell_back_to_rtc_makes_a_dual_pc_peer() -> None:
    """A /rtc/v1 resume answered 404 goes on /rtc and keeps its peer; should the server then ask for a fresh join,
    that join is /rtc's (two PeerConnections), and the leg must not still think it has one: the server's
    subscriber offer failed the participant ("an offer on a single-PC session")."""
    leg, _offers = single_pc_leg(object())
    leg.single_pc = True
    leg.tier.hub = None  # the hub is not needed to forget the old join
    leg.abandon_join()
    assert not leg.single_pc
