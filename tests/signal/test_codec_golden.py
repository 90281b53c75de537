"""Hand-built examples of the signaling codec, checked against the reference.

One example per SignalRequest/SignalResponse variant (the data-track and
data-blob ones included), attribute reads in the protobuf Python API's shape,
buffer kinds, JSON frames, the fast encoders, merge rules and error reporting.
The reference is ``livekit-protocol`` on upb; known golden vectors come from
the livekit-server notes.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from livekit.protocol import models, rtc

from lkswarm.errors import CodecError, LkswarmError
from lkswarm.signal import codec

PING_GOLDEN = bytes.fromhex("82 01 09 08 80 d0 95 ff bc 31 10 0c")
LEAVE_GOLDEN = bytes.fromhex("42 02 10 01")

PARTICIPANT: dict[str, Any] = {
    "sid": "PA_alice",
    "identity": "alice",
    "state": "ACTIVE",
    "tracks": [
        {"sid": "TR_cam", "type": "VIDEO", "source": "CAMERA", "width": 1280, "height": 720,
         "layers": [{"quality": "HIGH", "width": 1280, "height": 720, "bitrate": 2500000}]},
        {"sid": "TR_mic", "type": "AUDIO", "muted": True, "audioFeatures": ["TF_STEREO", "TF_NO_DTX"]},
    ],
    "metadata": "{\"role\": \"host\"}",
    "joinedAt": "1700000000",
    "joinedAtMs": "1700000000123",
    "attributes": {"team": "blue", "": "empty-key", "ключ": "значение"},
    "permission": {"canSubscribe": True, "canPublishSources": ["CAMERA", "MICROPHONE"]},
    "kind": "AGENT",
    "dataTracks": [{"pubHandle": 7, "sid": "DTR_1", "name": "telemetry",
                    "frameEncoding": {"custom": "cbor"}}],
}  # fmt: skip
DATA_TRACK: dict[str, Any] = {
    "pubHandle": 3, "sid": "DTR_x", "name": "pose", "encryption": "GCM",
    "frameEncoding": {"wellKnown": 0},
    "schema": {"name": "pose.v1", "encoding": {"wellKnown": "WELL_KNOWN_SCHEMA_ENCODING_JSON_SCHEMA"}},
}  # fmt: skip
BLOB_KEY: dict[str, Any] = {"schemaId": {"name": "pose.v1"}}

REQUESTS: dict[str, dict[str, Any]] = {
    "offer": {"type": "offer", "sdp": "v=0\r\n", "id": 4, "midToTrackId": {"0": "TR_cam", "1": "TR_mic"}},
    "answer": {"type": "answer", "sdp": "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n", "id": 1},
    "trickle": {"candidateInit": "{\"candidate\":\"candidate:1 1 udp 1 1.2.3.4 5 typ host\"}",
                "target": "SUBSCRIBER", "final": True},
    "add_track": {"cid": "cam", "name": "camera", "type": "VIDEO", "width": 640, "height": 480,
                  "source": "CAMERA",
                  "layers": [{"quality": "LOW", "width": 320, "height": 240, "bitrate": 150000},
                             {"quality": "HIGH", "width": 640, "height": 480, "bitrate": 900000}],
                  "simulcastCodecs": [{"codec": "vp8", "cid": "cam"}], "stereo": False, "stream": "main"},
    "mute": {"sid": "TR_cam", "muted": True},
    "subscription": {"trackSids": ["TR_a", "TR_b"], "subscribe": True,
                     "participantTracks": [{"participantSid": "PA_x", "trackSids": ["TR_a"]}]},
    "track_setting": {"trackSids": ["TR_a"], "disabled": True, "quality": "MEDIUM", "fps": 15, "priority": 2},
    "leave": {"canReconnect": True, "reason": "CLIENT_INITIATED", "action": "RECONNECT"},
    "update_layers": {"trackSid": "TR_a", "layers": [{"quality": "OFF"}]},
    "subscription_permission": {"allParticipants": False,
                                "trackPermissions": [{"participantSid": "PA_x", "trackSids": ["TR_a"]}]},
    "sync_state": {"answer": {"type": "answer", "sdp": "x"}, "subscription": {"trackSids": ["TR_a"]},
                   "publishTracks": [{"cid": "cam", "track": {"sid": "TR_cam"}}],
                   "trackSidsDisabled": ["TR_z"]},
    "simulate": {"subscriberBandwidth": "-1"},
    "ping": "1700000000000",
    "update_metadata": {"metadata": "m", "name": "Alice", "attributes": {"a": "1", "ab": "2"},
                        "requestId": 9},
    "ping_req": {"timestamp": "1700000000000", "rtt": "12"},
    "update_audio_track": {"trackSid": "TR_mic", "features": ["TF_ECHO_CANCELLATION"]},
    "update_video_track": {"trackSid": "TR_cam", "width": 1920, "height": 1080},
    "publish_data_track_request": {"pubHandle": 3, "name": "pose", "encryption": "NONE",
                                   "frameEncoding": {"wellKnown": 0}, "schema": {"name": "pose.v1"}},
    "unpublish_data_track_request": {"pubHandle": 3},
    "update_data_subscription": {"updates": [{"trackSid": "DTR_x", "subscribe": True,
                                              "options": {"targetFps": 0}}]},
    "store_data_blob_request": {"requestId": 5, "blob": {"key": {"generic": "k1"}, "contents": "AAEC/w=="}},
    "get_data_blob_request": {"requestId": 6, "participantIdentity": "bob", "key": BLOB_KEY},
}  # fmt: skip
RESPONSES: dict[str, Any] = {
    "join": {"room": {"sid": "RM_1", "name": "load", "creationTimeMs": "1700000000000"},
             "participant": PARTICIPANT, "otherParticipants": [{"sid": "PA_b", "identity": "bob"}],
             "serverVersion": "1.13.5", "iceServers": [{"urls": ["stun:stun.l.google.com:19302"]}],
             "subscriberPrimary": True, "pingTimeout": 15, "pingInterval": 5, "sifTrailer": "3q2+7w==",
             "serverInfo": {"edition": "Cloud", "version": "1.13.5", "protocol": 16}},
    "answer": {"type": "answer", "sdp": "v=0\r\n", "id": 2},
    "offer": {"type": "offer", "sdp": "v=0\r\n", "midToTrackId": {"0": "TR_cam"}},
    "trickle": {"candidateInit": "{}", "target": "PUBLISHER"},
    "update": {"participants": [PARTICIPANT, {"sid": "PA_b", "state": "DISCONNECTED"}]},
    "track_published": {"cid": "cam", "track": PARTICIPANT["tracks"][0]},
    "leave": {"reason": "ROOM_DELETED", "action": "DISCONNECT"},
    "mute": {"sid": "TR_cam", "muted": True},
    "speakers_changed": {"speakers": [{"sid": "PA_a", "level": 0.7, "active": True}, {"sid": "PA_b"}]},
    "room_update": {"room": {"sid": "RM_1", "numParticipants": 3, "metadata": "m"}},
    "connection_quality": {"updates": [{"participantSid": "PA_a", "quality": "EXCELLENT", "score": 4.5}]},
    "stream_state_update": {"streamStates": [{"participantSid": "PA_a", "trackSid": "TR_a",
                                              "state": "PAUSED"}]},
    "subscribed_quality_update": {"trackSid": "TR_a",
                                  "subscribedQualities": [{"quality": "HIGH", "enabled": True}],
                                  "subscribedCodecs": [{"codec": "vp8", "qualities": [{"quality": "LOW"}]}]},
    "subscription_permission_update": {"participantSid": "PA_a", "trackSid": "TR_a", "allowed": True},
    "refresh_token": "eyJhbGciOiJIUzI1NiJ9.e30.sig",
    "track_unpublished": {"trackSid": "TR_a"},
    "pong": "1700000000000",
    "reconnect": {"iceServers": [{"urls": ["turn:x"], "username": "u", "credential": "c"}],
                  "lastMessageSeq": 42},
    "pong_resp": {"lastPingTimestamp": "1700000000000", "timestamp": "1700000000012"},
    "subscription_response": {"trackSid": "TR_a", "err": "SE_TRACK_NOTFOUND"},
    "request_response": {"requestId": 9, "reason": "NOT_FOUND", "message": "no such track",
                         "updateMetadata": {"metadata": "m"}},
    "track_subscribed": {"trackSid": "TR_a"},
    "room_moved": {"room": {"name": "other"}, "token": "t", "participant": {"sid": "PA_a"}},
    "media_sections_requirement": {"numAudios": 2, "numVideos": 1},
    "subscribed_audio_codec_update": {"trackSid": "TR_mic",
                                      "subscribedAudioCodecs": [{"codec": "opus", "enabled": True}]},
    "publish_data_track_response": {"info": DATA_TRACK},
    "unpublish_data_track_response": {"info": {"pubHandle": 3, "sid": "DTR_x"}},
    "data_track_subscriber_handles": {"subHandles": {"7": {"trackSid": "DTR_x", "publisherSid": "PA_a"},
                                                     "4000000000": {}}},
    "store_data_blob_response": {"requestId": 5, "key": {"generic": "k1"}},
    "get_data_blob_response": {"requestId": 6, "blob": {"key": BLOB_KEY, "contents": ""}},
}  # fmt: skip

SIDES = {
    "request": (rtc.SignalRequest, REQUESTS, codec.decode_request, codec.encode_request, codec.peek_request),
    "response": (
        rtc.SignalResponse,
        RESPONSES,
        codec.decode_response,
        codec.encode_response,
        codec.peek_response,
    ),
}
CASES = [(side, variant) for side, (_, examples, *_r) in SIDES.items() for variant in examples]


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def reference(side: str, variant: str) -> Message:
    cls, examples, *_ = SIDES[side]
    return json_format.ParseDict({camel(variant): examples[variant]}, cls())


@pytest.mark.parametrize("side", sorted(SIDES))
def test_every_variant_has_an_example(side: str) -> None:
    cls, examples, *_ = SIDES[side]
    assert sorted(examples) == sorted(f.name for f in cls.DESCRIPTOR.oneofs_by_name["message"].fields)


@pytest.mark.parametrize(("side", "variant"), CASES, ids=[f"{s}-{v}" for s, v in CASES])
def test_variant(side: str, variant: str) -> None:
    cls, _, decode, encode, peek = SIDES[side]
    msg = reference(side, variant)
    wire = msg.SerializeToString(deterministic=True)
    expected = json_format.MessageToDict(msg)
    assert expected, "the example must not be empty"

    view = decode(wire)
    assert view.kind == variant == peek(wire)
    assert view.type_name == cls.DESCRIPTOR.full_name
    assert view.to_dict() == expected
    assert view.present_fields() == [variant]
    assert encode(expected) == wire
    assert cls.FromString(encode(view.to_dict())) == msg
    # JSON frames, both ways.
    json_decode = codec.decode_request_json if side == "request" else codec.decode_response_json
    json_encode = codec.encode_request_json if side == "request" else codec.encode_response_json
    assert json_decode(json_format.MessageToJson(msg)).to_dict() == expected
    assert json.loads(json_encode(expected)) == json.loads(json_format.MessageToJson(msg))
    assert json_format.Parse(json_encode(expected), cls()) == msg


def test_golden_vectors() -> None:
    ping = rtc.SignalRequest(ping_req=rtc.Ping(timestamp=1_700_000_000_000, rtt=12))
    assert ping.SerializeToString() == PING_GOLDEN
    assert codec.encode_ping(1_700_000_000_000, 12) == PING_GOLDEN
    assert codec.encode_request({"pingReq": {"timestamp": "1700000000000", "rtt": "12"}}) == PING_GOLDEN
    view = codec.decode_request(PING_GOLDEN)
    assert (view.kind, view.ping_req.timestamp, view.ping_req.rtt) == ("ping_req", 1_700_000_000_000, 12)

    leave = rtc.SignalRequest(leave=rtc.LeaveRequest(reason=models.DisconnectReason.CLIENT_INITIATED))
    assert leave.SerializeToString() == LEAVE_GOLDEN
    assert codec.encode_leave(models.DisconnectReason.CLIENT_INITIATED) == LEAVE_GOLDEN
    assert codec.decode_request(LEAVE_GOLDEN).leave.reason == 1
    assert codec.peek_request(LEAVE_GOLDEN) == "leave"


def test_attribute_reads() -> None:
    msg = reference("response", "update")
    r = codec.decode_response(msg.SerializeToString())
    ref = msg.update
    p = r.update.participants[0]
    assert len(r.update.participants) == 2
    assert p.tracks[0].sid == "TR_cam" == ref.participants[0].tracks[0].sid
    assert p.tracks[0].type == models.TrackType.VIDEO == 1  # enums read as ints
    assert type(p.tracks[0].type) is int
    assert p.tracks[0].layers[0].bitrate == 2_500_000
    assert p.tracks[1].muted is True
    assert list(p.tracks[1].audio_features) == list(ref.participants[0].tracks[1].audio_features)
    assert p.joined_at_ms == 1_700_000_000_123  # int64 reads as int, not str
    assert dict(p.attributes) == dict(ref.participants[0].attributes)
    assert p.attributes["ключ"] == "значение"
    assert list(p.permission.can_publish_sources) == [1, 2]
    assert p.kind == models.ParticipantInfo.Kind.AGENT  # a field named "kind" wins over the oneof name
    assert p.data_tracks[0].frame_encoding.custom == "cbor"
    assert p.data_tracks[0].frame_encoding.kind == "custom"
    # Unset fields read as defaults; unset messages as empty views.
    b = r.update.participants[1]
    assert (b.identity, b.version, b.is_publisher, b.metadata, b.joined_at) == ("", 0, False, "", 0)
    assert b.state == models.ParticipantInfo.State.DISCONNECTED
    assert len(b.tracks) == 0 and dict(b.attributes) == {}
    assert b.permission.to_dict() == {} and b.permission.can_subscribe is False
    assert r.join.room.name == "" and r.join.room.to_dict() == {}
    assert r.join.kind is None and r.join.participant.tracks == ()
    sp = codec.decode_response(reference("response", "speakers_changed").SerializeToString())
    assert sp.speakers_changed.speakers[0].level == pytest.approx(0.7) and sp.speakers_changed.speakers[1].level == 0.0
    blob = codec.decode_response(reference("response", "get_data_blob_response").SerializeToString())
    assert blob.get_data_blob_response.blob.contents == b"" and blob.get_data_blob_response.blob.key.kind == "schema_id"
    store = codec.decode_request(reference("request", "store_data_blob_request").SerializeToString())
    assert store.store_data_blob_request.blob.contents == b"\x00\x01\x02\xff"


def test_map_and_oneof_reads() -> None:
    handles = codec.decode_response(reference("response", "data_track_subscriber_handles").SerializeToString())
    sub = handles.data_track_subscriber_handles.sub_handles
    assert set(sub) == {7, 4_000_000_000}  # uint32 keys read as ints
    assert sub[7].track_sid == "DTR_x" and sub[4_000_000_000].to_dict() == {}
    rr = codec.decode_response(reference("response", "request_response").SerializeToString()).request_response
    assert rr.kind == "update_metadata" and rr.reason == rtc.RequestResponse.Reason.NOT_FOUND
    assert rr.update_metadata.metadata == "m" and rr.trickle.to_dict() == {}
    info = codec.decode_response(reference("response", "publish_data_track_response").SerializeToString())
    # A oneof member at its default is set, and printed.
    enc = {"wellKnown": "WELL_KNOWN_FRAME_ENCODING_UNSPECIFIED"}
    assert info.to_dict()["publishDataTrackResponse"]["info"]["frameEncoding"] == enc
    assert info.publish_data_track_response.info.frame_encoding.kind == "well_known"
    # So is a proto3 ``optional`` field at its default.
    sub = codec.decode_request(reference("request", "update_data_subscription").SerializeToString())
    assert sub.to_dict()["updateDataSubscription"]["updates"][0]["options"] == {"targetFps": 0}
    assert sub.update_data_subscription.updates[0].options.present_fields() == ["target_fps"]


def test_views_are_read_only_and_strict() -> None:
    view = codec.decode_request(PING_GOLDEN)
    with pytest.raises(AttributeError):
        view.ping_req = None
    with pytest.raises(AttributeError, match="no_such_field"):
        _ = view.no_such_field
    with pytest.raises(AttributeError):
        _ = view.ping_req.sid
    assert view == codec.decode_request(bytearray(PING_GOLDEN))
    assert view != codec.decode_request(LEAVE_GOLDEN)
    empty = codec.decode_request(b"")
    assert empty.kind is None and empty.to_dict() == {} and empty.present_fields() == []
    assert codec.peek_request(b"") is None and codec.peek_response(b"") is None


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "slice"])
def test_buffer_kinds(kind: str) -> None:
    wire = reference("response", "join").SerializeToString()
    buf: Any = {
        "bytes": wire,
        "bytearray": bytearray(wire),
        "memoryview": memoryview(wire),
        "slice": memoryview(b"junk" + wire + b"\x80")[4:-1],
    }[kind]
    view = codec.decode_response(buf)
    assert view.to_dict() == json_format.MessageToDict(rtc.SignalResponse.FromString(wire))
    assert view.join.participant.tracks[0].sid == "TR_cam"
    assert codec.peek_response(buf) == "join"


def test_views_do_not_copy_the_buffer() -> None:
    buf = bytearray(reference("response", "update").SerializeToString())
    view = codec.decode_response(buf)
    at = buf.index(b"TR_cam")
    buf[at + 3 : at + 6] = b"mic"  # same length, still valid: the view sees it
    assert view.update.participants[0].tracks[0].sid == "TR_mic"
    with pytest.raises(BufferError):  # the view holds the export, so the buffer cannot move
        buf.extend(b"\x00")


def test_bad_buffer_types() -> None:
    with pytest.raises(TypeError):
        codec.decode_request("not bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        codec.decode_response(memoryview(bytes(8))[::2])


def test_json_frames() -> None:
    frame = {"pingReq": {"timestamp": "1700000000000", "rtt": "12"}}
    text = codec.encode_request_json(frame)
    assert json.loads(text) == frame
    assert json_format.Parse(text, rtc.SignalRequest()) == rtc.SignalRequest.FromString(PING_GOLDEN)
    view = codec.decode_request_json(json.dumps(frame))
    assert view.kind == "ping_req" and view.ping_req.timestamp == 1_700_000_000_000
    assert codec.encode_request({"ping_req": {"timestamp": 1_700_000_000_000, "rtt": 12}}) == PING_GOLDEN
    pong = codec.decode_response_json(b'{"pongResp": {"lastPingTimestamp": "1700000000000", "timestamp": "5"}}')
    assert pong.kind == "pong_resp" and pong.pong_resp.last_ping_timestamp == 1_700_000_000_000
    assert codec.decode_response_json('{"pong": "12"}').pong == 12
    for bad in ["{", "[]", '{"nope": 1}', '{"pong": "x"}', '{"join": {}, "pong": "1"}']:
        with pytest.raises(CodecError):
            codec.decode_response_json(bad)


ATTRS = {"b": "1", "a": "2", "ab": "", "": "x", "é": "y", "B": "z", "abc": "w"}
FAST_CASES: list[tuple[Any, Message]] = [
    (lambda: codec.encode_ping(0, 0), rtc.SignalRequest(ping_req=rtc.Ping())),
    (lambda: codec.encode_ping(-1, 2**63 - 1),
     rtc.SignalRequest(ping_req=rtc.Ping(timestamp=-1, rtt=2**63 - 1))),
    (lambda: codec.encode_leave(4, 2, True),
     rtc.SignalRequest(leave=rtc.LeaveRequest(can_reconnect=True, reason=4, action=2))),
    (lambda: codec.encode_leave(-5), rtc.SignalRequest(leave=rtc.LeaveRequest(reason=-5))),
    (lambda: codec.encode_trickle('{"candidate":""}', 1, True),
     rtc.SignalRequest(trickle=rtc.TrickleRequest(candidateInit='{"candidate":""}', target=1, final=True))),
    (lambda: codec.encode_trickle("", 0), rtc.SignalRequest(trickle=rtc.TrickleRequest())),
    (lambda: codec.encode_offer("v=0\r\n", 3),
     rtc.SignalRequest(offer=rtc.SessionDescription(type="offer", sdp="v=0\r\n", id=3))),
    (lambda: codec.encode_answer("v=0 é\r\n"),
     rtc.SignalRequest(answer=rtc.SessionDescription(type="answer", sdp="v=0 é\r\n"))),
    (lambda: codec.encode_add_track("c", "cam", 1, source=1, width=640, height=480, muted=True,
                                    disable_dtx=True, layers=[(0, 320, 240, 1), (2, 640, 480, 0)],
                                    stereo=True, disable_red=True, stream="s"),
     rtc.SignalRequest(add_track=rtc.AddTrackRequest(
         cid="c", name="cam", type=1, source=1, width=640, height=480, muted=True, disable_dtx=True,
         layers=[models.VideoLayer(quality=0, width=320, height=240, bitrate=1),
                 models.VideoLayer(quality=2, width=640, height=480)],
         stereo=True, disable_red=True, stream="s"))),
    (lambda: codec.encode_add_track("", "", 0), rtc.SignalRequest(add_track=rtc.AddTrackRequest())),
    (lambda: codec.encode_subscription(["TR_a", "", "TR_é"], False),
     rtc.SignalRequest(subscription=rtc.UpdateSubscription(track_sids=["TR_a", "", "TR_é"]))),
    (lambda: codec.encode_subscription([]),
     rtc.SignalRequest(subscription=rtc.UpdateSubscription(subscribe=True))),
    # upb's deterministic map order: bytes ascending, but a key before its own prefixes ("ab" < "a" < "").
    (lambda: codec.encode_update_metadata("m", "n", ATTRS, 7),
     rtc.SignalRequest(update_metadata=rtc.UpdateParticipantMetadata(
         metadata="m", name="n", attributes=ATTRS, request_id=7))),
    (codec.encode_update_metadata, rtc.SignalRequest(update_metadata=rtc.UpdateParticipantMetadata())),
]  # fmt: skip


@pytest.mark.parametrize(("call", "msg"), FAST_CASES)
def test_fast_encoders_match_reference(call: Any, msg: Message) -> None:
    ours = call()
    assert ours == msg.SerializeToString(deterministic=True)
    assert codec.encode_request(json_format.MessageToDict(msg)) == ours


def test_merge_rules() -> None:
    a = rtc.SignalResponse(update=rtc.ParticipantUpdate(participants=[models.ParticipantInfo(sid="A", version=1)]))
    b = rtc.SignalResponse(update=rtc.ParticipantUpdate(participants=[models.ParticipantInfo(sid="B")]))
    pong = rtc.SignalResponse(pong=5)
    a_, b_, pong_ = a.SerializeToString(), b.SerializeToString(), pong.SerializeToString()
    for wire in [a_ + b_, a_ + pong_, pong_ + a_, b"\x90\x01\x01\x90\x01\x02"]:
        ref = rtc.SignalResponse.FromString(wire)
        view = codec.decode_response(wire)
        assert view.to_dict() == json_format.MessageToDict(ref)
        assert view.kind == codec.peek_response(wire) == ref.WhichOneof("message")
    assert codec.decode_response(b"\x90\x01\x01\x90\x01\x02").pong == 2  # last scalar wins
    merged = codec.decode_response(a.SerializeToString() + b.SerializeToString())
    assert [p.sid for p in merged.update.participants] == ["A", "B"]  # sub-messages merge
    # Singular sub-message fields merge field by field.
    t1 = rtc.SignalResponse(track_published=rtc.TrackPublishedResponse(cid="c", track=models.TrackInfo(sid="T")))
    t2 = rtc.SignalResponse(track_published=rtc.TrackPublishedResponse(track=models.TrackInfo(name="n")))
    view = codec.decode_response(t1.SerializeToString() + t2.SerializeToString())
    assert (view.track_published.cid, view.track_published.track.sid, view.track_published.track.name) == (
        "c", "T", "n",
    )  # fmt: skip


def test_packed_and_unpacked_repeated_scalars() -> None:
    packed = rtc.SignalRequest(update_audio_track=rtc.UpdateLocalAudioTrack(features=[1, 2, 300]))
    body = b"\x10\x01\x10\x02\x10\xac\x02"  # features unpacked, one tag per element
    unpacked = b"\x8a\x01" + bytes([len(body)]) + body
    assert rtc.SignalRequest.FromString(unpacked) == packed
    for wire in (packed.SerializeToString(), unpacked, packed.SerializeToString() + unpacked):
        view = codec.decode_request(wire)
        assert view.to_dict() == json_format.MessageToDict(rtc.SignalRequest.FromString(wire))
    assert list(codec.decode_request(unpacked).update_audio_track.features) == [1, 2, 300]


def _error(call: Any) -> CodecError:
    with pytest.raises(CodecError) as info:
        call()
    return info.value


def test_error_attributes() -> None:
    err = _error(lambda: codec.decode_request(PING_GOLDEN[:-3]))
    assert isinstance(err, ValueError) and isinstance(err, LkswarmError)
    assert (err.offset, err.path) == (2, "ping_req")
    assert "byte 2" in str(err) and "ping_req" in str(err)

    msg = reference("response", "update")
    wire = bytearray(msg.SerializeToString())
    at = wire.index(b"TR_mic")
    wire[at + 1] = 0xFF
    err = _error(lambda: codec.decode_response(bytes(wire)))
    assert (err.offset, err.path) == (at, "update.participants[0].tracks[1].sid")
    assert f"byte {at}" in str(err) and "update.participants[0].tracks[1].sid" in str(err)
    assert "UTF-8" in str(err)

    err = _error(lambda: codec.decode_request(b"\x82\x01\x0b" + b"\x08" + b"\xff" * 10))
    assert err.offset == 4 and err.path == "ping_req.timestamp"
    err = _error(lambda: codec.peek_response(b"\x0a\x05ab"))
    assert err.offset == 1
    err = _error(lambda: codec.encode_request({"pingReq": {"timestamp": "soon"}}))
    assert err.offset is None and err.path == "ping_req.timestamp" and "ping_req.timestamp" in str(err)
    err = _error(lambda: codec.encode_response({"update": {"participants": [{"nope": 1}]}}))
    assert err.path.startswith("update.participants")
    assert isinstance(_error(lambda: codec.decode_response_json("{")), ValueError)


def _deep_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def test_hostile_inputs_raise_codec_error() -> None:
    """Nothing a caller can pass may crash the process; bad input raises CodecError."""
    looped: dict[str, Any] = {}
    looped["offer"] = looped
    bad_mappings: list[Any] = [
        looped,
        {"offer": {"type": _deep_list(100_000)}},
        {"pingReq": {"timestamp": float("nan")}},
        {"pingReq": {"timestamp": 10**30}},
        {"pingReq": {"timestamp": {1, 2}}},
        {1: 2},
        {"offer": {"sdp": "\ud800"}},
        {"offer": {"midToTrackId": {1: "a"}}},
    ]
    for mapping in bad_mappings:
        with pytest.raises(CodecError):
            codec.encode_request(mapping)
        with pytest.raises(CodecError):
            codec.encode_request_json(mapping)
    for text in ["[" * 100_000, '{"offer":' * 100_000, '{"pong": "\ud800"}', '{"pong": "\\ud800"}', b"\xff"]:
        with pytest.raises(CodecError):
            codec.decode_response_json(text)
    # Groups nested past upb's limit of 100, and a buffer of nothing but continuation bytes.
    for frame in [b"\xfb\x07" * 5_000 + b"\xfc\x07" * 5_000, b"\x80" * 100_000, b"\x0a\xff\xff\xff\xff\x0f"]:
        with pytest.raises(CodecError):
            codec.decode_request(frame)


def test_buffer_changed_after_decode_never_crashes() -> None:
    # A bytearray may be rewritten in place while a view holds it; reads then fail cleanly
    # (or see the new bytes) but never read out of bounds.
    wire = reference("response", "join").SerializeToString()
    for fill in (0x00, 0x80, 0xFF, 0x0B):
        buf = bytearray(wire)
        view = codec.decode_response(buf)
        participant = view.join.participant
        buf[:] = bytes([fill]) * len(buf)
        for read in (view.to_dict, lambda p=participant: p.tracks, lambda p=participant: dict(p.attributes)):
            with contextlib.suppress(CodecError):
                read()
