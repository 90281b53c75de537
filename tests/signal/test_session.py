"""The sans-I/O SignalSession: frames and time in, frames, events and timers out. No sockets."""

from __future__ import annotations

from typing import Any

import pytest

from lkswarm._core import schema_descriptor_set
from lkswarm.signal import codec
from lkswarm.signal.enums import ConnectionQuality, DisconnectReason, LeaveAction, SubscriptionError
from lkswarm.signal.events import (
    AnswerReceived,
    Failed,
    Joined,
    LeaveRequested,
    MediaSectionsRequired,
    OfferReceived,
    ParticipantsChanged,
    PongReceived,
    QualityReported,
    RemoteTrackPublished,
    RequestFailed,
    RoomMoved,
    SubscriptionFailed,
    TokenRefreshed,
    TrackMuteRequested,
    TrackPublished,
    TrackSubscribed,
    TrackUnpublished,
    TrickleReceived,
)
from lkswarm.signal.session import HANDLED_RESPONSES, IGNORED_RESPONSES, SessionState, SignalSession


def join_frame(others: list[dict[str, Any]] | None = None, **join: Any) -> bytes:
    body = {
        "room": {"sid": "RM_1", "name": "room-a"},
        "participant": {"sid": "PA_me", "identity": "me", "state": "JOINED"},
        "otherParticipants": others or [],
        "serverVersion": "1.13.5",
        "pingInterval": 5,
        "pingTimeout": 15,
        "subscriberPrimary": True,
    }
    body.update(join)
    return codec.encode_response({"join": body})


def joined_session(now: float = 100.0, **kwargs: Any) -> SignalSession:
    session = SignalSession("me", "token-1", **kwargs)
    session.start(now)
    session.receive_frame(join_frame(), now)
    session.events_received()
    return session


def test_every_response_variant_is_handled_or_ignored_with_a_reason() -> None:
    from google.protobuf import descriptor_pb2

    fds = descriptor_pb2.FileDescriptorSet.FromString(schema_descriptor_set())
    response = next(m for f in fds.file for m in f.message_type if m.name == "SignalResponse")
    variants = {field.name for field in response.field}
    assert variants == HANDLED_RESPONSES | set(IGNORED_RESPONSES)
    assert not HANDLED_RESPONSES & set(IGNORED_RESPONSES)
    assert all(reason.strip() for reason in IGNORED_RESPONSES.values())


def test_join_reports_joined_and_sets_ping_schedule() -> None:
    session = SignalSession("me", "token-1")
    session.start(10.0)
    assert session.get_timer() == pytest.approx(25.0)  # join deadline
    others = [{"sid": "PA_b", "identity": "bob", "state": "ACTIVE"}]
    session.receive_frame(join_frame(others), 10.5)
    [joined, changed] = session.events_received()
    assert isinstance(joined, Joined)
    assert joined.participant_sid == "PA_me" and joined.room_name == "room-a"
    assert joined.server_version == "1.13.5" and joined.other_participants == 1
    assert changed == ParticipantsChanged(1)
    assert session.state is SessionState.JOINED
    assert session.get_timer() == pytest.approx(15.5)  # first ping
    assert session.room_view() == {"me": "PA_me", "bob": "PA_b"}


def test_join_timeout() -> None:
    session = SignalSession("me", "t", join_timeout_s=2.0)
    session.start(0.0)
    session.handle_timer(1.9)
    assert session.events_received() == []
    session.handle_timer(2.0)
    assert session.events_received() == [Failed("join_timeout", "")]
    assert session.state is SessionState.ENDED and session.get_timer() is None


def test_ping_pong_measures_rtt_from_precise_send_time() -> None:
    session = joined_session(100.0)
    session.handle_timer(105.0)
    [frame] = session.frames_to_send()
    request = codec.decode_request(frame)
    assert request.kind == "ping_req"
    timestamp = request.ping_req.timestamp
    assert timestamp == 105_000
    pong = codec.encode_response({"pongResp": {"lastPingTimestamp": str(timestamp), "timestamp": "1"}})
    session.receive_frame(pong, 105.0042)
    [event] = session.events_received()
    assert isinstance(event, PongReceived) and event.rtt_ms == pytest.approx(4.2, abs=0.01)
    session.handle_timer(110.0)
    [frame] = session.frames_to_send()
    assert codec.decode_request(frame).ping_req.rtt == 4  # our last RTT is reported to the server


def test_pings_keep_their_cadence_when_the_timer_runs_late() -> None:
    # The driver's timers run on a 50 ms grid: a ping due at 105.0 goes at 105.04, and the next is
    # still due at 110.0, not 110.04. A timer that ran an interval or more late restarts the cadence.
    session = joined_session(100.0)
    session.handle_timer(105.04)
    assert len(session.frames_to_send()) == 1
    assert session.get_timer() == pytest.approx(110.0)
    session.receive_frame(codec.encode_response({"refreshToken": "token-2"}), 109.0)  # alive
    session.handle_timer(116.0)  # a loop stalled past a whole interval: the next ping counts from now
    assert len(session.frames_to_send()) == 1
    assert session.get_timer() == pytest.approx(121.0)


def test_silence_past_ping_timeout_fails() -> None:
    session = joined_session(100.0)
    session.handle_timer(105.0)
    session.handle_timer(110.0)
    assert session.state is SessionState.JOINED
    session.handle_timer(115.0)
    assert session.events_received() == [Failed("ping_timeout", "no frame for 15 s")]


def test_any_frame_counts_as_liveness() -> None:
    session = joined_session(100.0)
    session.receive_frame(codec.encode_response({"refreshToken": "token-2"}), 114.0)
    session.handle_timer(115.0)
    assert session.state is SessionState.JOINED
    assert session.token == "token-2"
    assert TokenRefreshed("token-2") in session.events_received()


@pytest.mark.parametrize(
    ("action", "ends"), [(LeaveAction.DISCONNECT, True), (LeaveAction.RESUME, False), (LeaveAction.RECONNECT, False)]
)
def test_server_leave_by_action(action: LeaveAction, ends: bool) -> None:
    session = joined_session()
    frame = codec.encode_response({"leave": {"reason": "JOIN_FAILURE", "action": int(action)}})
    session.receive_frame(frame, 101.0)
    assert session.events_received() == [LeaveRequested(DisconnectReason.JOIN_FAILURE, action, False)]
    assert (session.state is SessionState.ENDED) is ends
    if ends:
        assert session.end_reason == "left:JOIN_FAILURE"


def test_updates_track_the_room_and_remote_tracks() -> None:
    session = joined_session()
    update = {
        "update": {
            "participants": [
                {"sid": "PA_b", "identity": "bob", "state": "JOINED", "tracks": [{"sid": "TR_1", "type": "AUDIO"}]},
                {"sid": "PA_me", "identity": "me", "state": "ACTIVE"},
            ]
        }
    }
    session.receive_frame(codec.encode_response(update), 102.0)
    events = session.events_received()
    assert RemoteTrackPublished("PA_b", "bob", "TR_1", 0, 102.0) in events
    assert ParticipantsChanged(1) in events
    assert session.room_view() == {"me": "PA_me", "bob": "PA_b"}
    gone = {"update": {"participants": [{"sid": "PA_b", "identity": "bob", "state": "DISCONNECTED"}]}}
    session.receive_frame(codec.encode_response(gone), 103.0)
    assert session.events_received() == [ParticipantsChanged(0)]
    assert session.room_view() == {"me": "PA_me"}


def test_observers_of_one_room_share_its_strings_and_hold_no_empty_track_sets() -> None:
    # Memory per participant must not grow with the room: 300 observers of 300 others once held
    # 133 KiB each, mostly private copies of the same sids and identities plus empty sets.
    others = [{"sid": f"PA_{i}", "identity": f"user-{i}", "state": "ACTIVE"} for i in range(20)]
    others[3]["tracks"] = [{"sid": "TR_a", "type": "AUDIO"}]
    frame = codec.encode_response({"update": {"participants": others}})
    first, second = joined_session(), joined_session()
    first.receive_frame(frame, 101.0)
    second.receive_frame(frame, 101.0)
    assert len(first.others) == 20
    for identity, sid in first.others.items():
        assert next(i for i in second.others if i == identity) is identity
        assert second.others[identity] is sid
    assert first.tracks_by_participant == {"PA_3": frozenset({"TR_a"})}
    assert first.live_remote_tracks() == {"TR_a"}
    unpublished = {"update": {"participants": [{"sid": "PA_3", "identity": "user-3", "state": "ACTIVE"}]}}
    first.receive_frame(codec.encode_response(unpublished), 102.0)
    assert first.tracks_by_participant == {}
    assert first.live_remote_tracks() == set()


def test_a_new_sid_for_a_known_identity_replaces_the_old_participant() -> None:
    # Seen against livekit-server in a rejoin storm: we joined afresh while bob's old session was
    # still listed, bob then joined afresh too, and the server never sent the old sid's DISCONNECTED.
    # Keyed by sid, the old track stayed "live" forever and the room held two bobs.
    session = joined_session()
    old_bob = {"sid": "PA_old", "identity": "bob", "state": "ACTIVE", "tracks": [{"sid": "TR_old", "type": "AUDIO"}]}
    session.receive_frame(codec.encode_response({"update": {"participants": [old_bob]}}), 101.0)
    session.events_received()
    new_bob = {"sid": "PA_new", "identity": "bob", "state": "ACTIVE", "tracks": [{"sid": "TR_new", "type": "AUDIO"}]}
    session.receive_frame(codec.encode_response({"update": {"participants": [new_bob]}}), 102.0)
    assert session.events_received() == [
        RemoteTrackPublished("PA_new", "bob", "TR_new", 0, 102.0),
        ParticipantsChanged(1),
    ]
    assert session.others == {"bob": "PA_new"}
    assert session.live_remote_tracks() == {"TR_new"}
    # the old session's goodbye, arriving late, must not remove its successor
    late_goodbye = {"sid": "PA_old", "identity": "bob", "state": "DISCONNECTED"}
    session.receive_frame(codec.encode_response({"update": {"participants": [late_goodbye]}}), 103.0)
    assert session.events_received() == []
    assert session.room_view() == {"me": "PA_me", "bob": "PA_new"} and session.live_remote_tracks() == {"TR_new"}
    # our own predecessor (same identity, other sid) is not another participant
    ghost = {"sid": "PA_me_before", "identity": "me", "state": "ACTIVE", "tracks": [{"sid": "TR_x", "type": "AUDIO"}]}
    session.receive_frame(codec.encode_response({"update": {"participants": [ghost]}}), 104.0)
    assert session.events_received() == [] and session.live_remote_tracks() == {"TR_new"}


def test_a_room_move_forgets_the_old_rooms_tracks() -> None:
    """After room_moved the old room's publishers' tracks stayed 'live', so media.tracks_missing named them."""
    session = joined_session()
    bob = {"sid": "PA_bob", "identity": "bob", "state": "ACTIVE", "tracks": [{"sid": "TR_bob", "type": "AUDIO"}]}
    session.receive_frame(codec.encode_response({"update": {"participants": [bob]}}), 101.0)
    assert session.live_remote_tracks() == {"TR_bob"}
    carol = {"sid": "PA_carol", "identity": "carol", "state": "ACTIVE", "tracks": [{"sid": "TR_c", "type": "AUDIO"}]}
    moved = {"roomMoved": {"room": {"name": "room-b"}, "token": "t", "otherParticipants": [carol]}}
    session.receive_frame(codec.encode_response(moved), 102.0)
    assert session.live_remote_tracks() == {"TR_c"} and session.others == {"carol": "PA_carol"}


def test_negotiation_and_track_events() -> None:
    session = joined_session()
    frames = [
        {"offer": {"type": "offer", "sdp": "v=0 offer", "id": 3}},
        {"answer": {"type": "answer", "sdp": "v=0 answer", "id": 4}},
        {"trickle": {"candidateInit": '{"candidate":"c"}', "target": "SUBSCRIBER", "final": True}},
        {"trackPublished": {"cid": "cid-1", "track": {"sid": "TR_9"}}},
        {"trackUnpublished": {"trackSid": "TR_9"}},
        {"trackSubscribed": {"trackSid": "TR_7"}},
        {"requestResponse": {"requestId": 5, "reason": "NOT_ALLOWED", "message": "nope"}},
        {"roomMoved": {"room": {"name": "room-b"}, "token": "token-3"}},
    ]
    for mapping in frames:
        session.receive_frame(codec.encode_response(mapping), 101.0)
    events = session.events_received()
    assert events == [
        OfferReceived("v=0 offer", 3),
        AnswerReceived("v=0 answer", 4),
        TrickleReceived('{"candidate":"c"}', 1, True),
        TrackPublished("cid-1", "TR_9"),
        TrackUnpublished("TR_9"),
        TrackSubscribed("TR_7"),
        RequestFailed(5, 2, "nope"),
        RoomMoved("room-b", "token-3"),
    ]
    assert session.token == "token-3" and session.room_name == "room-b"


@pytest.mark.parametrize("json_mode", [False, True])
def test_single_pc_answers_carry_the_track_map_and_section_requirements_are_events(json_mode: bool) -> None:
    session = joined_session()
    frames = [
        {"answer": {"type": "answer", "sdp": "v=0 answer", "id": 2, "midToTrackId": {"3": "TR_a", "4": "TR_v"}}},
        {"mediaSectionsRequirement": {"numAudios": 2, "numVideos": 1}},
        {"mediaSectionsRequirement": {}},  # {0, 0}: the server asks for a plain re-offer
    ]
    for mapping in frames:
        frame = codec.encode_response_json(mapping) if json_mode else codec.encode_response(mapping)
        session.receive_frame(frame, 101.0)
    assert session.events_received() == [
        AnswerReceived("v=0 answer", 2, {"3": "TR_a", "4": "TR_v"}),
        MediaSectionsRequired(2, 1),
        MediaSectionsRequired(0, 0),
    ]


def test_ignored_variants_are_counted_not_decoded() -> None:
    session = joined_session()
    session.receive_frame(codec.encode_response({"speakersChanged": {"speakers": [{"sid": "x", "level": 0.5}]}}), 101)
    assert session.events_received() == []
    assert session.messages_received["speakers_changed"] == 1


def test_malformed_frame_fails_the_participant_with_the_codec_message() -> None:
    session = joined_session()
    session.receive_frame(b"\x2a\x05\x0a", 101.0)  # update with a length past the end
    [event] = session.events_received()
    assert isinstance(event, Failed) and event.reason == "malformed_frame"
    assert "byte" in event.detail
    assert session.state is SessionState.ENDED


def test_json_mode_sends_text_frames_and_reads_json() -> None:
    session = SignalSession("me", "t", json_mode=True)
    session.start(0.0)
    session.receive_frame(join_frame(), 0.1)  # the first frame is always binary
    session.events_received()
    session.handle_timer(5.1)
    [frame] = session.frames_to_send()
    assert isinstance(frame, str) and '"pingReq"' in frame
    session.receive_frame('{"refreshToken": "token-j"}', 5.2)
    assert session.token == "token-j"
    session.send_leave()
    [frame] = session.frames_to_send()
    assert codec.decode_request_json(frame).leave.reason == DisconnectReason.CLIENT_INITIATED


def test_json_frames_of_ignored_variants_are_counted_not_fatal() -> None:
    session = SignalSession("me", "t", json_mode=True)
    session.start(0.0)
    session.receive_frame(join_frame(), 0.1)
    session.events_received()
    session.receive_frame('{"subscriptionPermissionUpdate": {"participantSid": "PA_x", "allowed": true}}', 0.2)
    session.receive_frame('{"speakersChanged": {"speakers": []}}', 0.3)
    assert session.events_received() == []
    assert session.state is SessionState.JOINED
    assert session.messages_received["subscription_permission_update"] == 1


def test_client_leave_ends_the_session_and_sends_the_reference_bytes() -> None:
    session = joined_session()
    session.send_leave()
    assert session.frames_to_send() == [bytes.fromhex("42021001")]
    assert session.state is SessionState.ENDED and session.end_reason == "left:CLIENT_INITIATED"


def test_resume_flow() -> None:
    session = joined_session(100.0)
    session.begin_resume(120.0)
    assert session.state is SessionState.RESUMING
    assert session.get_timer() == pytest.approx(135.0)
    session.receive_frame(codec.encode_response({"reconnect": {"lastMessageSeq": 3}}), 120.2)
    [event] = session.events_received()
    assert isinstance(event, Joined) and event.resumed
    assert session.state is SessionState.JOINED


def test_every_request_variant_can_be_sent() -> None:
    from google.protobuf import descriptor_pb2

    fds = descriptor_pb2.FileDescriptorSet.FromString(schema_descriptor_set())
    request = next(m for f in fds.file for m in f.message_type if m.name == "SignalRequest")
    session = joined_session()
    for field in request.field:
        value: Any = 7 if field.type == field.TYPE_INT64 else {}
        session.send_request({field.name: value})
        [frame] = session.frames_to_send()
        assert codec.peek_request(frame) == field.name


def quality_frame(*entries: tuple[str, str, float]) -> bytes:
    updates = [{"participantSid": sid, "quality": quality, "score": score} for sid, quality, score in entries]
    return codec.encode_response({"connectionQuality": {"updates": updates}})


def test_the_servers_estimate_of_our_own_connection_is_reported() -> None:
    session = joined_session()
    session.receive_frame(quality_frame(("PA_me", "GOOD", 3.5), ("PA_b", "LOST", 1.0)), 101.0)
    [event] = session.events_received()
    assert event == QualityReported(ConnectionQuality.GOOD, pytest.approx(3.5))
    # Found wherever it stands in the list (the server puts the recipient first, but need not).
    session.receive_frame(quality_frame(("PA_b", "POOR", 2.0), ("PA_me", "EXCELLENT", 4.5)), 106.0)
    assert session.events_received() == [QualityReported(ConnectionQuality.EXCELLENT, 4.5)]


def test_quality_updates_about_others_only_report_nothing() -> None:
    """A subscription's update names only the publisher; it says nothing of our receiver."""
    session = joined_session()
    session.receive_frame(quality_frame(("PA_b", "LOST", 1.0)), 101.0)
    session.receive_frame(codec.encode_response({"connectionQuality": {}}), 102.0)
    assert session.events_received() == []
    assert session.messages_received["connection_quality"] == 2


def test_quality_in_json_frames() -> None:
    session = joined_session(json_mode=True)
    text = codec.encode_response_json({"connectionQuality": {"updates": [{"participantSid": "PA_me", "score": 2.5}]}})
    session.receive_frame(text, 101.0)
    assert session.events_received() == [QualityReported(ConnectionQuality.POOR, 2.5)]  # POOR is proto3's default


def test_a_failed_subscription_is_an_event_with_its_error() -> None:
    """SE_CODEC_UNSUPPORTED (a VP9 or AV1 publisher our answer left out) came as a RequestFailed that nothing
    read: the track's load silently never arrived."""
    session = joined_session()
    response = {"subscription_response": {"track_sid": "TR_av1", "err": "SE_CODEC_UNSUPPORTED"}}
    session.receive_frame(codec.encode_response(response), 101.0)
    assert session.events_received() == [SubscriptionFailed("TR_av1", SubscriptionError.SE_CODEC_UNSUPPORTED)]
    session.receive_frame(codec.encode_response({"subscription_response": {"track_sid": "TR_ok"}}), 102.0)
    assert session.events_received() == []  # err 0: subscribed


def test_subscription_errors_match_the_schema_oracle() -> None:
    from livekit.protocol import models

    assert {e.name: e.value for e in SubscriptionError} == dict(models.SubscriptionError.items())


def test_the_servers_mute_of_our_track_is_an_event_in_binary_and_json() -> None:
    """An admin's MutePublishedTrack reaches the publisher as ``mute``; it was only counted."""
    for json_mode in (False, True):
        session = joined_session(json_mode=json_mode)
        mute = {"mute": {"sid": "TR_mic", "muted": True}}
        frame = codec.encode_response_json(mute) if json_mode else codec.encode_response(mute)
        session.receive_frame(frame, 101.0)
        assert session.events_received() == [TrackMuteRequested("TR_mic", True)]
        assert session.messages_received["mute"] == 1


def test_remote_tracks_muted_by_their_publisher_are_known_until_unmuted() -> None:
    """A participant that joins with its mic muted sends nothing: a receiver with nothing of it is not missing it."""
    session = joined_session()

    def update(muted: bool) -> bytes:
        bob = {"sid": "PA_b", "identity": "bob", "tracks": [{"sid": "TR_mic", "type": "AUDIO", "muted": muted}]}
        return codec.encode_response({"update": {"participants": [bob]}})

    session.receive_frame(update(True), 101.0)
    assert session.muted_remote_tracks == {"TR_mic"} and session.live_remote_tracks() == {"TR_mic"}
    session.receive_frame(update(False), 102.0)
    assert session.muted_remote_tracks == set()
