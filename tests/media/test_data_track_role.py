"""Data tracks without sockets: the signal messages against livekit-protocol (the schema oracle), the session's
data-track events, a participant's publish/subscribe/handle-map flow, and the report's ``data.tracks``."""

from __future__ import annotations

import copy
from typing import Any

from livekit.protocol import models, rtc

from fakes import fake_run
from lkswarm.config import RunConfig
from lkswarm.media.data import DataTotals
from lkswarm.media.data_track import DataTrackRole, is_data_track_publisher, track_name
from lkswarm.report.merge import _merged_data
from lkswarm.report.thresholds import parse_threshold, read_key
from lkswarm.signal import codec
from lkswarm.signal.events import (
    DataTrackHandles,
    DataTrackPublished,
    DataTrackUnpublished,
    RemoteDataTrackPublished,
    RequestFailed,
)
from lkswarm.signal.requests import publish_data_track, unpublish_data_track, update_data_subscription
from lkswarm.signal.session import SignalSession


def test_requests_encode_like_the_reference_and_back() -> None:
    cases = [
        (
            publish_data_track(1, "lkswarm-dt-p0"),
            rtc.SignalRequest(
                publish_data_track_request=rtc.PublishDataTrackRequest(pub_handle=1, name="lkswarm-dt-p0")
            ),
        ),
        (
            unpublish_data_track(7),
            rtc.SignalRequest(unpublish_data_track_request=rtc.UnpublishDataTrackRequest(pub_handle=7)),
        ),
        (
            update_data_subscription(["DTR_a", "DTR_b"]),
            rtc.SignalRequest(
                update_data_subscription=rtc.UpdateDataSubscription(
                    updates=[
                        rtc.UpdateDataSubscription.Update(track_sid="DTR_a", subscribe=True),
                        rtc.UpdateDataSubscription.Update(track_sid="DTR_b", subscribe=True),
                    ]
                )
            ),
        ),
    ]
    for mapping, reference in cases:
        ours = codec.encode_request(mapping)
        assert rtc.SignalRequest.FromString(ours) == reference
        assert ours == reference.SerializeToString(deterministic=True)
        assert codec.decode_request(reference.SerializeToString()).kind == reference.WhichOneof("message")


def joined_session() -> SignalSession:
    session = SignalSession("me", "token")
    join = rtc.JoinResponse(participant=models.ParticipantInfo(sid="PA_me", identity="me"), room=models.Room(name="r"))
    session.receive_frame(rtc.SignalResponse(join=join).SerializeToString(), 0.0)
    session.events_received()
    return session


def test_session_turns_data_track_responses_into_events() -> None:
    session = joined_session()
    info = models.DataTrackInfo(pub_handle=1, sid="DTR_mine", name="lkswarm-dt-me")
    frames = [
        rtc.SignalResponse(publish_data_track_response=rtc.PublishDataTrackResponse(info=info)),
        rtc.SignalResponse(unpublish_data_track_response=rtc.UnpublishDataTrackResponse(info=info)),
        rtc.SignalResponse(
            request_response=rtc.RequestResponse(
                request_id=0,
                reason=rtc.RequestResponse.DUPLICATE_NAME,
                message="duplicate name",
                publish_data_track=rtc.PublishDataTrackRequest(pub_handle=1, name="x"),
            )
        ),
        rtc.SignalResponse(
            data_track_subscriber_handles=rtc.DataTrackSubscriberHandles(
                sub_handles={
                    2: rtc.DataTrackSubscriberHandles.PublishedDataTrack(
                        publisher_identity="p0", publisher_sid="PA_0", track_sid="DTR_a"
                    )
                }
            )
        ),
        rtc.SignalResponse(
            update=rtc.ParticipantUpdate(
                participants=[
                    models.ParticipantInfo(
                        sid="PA_0",
                        identity="p0",
                        state=models.ParticipantInfo.ACTIVE,
                        data_tracks=[models.DataTrackInfo(pub_handle=1, sid="DTR_a", name="lkswarm-dt-p0")],
                    )
                ]
            )
        ),
    ]
    for frame in frames:
        session.receive_frame(frame.SerializeToString(), 1.0)
    events = [e for e in session.events_received() if type(e).__name__ != "ParticipantsChanged"]
    assert events == [
        DataTrackPublished(1, "DTR_mine", "lkswarm-dt-me"),
        DataTrackUnpublished(1, "DTR_mine"),
        RequestFailed(0, 10, "duplicate name", "publish_data_track"),
        DataTrackHandles(((2, "p0", "PA_0", "DTR_a"),)),
        RemoteDataTrackPublished("PA_0", "p0", "DTR_a", "lkswarm-dt-p0"),
    ]
    assert session.remote_data_tracks == {"DTR_a"}


class FakeHub:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def data_track_publish(self, peer: int, handle: int, rate_hz: float, size_bytes: int) -> None:
        self.calls.append(("publish", peer, handle, rate_hz, size_bytes))

    def data_track_handles(self, peer: int, handles: list[tuple[int, str, str]]) -> None:
        self.calls.append(("handles", peer, handles))

    def data_track_stop(self, peer: int) -> None:
        self.calls.append(("stop", peer))


def sent_requests(session: SignalSession) -> list[str | None]:
    return [codec.decode_request(frame).kind for frame in session.frames_to_send() if isinstance(frame, bytes)]


def test_a_publisher_publishes_subscribes_maps_handles_and_unpublishes() -> None:
    config = RunConfig(url="ws://127.0.0.1:7880", participants=4, data_tracks=2, data_track_rate=30, data_track_size=64)
    run = fake_run(config)
    assert [is_data_track_publisher(seat, 2) for seat in range(3)] == [True, True, False]
    role = DataTrackRole(run, "me", seat=0)
    session, hub = joined_session(), FakeHub()
    session.remote_data_tracks.add("DTR_early")  # announced before our PC connected
    role.on_event(RemoteDataTrackPublished("PA_0", "p0", "DTR_early", "n"), session, hub, 5, started=False)  # type: ignore[arg-type]
    assert sent_requests(session) == []
    role.start(session)
    assert sent_requests(session) == ["publish_data_track_request", "update_data_subscription"]
    role.on_event(DataTrackPublished(1, "DTR_mine", track_name("me")), session, hub, 5, started=True)  # type: ignore[arg-type]
    role.on_event(RemoteDataTrackPublished("PA_1", "p1", "DTR_b", "n"), session, hub, 5, started=True)  # type: ignore[arg-type]
    role.on_event(DataTrackHandles(((1, "p0", "PA_0", "DTR_early"), (2, "p1", "PA_1", "DTR_b"))), session, hub, 5, True)  # type: ignore[arg-type]
    role.on_event(RequestFailed(0, 9, "dup", "publish_data_track"), session, hub, 5, True)  # type: ignore[arg-type]
    assert sent_requests(session) == ["update_data_subscription"]
    assert hub.calls == [
        ("publish", 5, 1, 30.0, 64),
        ("handles", 5, [(1, "p0", "DTR_early"), (2, "p1", "DTR_b")]),
    ]
    assert run.counters["data_track_publish_failed:DUPLICATE_HANDLE"] == 1
    role.before_leave(session, hub, 5)  # type: ignore[arg-type]
    assert sent_requests(session) == ["unpublish_data_track_request"] and hub.calls[-1] == ("stop", 5)
    role.new_join()
    role.start(session)
    assert sent_requests(session) == ["publish_data_track_request", "update_data_subscription"]


def flow(publisher: str, received: int, expected: int, **extra: Any) -> dict[str, Any]:
    base = {"handle": 1, "publisher": publisher, "track_sid": f"DTR_{publisher}", "received": received}
    base.update(bytes=received * 64, expected=expected, missing=expected - received, duplicates=0, out_of_order=0)
    base.update(foreign=False)
    base.update(extra)
    return base


def peer(track: dict[str, Any]) -> dict[str, Any]:
    base = {"frames_sent": 0, "bytes_sent": 0, "send_blocked": 0, "send_skipped": 0, "unknown_handle": 0}
    base.update(malformed=0, malformed_detail="", received=[])
    return {"sent": {}, "received": [], "track": {**base, **track}}


def test_the_tracks_section_and_its_merge() -> None:
    totals = DataTotals()
    totals.account("p0", "r", peer({"frames_sent": 100, "bytes_sent": 6400, "received": [flow("p1", 100, 100)]}))
    received = [flow("p0", 98, 100, duplicates=1), flow("sdk", 50, 50, foreign=True), flow("", 3, 3, track_sid="")]
    totals.account("p1", "r", peer({"frames_sent": 100, "unknown_handle": 3, "received": received}))
    counters = {
        "data_tracks_published": 2,
        "data_track_publish_failed:NOT_ALLOWED": 1,
        "data_track_publish_requests": 3,
    }
    section = totals.report({}, {"count": 248, "p99": 4.0}, counters)
    tracks = section["tracks"]
    assert tracks["tracks_published"] == 2 and tracks["publish_failure_reasons"] == {"NOT_ALLOWED": 1}
    assert tracks["frames_received"] == 248 and tracks["frames_expected"] == 250 and tracks["lost"] == 2
    assert tracks["delivery_ratio"] == round(247 / 250, 6) and tracks["loss_ratio"] == round(2 / 250, 6)
    assert tracks["subscriptions"] == 3 and tracks["unknown_handle"] == 3 and tracks["foreign_frames"] == 50
    assert tracks["latency_ms"]["p99"] == 4.0 and "100 ms" in tracks["note"]
    rows = [(r["receiver"], r["sender"], r["channel"]) for r in totals.rows]
    assert rows == [("p0", "p1", "data_track"), ("p1", "p0", "data_track"), ("p1", "sdk", "data_track")]
    report = {"data": section}
    assert read_key(report, "data.tracks.loss_ratio") == round(2 / 250, 6)
    assert parse_threshold("data.tracks.loss_ratio<0.01").key == "data.tracks.loss_ratio"
    assert parse_threshold("data_track_e2e.p99<100ms").key == "latency_ms.data_track_e2e.p99"
    merged = _merged_data([section, copy.deepcopy(section)], {}, {"count": 496, "p99": 5.0})
    assert merged["tracks"]["frames_expected"] == 500 and merged["tracks"]["lost"] == 4
    assert merged["tracks"]["loss_ratio"] == round(4 / 500, 6) and merged["tracks"]["latency_ms"]["p99"] == 5.0
    assert merged["tracks"]["publish_failure_reasons"] == {"NOT_ALLOWED": 2}
