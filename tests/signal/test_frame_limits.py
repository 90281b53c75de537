"""Frame limits and the shared receive budget of the sans-I/O WebSocket client, and how the default was sized.

A frame (or fragmented message) whose declared length passes the limit is refused from its header alone,
before any payload is buffered; the receive buffer never holds more than one frame of the limit plus its
header; all clients sharing a `ReceiveBudget` hold at most its total. No sockets.
"""

from __future__ import annotations

import json
import struct

import pytest
from livekit.protocol import models, rtc
from test_fuzz_hostile import accept_response, frame, frame_header

from lkswarm.config import RunConfig
from lkswarm.errors import ConfigError
from lkswarm.net.ws_driver import shared_budget
from lkswarm.signal.websocket import (
    BUDGET_FRAMES,
    DEFAULT_MAX_FRAME_BYTES,
    MAX_HEADER_BYTES,
    MAX_REJECT_BODY_BYTES,
    MEASURED_JOIN_RESPONSE_10K_BYTES,
    Closed,
    Message,
    Opened,
    ReceiveBudget,
    Rejected,
    State,
    WebSocketClient,
)

MiB = 1024 * 1024


def open_client(limit_bytes: int = 4096, budget: ReceiveBudget | None = None) -> WebSocketClient:
    client = WebSocketClient("h:1", "/rtc", max_message_bytes=limit_bytes, budget=budget)
    client.receive_data(accept_response(client))
    assert client.events_received() == [Opened()]
    return client


def sent_close(client: WebSocketClient) -> int:
    """The close code of the close frame the client wrote (masked: the 2-byte code follows a 6-byte header)."""
    out = client.data_to_send()
    assert out[0] == 0x88, "a close frame"
    code: int = struct.unpack("!H", bytes(b ^ m for b, m in zip(out[6:8], out[2:4], strict=True)))[0]
    return code


# -- sizing the default --------------------------------------------------------------------------------------


def _layers(i: int) -> list[models.VideoLayer]:
    sizes = [
        (models.VideoQuality.LOW, 320, 180, 150_000, "q"),
        (models.VideoQuality.MEDIUM, 640, 360, 500_000, "h"),
        (models.VideoQuality.HIGH, 1280, 720, 1_700_000, "f"),
    ]
    return [
        models.VideoLayer(quality=q, width=w, height=h, bitrate=b, ssrc=100_000 + 3 * i + n, rid=rid, spatial_layer=n)
        for n, (q, w, h, b, rid) in enumerate(sizes)
    ]


def realistic_participant(i: int) -> models.ParticipantInfo:
    """A publisher as livekit-server describes it: ~100 B of metadata, Opus, and VP8 simulcast in 3 layers."""
    metadata = json.dumps(
        {"role": "attendee", "avatar": f"https://cdn.example.com/avatars/{i:08d}.png", "team": "blue", "n": i}
    )
    version = models.TimedVersion(unix_micro=1_700_000_000_000_000 + i, ticks=i % 7)
    audio = models.TrackInfo(
        sid=f"TR_AM{i:010x}",
        type=models.AUDIO,
        name="microphone",
        source=models.TrackSource.MICROPHONE,
        mime_type="audio/opus",
        mid=str(2 * i % 100),
        stream="camera",
        version=version,
        codecs=[models.SimulcastCodecInfo(mime_type="audio/opus", mid="0", cid=f"mic-{i}")],
        audio_features=[models.AudioTrackFeature.TF_AUTO_GAIN_CONTROL, models.AudioTrackFeature.TF_ECHO_CANCELLATION],
    )
    video = models.TrackInfo(
        sid=f"TR_VC{i:010x}",
        type=models.VIDEO,
        name="camera",
        source=models.TrackSource.CAMERA,
        width=1280,
        height=720,
        simulcast=True,
        mime_type="video/VP8",
        mid="1",
        stream="camera",
        version=version,
        layers=_layers(i),
        codecs=[models.SimulcastCodecInfo(mime_type="video/VP8", mid="1", cid=f"cam-{i}", layers=_layers(i))],
    )
    return models.ParticipantInfo(
        sid=f"PA_{i:012x}",
        identity=f"user-{i:05d}@example.com",
        name=f"Participant {i:05d}",
        state=models.ParticipantInfo.State.ACTIVE,
        metadata=metadata,
        joined_at=1_700_000_000 + i,
        joined_at_ms=1_700_000_000_000 + i,
        version=3,
        region="eu-west",
        is_publisher=True,
        kind=models.ParticipantInfo.Kind.STANDARD,
        permission=models.ParticipantPermission(can_subscribe=True, can_publish=True, can_publish_data=True),
        tracks=[audio, video],
    )


def join_response_bytes(participants: int) -> bytes:
    """The SignalResponse a newcomer to a room of ``participants`` publishers receives."""
    join = rtc.JoinResponse(
        room=models.Room(
            sid="RM_abcdefghijkl", name="big-room", num_participants=participants + 1, num_publishers=participants
        ),
        participant=realistic_participant(participants),
        other_participants=[realistic_participant(i) for i in range(participants)],
        server_version="1.9.0",
        subscriber_primary=True,
        ping_timeout=15,
        ping_interval=5,
    )
    return rtc.SignalResponse(join=join).SerializeToString()


def test_the_default_limit_holds_a_10k_room_join_response_with_headroom() -> None:
    size_bytes = len(join_response_bytes(10_000))
    # The figure recorded next to the default; a protocol version that grows it should make us look again.
    assert size_bytes == pytest.approx(MEASURED_JOIN_RESPONSE_10K_BYTES, rel=0.05), size_bytes
    assert 3 * size_bytes <= DEFAULT_MAX_FRAME_BYTES, f"{size_bytes} B leaves too little headroom"
    # And one of that size goes through, in socket-sized pieces.
    client = open_client(DEFAULT_MAX_FRAME_BYTES, ReceiveBudget.for_frame_limit(DEFAULT_MAX_FRAME_BYTES))
    data = frame(0x2, join_response_bytes(10_000))
    for i in range(0, len(data), 256 * 1024):
        client.receive_data(data[i : i + 256 * 1024])
        assert client.buffered_bytes <= DEFAULT_MAX_FRAME_BYTES + MAX_HEADER_BYTES
    [message] = client.events_received()
    assert isinstance(message, Message) and len(message.data) == size_bytes
    assert client.buffered_bytes == 0 and client.reserved_bytes == 0


def test_max_frame_bytes_is_configurable_and_checked() -> None:
    assert RunConfig().max_frame_bytes == DEFAULT_MAX_FRAME_BYTES
    assert RunConfig(max_frame_bytes=2 * MiB).max_frame_bytes == 2 * MiB
    for bad in (1000, 2**40):
        with pytest.raises(ValueError, match="max_frame_bytes"):
            RunConfig(max_frame_bytes=bad)
    with pytest.raises(ConfigError):
        WebSocketClient("h:1", "/", max_message_bytes=0)
    with pytest.raises(ConfigError):
        WebSocketClient("h:1", "/", max_message_bytes=2**62)  # would overflow the native parser's arithmetic


# -- the limit per connection --------------------------------------------------------------------------------


def test_a_64_mib_frame_is_refused_from_its_header_alone() -> None:
    client = open_client(DEFAULT_MAX_FRAME_BYTES)
    client.receive_data(frame_header(0x2, 64 * MiB))  # ten bytes: nothing of the payload has come
    [closed] = client.events_received()
    assert isinstance(closed, Closed) and closed.code == 1009 and closed.cause == "frame_too_large"
    assert closed.reason.startswith("frame_too_large: ")
    assert str(64 * MiB) in closed.reason and str(DEFAULT_MAX_FRAME_BYTES) in closed.reason
    assert "\n" not in closed.reason
    assert sent_close(client) == 1009
    assert client.state is State.CLOSED and client.buffered_bytes == 0
    client.receive_data(bytes(1024 * 1024))  # what the peer still sends is dropped, not buffered
    assert client.buffered_bytes == 0 and client.events_received() == []


def test_a_header_that_arrives_byte_by_byte_is_refused_when_complete() -> None:
    client = open_client(4096)
    header = frame(0x2, b"ok") + frame_header(0x2, 4097)
    for i in range(len(header)):
        client.receive_data(header[i : i + 1])
        assert client.buffered_bytes <= MAX_HEADER_BYTES
    events = client.events_received()
    assert events[0] == Message(b"ok")
    assert isinstance(events[1], Closed) and events[1].code == 1009 and "4097" in events[1].reason


def test_a_fragmented_message_is_refused_at_the_header_that_passes_the_limit() -> None:
    client = open_client(4096)
    client.receive_data(frame(0x2, bytes(3000), fin=False))
    assert client.buffered_bytes == 3000  # the fragment held
    client.receive_data(frame_header(0x0, 2000))  # 5000 in all: refused before its payload comes
    [closed] = client.events_received()
    assert isinstance(closed, Closed) and closed.code == 1009
    assert "fragmented message of 5000 bytes" in closed.reason
    assert client.buffered_bytes == 0


def test_the_buffer_holds_one_frame_at_most_whatever_the_chunking() -> None:
    client = open_client(4096)
    # A frame of the limit, then small frames; the last chunk carries the frame's end and all of them.
    data = frame(0x2, bytes(4096)) + b"".join(frame(0x2, bytes([i])) for i in range(50))
    client.receive_data(data[:100])
    assert client.buffered_bytes == 100
    client.receive_data(data[100:])
    assert client.buffered_bytes == 0
    events = client.events_received()
    assert events[0] == Message(bytes(4096)) and len(events) == 51


def test_oversized_or_fragmented_control_frames_are_protocol_errors() -> None:
    for data in (frame(0x9, bytes(126)), frame_header(0x9, 10_000), frame(0x9, b"p", fin=False)):
        client = open_client(1 << 20)
        client.receive_data(data)
        [closed] = client.events_received()
        assert isinstance(closed, Closed) and closed.code == 1002 and closed.cause == "ws_protocol_error", data[:4]
        assert sent_close(client) == 1002  # a close, never a pong echoing the ping


def test_a_refusal_body_is_capped_and_odd_content_lengths_do_not_raise() -> None:
    client = WebSocketClient("h:1", "/")
    client.handshake_request()
    client.receive_data(b"HTTP/1.1 500 Oops\r\nContent-Length: 99999999999999\r\n\r\n" + b"x" * (200 * 1024))
    [rejected] = client.events_received()
    assert isinstance(rejected, Rejected) and len(rejected.body) == MAX_REJECT_BODY_BYTES
    assert client.buffered_bytes == 0
    for length in (b"\xb2", b"9" * 5000, b"-1"):  # str.isdigit('²') is True, int('²') raises
        client = WebSocketClient("h:1", "/")
        client.receive_data(b"HTTP/1.1 403 No\r\nContent-Length: " + length + b"\r\n\r\nbody")
        client.receive_eof()
        assert client.events_received() == [Rejected(403, "body")]


# -- the budget shared by all connections ----------------------------------------------------------------------


def test_connections_share_the_budget_and_one_that_would_pass_it_fails_at_once() -> None:
    budget = ReceiveBudget(2 * (4096 + MAX_HEADER_BYTES))
    first, second, third = (open_client(4096, budget) for _ in range(3))
    big = frame(0x2, bytes(4096))
    first.receive_data(big[:10])
    second.receive_data(big[:10])
    assert budget.used_bytes == 2 * len(big)  # each reserved its whole frame from the header
    third.receive_data(big[:10])
    [closed] = third.events_received()
    assert isinstance(closed, Closed) and closed.code == 1009 and closed.cause == "receive_budget_exhausted"
    assert closed.reason.startswith("receive_budget_exhausted: ") and str(budget.total_bytes) in closed.reason
    assert third.buffered_bytes == 0 and budget.refusals == 1
    # Small frames parsed straight from their chunk reserve nothing.
    first.receive_data(big[10:] + frame(0x2, b"x"))
    assert first.events_received() == [Message(bytes(4096)), Message(b"x")]
    assert budget.used_bytes == len(big)  # the first gave its share back
    second.receive_eof()  # a closed connection too
    [dropped] = second.events_received()
    assert isinstance(dropped, Closed) and dropped.code == 1006 and dropped.cause == ""  # not ours to name
    assert budget.used_bytes == 0 and budget.peak_bytes == 2 * len(big)


def test_fragments_held_count_against_the_budget() -> None:
    budget = ReceiveBudget(5000)
    client = open_client(4096, budget)
    client.receive_data(frame(0x1, b"a" * 3000, fin=False))
    assert budget.used_bytes == 3000
    client.receive_data(frame(0x0, b"b" * 1000))
    assert client.events_received() == [Message("a" * 3000 + "b" * 1000)]
    assert budget.used_bytes == 0
    other = open_client(4096, budget)
    client.receive_data(frame(0x1, b"a" * 3000, fin=False))
    other.receive_data(frame(0x1, b"c" * 2500, fin=False))  # 5500 > 5000
    [closed] = other.events_received()
    assert isinstance(closed, Closed) and closed.reason.startswith("receive_budget_exhausted")
    assert budget.used_bytes == 3000


def test_the_driver_shares_one_budget_per_limit() -> None:
    assert shared_budget(DEFAULT_MAX_FRAME_BYTES) is shared_budget(DEFAULT_MAX_FRAME_BYTES)
    assert shared_budget(DEFAULT_MAX_FRAME_BYTES).total_bytes == BUDGET_FRAMES * (
        DEFAULT_MAX_FRAME_BYTES + MAX_HEADER_BYTES
    )


@pytest.mark.parametrize(("second_byte", "length"), [(0xFF, 2**64 - 2), (0x7F, 2**64 - 10)])
def test_the_native_parser_refuses_a_length_that_would_wrap_even_without_a_limit(second_byte: int, length: int) -> None:
    """Called directly with a limit near 2^64 (the product caps max_frame_bytes far below), a declared length whose
    header-plus-payload sum wraps used to panic (masked) or loop forever (unmasked) instead of refusing."""
    from lkswarm._core import ws_parse_frames

    header = bytes([0x82, second_byte]) + length.to_bytes(8, "big") + bytes(3)
    with pytest.raises(ValueError, match=f"frame of {length} bytes exceeds"):
        ws_parse_frames(header, 2**64 - 1)
