"""A sans-I/O WebSocket client (RFC 6455) tuned for many small signaling connections.

Theory of operation
-------------------
`WebSocketClient` owns no socket and no clock. The driver writes
`handshake_request()` to the connection, then feeds every received chunk to
`receive_data()` and end-of-stream to `receive_eof()`; it collects
`events_received()` and writes `data_to_send()`.

States: CONNECTING (waiting for the HTTP response) → OPEN → CLOSING (a close
frame was sent or received) → CLOSED. A non-101 response becomes a
`Rejected` event carrying the status and body (livekit-server puts its error
text there), then CLOSED.

Frames: server frames are unmasked; fragmented messages are reassembled; pings
are answered with pongs automatically; a close frame is echoed once. There is
no frame-size cap below `max_message_bytes` (64 MiB by default), because a
JoinResponse in a large room can be megabytes. permessage-deflate is never
offered: livekit-server would then compress every frame it writes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass
from enum import Enum

from lkswarm._core import ws_encode_frame, ws_parse_frames
from lkswarm.errors import SignalError

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG, CLOSE_ABNORMAL = 1000, 1002, 1009, 1006


class State(Enum):
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Opened:
    """The handshake succeeded."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """The server answered the upgrade with a non-101 status."""

    status: int
    body: str


@dataclass(frozen=True, slots=True)
class Message:
    """A complete data message: ``bytes`` for binary frames, ``str`` for text frames."""

    data: bytes | str


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection is closed; ``code`` 1006 means it ended without a close frame."""

    code: int
    reason: str


Event = Opened | Rejected | Message | Closed


def encode_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final, masked client frame; the mask is random unless given (tests)."""
    return ws_encode_frame(opcode, payload, mask)


class WebSocketClient:
    """Client side of one WebSocket connection, without I/O."""

    def __init__(
        self,
        host: str,
        path: str,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.state = State.CONNECTING
        self.host = host  # Host header value, "host:port"
        self.path = path  # request target, path and query
        self.headers = headers  # extra request headers (e.g. Authorization)
        self.max_message_bytes = max_message_bytes
        self._key = base64.b64encode(os.urandom(16)).decode("ascii")
        self._inbuf = bytearray()  # unparsed received bytes
        self._outbuf: list[bytes] = []  # frames waiting for data_to_send()
        self._events: list[Event] = []
        self._fragments: list[bytes] = []  # pieces of a fragmented message
        self._fragment_opcode = 0
        self._fragment_bytes = 0
        self._reject_status = 0  # status of a non-101 response whose body is still arriving
        self._reject_body_left = -1
        self._close_sent = False

    # -- handshake ---------------------------------------------------------

    def handshake_request(self) -> bytes:
        lines = [
            f"GET {self.path} HTTP/1.1",
            f"Host: {self.host}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {self._key}",
            "Sec-WebSocket-Version: 13",
            "User-Agent: lkswarm",
        ]
        lines.extend(f"{k}: {v}" for k, v in self.headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _expected_accept(self) -> str:
        digest = hashlib.sha1(self._key.encode("ascii") + _GUID).digest()
        return base64.b64encode(digest).decode("ascii")

    def _parse_response(self) -> bool:
        """Consumes the HTTP response head; False while it is incomplete."""
        end = self._inbuf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._inbuf) > 64 * 1024:
                self._fail(CLOSE_PROTOCOL_ERROR, "HTTP response head too large")
            return False
        head = bytes(self._inbuf[:end]).decode("latin-1")
        del self._inbuf[: end + 4]
        status_line, *header_lines = head.split("\r\n")
        parts = status_line.split(" ", 2)
        try:
            status = int(parts[1])
        except (IndexError, ValueError):
            self._fail(CLOSE_PROTOCOL_ERROR, f"bad HTTP status line {status_line[:80]!r}")
            return False
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status != 101:
            self._reject_status = status
            length = headers.get("content-length")
            self._reject_body_left = int(length) if length and length.isdigit() else -1
            self._maybe_finish_reject(eof=False)
            return False
        if headers.get("sec-websocket-accept") != self._expected_accept():
            self._fail(CLOSE_PROTOCOL_ERROR, "bad Sec-WebSocket-Accept")
            return False
        self.state = State.OPEN
        self._events.append(Opened())
        return True

    def _maybe_finish_reject(self, *, eof: bool) -> None:
        if self._reject_body_left >= 0 and len(self._inbuf) >= self._reject_body_left:
            body = bytes(self._inbuf[: self._reject_body_left])
        elif eof:
            body = bytes(self._inbuf)
        else:
            return
        self._inbuf.clear()
        self.state = State.CLOSED
        self._events.append(Rejected(self._reject_status, body.decode("utf-8", "replace").strip()))

    # -- receiving -----------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if self.state is State.CLOSED:
            return
        if self.state is State.CONNECTING:
            self._inbuf += data
            if self._reject_status:
                self._maybe_finish_reject(eof=False)
                return
            if not self._parse_response():
                return
            data = bytes(self._inbuf)
            self._inbuf.clear()
        # Common case: whole frames arrive in one chunk and are parsed straight from it.
        source: bytes | bytearray = data
        if self._inbuf:
            self._inbuf += data
            source = self._inbuf
        try:
            frames, used = ws_parse_frames(source, self.max_message_bytes)
        except ValueError as exc:
            self._fail(CLOSE_TOO_BIG if "exceeds" in str(exc) else CLOSE_PROTOCOL_ERROR, str(exc))
            return
        for fin, opcode, masked, payload in frames:
            if self._closed():
                return
            if masked:
                self._fail(CLOSE_PROTOCOL_ERROR, "server frames must not be masked")
                return
            self._handle_frame(fin, opcode, payload)
        if source is data:
            if used < len(data):
                self._inbuf += memoryview(data)[used:]
        else:
            del self._inbuf[:used]

    def receive_eof(self) -> None:
        if self.state is State.CLOSED:
            return
        if self.state is State.CONNECTING and self._reject_status:
            self._maybe_finish_reject(eof=True)
            return
        self.state = State.CLOSED
        self._events.append(Closed(CLOSE_ABNORMAL, "connection closed without a close frame"))

    def _closed(self) -> bool:
        return self.state is State.CLOSED

    def _handle_frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode in (OP_TEXT, OP_BINARY):
            if self._fragments:
                self._fail(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
                return
            if fin:
                self._deliver(opcode, payload)
            else:
                self._fragment_opcode = opcode
                self._fragments = [payload]
                self._fragment_bytes = len(payload)
        elif opcode == OP_CONT:
            if not self._fragments:
                self._fail(CLOSE_PROTOCOL_ERROR, "continuation frame without a message")
                return
            self._fragments.append(payload)
            self._fragment_bytes += len(payload)
            if self._fragment_bytes > self.max_message_bytes:
                self._fail(CLOSE_TOO_BIG, f"message exceeds {self.max_message_bytes} bytes")
                return
            if fin:
                data = b"".join(self._fragments)
                self._fragments = []
                self._deliver(self._fragment_opcode, data)
        elif opcode == OP_PING:
            if self.state is State.OPEN:
                self._outbuf.append(encode_frame(OP_PONG, payload))
        elif opcode == OP_PONG:
            pass
        elif opcode == OP_CLOSE:
            code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 1005
            reason = payload[2:].decode("utf-8", "replace")
            if not self._close_sent:
                self._outbuf.append(encode_frame(OP_CLOSE, payload[:2]))
                self._close_sent = True
            self.state = State.CLOSED
            self._events.append(Closed(code, reason))
        else:
            self._fail(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")

    def _deliver(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_TEXT:
            try:
                self._events.append(Message(payload.decode("utf-8")))
            except UnicodeDecodeError:
                self._fail(CLOSE_PROTOCOL_ERROR, "text frame is not UTF-8")
        else:
            self._events.append(Message(payload))

    def _fail(self, code: int, reason: str) -> None:
        if self.state is State.OPEN and not self._close_sent:
            self._outbuf.append(encode_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode()[:120]))
            self._close_sent = True
        self.state = State.CLOSED
        self._events.append(Closed(code, reason))

    # -- sending -------------------------------------------------------------

    def send_binary(self, data: bytes) -> None:
        self._send(OP_BINARY, data)

    def send_text(self, text: str) -> None:
        self._send(OP_TEXT, text.encode("utf-8"))

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.state is not State.OPEN:
            raise SignalError("not_open", f"cannot send on a {self.state.value} WebSocket")
        self._outbuf.append(encode_frame(opcode, payload))

    def send_close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        if self.state is State.OPEN and not self._close_sent:
            self._outbuf.append(encode_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode()[:120]))
            self._close_sent = True
            self.state = State.CLOSING

    def events_received(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> bytes:
        if not self._outbuf:
            return b""
        data = b"".join(self._outbuf)
        self._outbuf.clear()
        return data
