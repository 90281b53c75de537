"""The sans-I/O WebSocket client, with no sockets."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest

from lkswarm.errors import SignalError
from lkswarm.signal.websocket import (
    Closed,
    Message,
    Opened,
    Rejected,
    State,
    WebSocketClient,
    encode_frame,
)


def mask_payload(payload: bytes, mask: bytes) -> bytes:
    """XORs ``payload`` with the 4-byte ``mask`` repeated (RFC 6455 §5.3), to read our client frames."""
    return bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def accept_for(request: bytes) -> str:
    key = next(line.split(": ")[1] for line in request.decode().split("\r\n") if line.startswith("Sec-WebSocket-Key"))
    digest = hashlib.sha1(key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    return base64.b64encode(digest).decode()


def server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", first, n) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


def open_client() -> WebSocketClient:
    client = WebSocketClient("127.0.0.1:7880", "/rtc?access_token=x")
    request = client.handshake_request()
    response = (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_for(request)}\r\n\r\n"
    )
    client.receive_data(response.encode())
    assert client.events_received() == [Opened()]
    return client


def unmask_client_frame(frame: bytes) -> tuple[int, bytes]:
    opcode = frame[0] & 0x0F
    length = frame[1] & 0x7F
    offset = 2
    if length == 126:
        (length,) = struct.unpack_from("!H", frame, 2)
        offset = 4
    elif length == 127:
        (length,) = struct.unpack_from("!Q", frame, 2)
        offset = 10
    assert frame[1] & 0x80, "client frames must be masked"
    mask = frame[offset : offset + 4]
    return opcode, mask_payload(frame[offset + 4 : offset + 4 + length], mask)


def test_handshake_request_never_offers_compression() -> None:
    request = WebSocketClient("h:1", "/rtc").handshake_request().decode()
    assert request.startswith("GET /rtc HTTP/1.1\r\nHost: h:1\r\n")
    assert "Sec-WebSocket-Version: 13" in request
    assert "Sec-WebSocket-Extensions" not in request


def test_rejected_upgrade_carries_status_and_body() -> None:
    client = WebSocketClient("h:1", "/rtc")
    client.handshake_request()
    body = b"invalid token: token is expired"
    client.receive_data(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: %d\r\n\r\n" % len(body))
    assert client.events_received() == []
    client.receive_data(body)
    assert client.events_received() == [Rejected(401, body.decode())]
    assert client.state is State.CLOSED


def test_bad_accept_key_fails() -> None:
    client = WebSocketClient("h:1", "/rtc")
    client.handshake_request()
    client.receive_data(b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: nope\r\n\r\n")
    events = client.events_received()
    assert isinstance(events[0], Closed) and "Accept" in events[0].reason


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536, 3_000_000])
def test_binary_messages_of_every_length_class(size: int) -> None:
    client = open_client()
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    data = server_frame(0x2, payload)
    # Delivered in awkward pieces: the parser must wait for complete frames.
    for i in range(0, len(data), 7919):
        client.receive_data(data[i : i + 7919])
    assert client.events_received() == [Message(payload)]


def test_fragmented_text_message_and_interleaved_ping() -> None:
    client = open_client()
    client.receive_data(server_frame(0x1, "héllo ".encode(), fin=False))
    client.receive_data(server_frame(0x9, b"p"))  # control frames may interleave
    client.receive_data(server_frame(0x0, b"world"))
    assert client.events_received() == [Message("héllo world")]
    opcode, payload = unmask_client_frame(client.data_to_send())
    assert (opcode, payload) == (0xA, b"p")


def test_client_frames_are_masked_and_round_trip() -> None:
    client = open_client()
    client.send_binary(b"\x01\x02\x03" * 100)
    opcode, payload = unmask_client_frame(client.data_to_send())
    assert (opcode, payload) == (0x2, b"\x01\x02\x03" * 100)
    client.send_text("x" * 70000)
    opcode, payload = unmask_client_frame(client.data_to_send())
    assert (opcode, payload) == (0x1, b"x" * 70000)


def test_server_close_is_echoed_once() -> None:
    client = open_client()
    client.receive_data(server_frame(0x8, struct.pack("!H", 1000) + b"bye"))
    assert client.events_received() == [Closed(1000, "bye")]
    opcode, payload = unmask_client_frame(client.data_to_send())
    assert (opcode, payload) == (0x8, struct.pack("!H", 1000))
    with pytest.raises(SignalError):
        client.send_binary(b"late")


def test_eof_without_close_frame_is_abnormal() -> None:
    client = open_client()
    client.receive_eof()
    assert client.events_received() == [Closed(1006, "connection closed without a close frame")]


def test_oversized_frame_is_refused() -> None:
    client = WebSocketClient("h:1", "/rtc", max_message_bytes=1000)
    request = client.handshake_request()
    client.receive_data(
        f"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: {accept_for(request)}\r\n\r\n".encode()
        + server_frame(2, bytes(1001))
    )
    events = client.events_received()
    assert events[0] == Opened()
    assert isinstance(events[1], Closed) and events[1].code == 1009


def test_protocol_errors_close_the_connection() -> None:
    client = open_client()
    client.receive_data(server_frame(0x0, b"orphan continuation"))
    assert isinstance(client.events_received()[0], Closed)
    client = open_client()
    client.receive_data(server_frame(0x1, b"\xff\xfe"))
    assert isinstance(client.events_received()[0], Closed)


def test_encode_frame_uses_the_given_mask() -> None:
    frame = encode_frame(0x2, b"abcd", mask=b"\x00\x00\x00\x00")
    assert frame == b"\x82\x84\x00\x00\x00\x00abcd"
