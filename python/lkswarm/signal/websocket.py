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
are answered with pongs automatically; a close frame is echoed once.
permessage-deflate is never offered: livekit-server would then compress every
frame it writes.

Memory: what a hostile or broken peer can make us hold is bounded twice.

- Per connection, by ``max_message_bytes`` (``--max-frame-bytes``): a frame, or
  a fragmented message, whose *declared* length exceeds it is refused as soon
  as its header has arrived, before any of its payload is buffered, with close
  code 1009 and a ``frame_too_large: ...`` reason naming both sizes. The
  receive buffer only ever holds one incomplete frame (at most the limit plus
  a 14-byte header); complete frames are parsed straight from the chunk they
  arrived in. Control frames over 125 bytes are protocol errors (RFC 6455
  §5.5), so a peer cannot make us echo a huge ping.
- Per process, by a shared `ReceiveBudget`: before a connection buffers an
  incomplete frame it reserves the frame's whole declared size (plus what its
  fragmented message already holds); a reservation that would take the
  process past the budget's total fails that connection at once (1009,
  ``receive_budget_exhausted: ...``). We fail rather than wait: waiting would
  mean pausing the socket's reads until another connection frees its share,
  and a connection that fails says why, where one that stalls only times out.
  A reserved frame always completes (nothing else can take its share), and a
  closed connection returns what it held.

The HTTP response head (64 KiB) and a refusal's body (64 KiB, the rest is
dropped) are capped too, so no state of the client buffers without bound.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import struct
from dataclasses import dataclass
from enum import Enum

from lkswarm._core import ws_encode_frame, ws_parse_frames
from lkswarm.errors import ConfigError, SignalError

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# The largest JoinResponse we could build (tests/signal/test_frame_limits.py builds it again): a room of
# 10,000 publishers, each with identity, sid, name, ~100 B of metadata, permissions, an Opus track and a
# 3-layer simulcast VP8 track with their codecs, is 5,430,553 bytes (5.18 MiB, ~543 B per participant)
# as a SignalResponse. The default limit leaves 3x headroom above it. Newer livekit-server versions cap
# signal messages at 2 MiB themselves; the headroom is for older servers, and the limit for hostile peers.
MEASURED_JOIN_RESPONSE_10K_BYTES = 5_430_553
DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
# The least --max-frame-bytes accepts: below that an ordinary JoinResponse or SDP offer would not fit. (The
# client itself takes any positive limit, so tests can use tiny ones.)
MIN_MAX_FRAME_BYTES = 64 * 1024
# Far above any signal message; it also keeps header + length inside the native parser's usize arithmetic.
MAX_MAX_FRAME_BYTES = 1024 * 1024 * 1024
# The process-wide budget holds this many frames of the limit at once (64 MiB for the default limit).
BUDGET_FRAMES = 4

MAX_HEADER_BYTES = 14  # 2 + 8 (64-bit length) + 4 (mask key)
MAX_CONTROL_PAYLOAD_BYTES = 125  # RFC 6455 §5.5
MAX_HEAD_BYTES = 64 * 1024  # the HTTP response head
MAX_REJECT_BODY_BYTES = 64 * 1024  # of a refusal's body; the outcome detail keeps 200 characters of it
_DECLARED = re.compile(r"frame of ([0-9]+) bytes exceeds")  # the native parser's FrameError::TooBig
_CONTENT_LENGTH = re.compile(rb"[0-9]{1,15}")  # ASCII digits only: str.isdigit() accepts '²', which int() refuses

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
    """The connection is closed; ``code`` 1006 means it ended without a close frame.

    ``cause`` is set when this client closed it, as the participant's failure reason: ``frame_too_large``,
    ``receive_budget_exhausted`` or ``ws_protocol_error``; empty when the peer closed or the connection dropped.
    """

    code: int
    reason: str
    cause: str = ""


Event = Opened | Rejected | Message | Closed


def encode_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final, masked client frame; the mask is random unless given (tests)."""
    return ws_encode_frame(opcode, payload, mask)


def check_max_frame_bytes(value: int) -> int:
    """``value`` if it is a usable frame limit, else `ConfigError` naming the range."""
    if not 1 <= value <= MAX_MAX_FRAME_BYTES:
        raise ConfigError(f"max frame bytes must be between 1 and {MAX_MAX_FRAME_BYTES}, got {value}")
    return value


def _peek_header(buf: bytes | bytearray | memoryview) -> tuple[int, int, int] | None:
    """``(opcode, header_bytes, payload_bytes)`` of the frame starting ``buf``; None while its header is incomplete."""
    if len(buf) < 2:
        return None
    header_bytes = 6 if buf[1] & 0x80 else 2  # a mask key follows the length
    payload_bytes = buf[1] & 0x7F
    if payload_bytes == 126:
        header_bytes += 2
        if len(buf) < 4:
            return None
        payload_bytes = int.from_bytes(buf[2:4], "big")
    elif payload_bytes == 127:
        header_bytes += 8
        if len(buf) < 10:
            return None
        payload_bytes = int.from_bytes(buf[2:10], "big")
    return buf[0] & 0x0F, header_bytes, payload_bytes


class ReceiveBudget:
    """The bytes every WebSocket client sharing this budget may hold at once (incomplete frames, fragments).

    One per process (the driver shares one among all its connections; each ``--workers`` process has its
    own), used from one thread: the event loop that feeds the clients. Clients reserve before they buffer
    (`resize`) and give everything back when they close.
    """

    __slots__ = ("peak_bytes", "refusals", "total_bytes", "used_bytes")

    def __init__(self, total_bytes: int) -> None:
        if total_bytes < 1:
            raise ConfigError(f"a receive budget needs at least one byte, got {total_bytes}")
        self.total_bytes = total_bytes
        self.used_bytes = 0  # reserved by the clients right now
        self.peak_bytes = 0  # the most ever reserved at once
        self.refusals = 0  # reservations refused (each failed a connection)

    @classmethod
    def for_frame_limit(cls, max_frame_bytes: int) -> ReceiveBudget:
        """Room for `BUDGET_FRAMES` frames of the limit, headers included."""
        return cls(BUDGET_FRAMES * (check_max_frame_bytes(max_frame_bytes) + MAX_HEADER_BYTES))

    def resize(self, held_bytes: int, wanted_bytes: int) -> bool:
        """Changes one client's reservation from ``held_bytes`` to ``wanted_bytes``; False (and no change) if
        growing it would pass the total. Shrinking always succeeds."""
        grow_bytes = wanted_bytes - held_bytes
        if grow_bytes > 0 and self.used_bytes + grow_bytes > self.total_bytes:
            self.refusals += 1
            return False
        self.used_bytes += grow_bytes
        self.peak_bytes = max(self.peak_bytes, self.used_bytes)
        return True


class WebSocketClient:
    """Client side of one WebSocket connection, without I/O."""

    def __init__(
        self,
        host: str,
        path: str,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        max_message_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        budget: ReceiveBudget | None = None,
    ) -> None:
        self.state = State.CONNECTING
        self.host = host  # Host header value, "host:port"
        self.path = path  # request target, path and query
        self.headers = headers  # extra request headers (e.g. Authorization)
        # The largest frame and the largest reassembled message (--max-frame-bytes).
        self.max_message_bytes = check_max_frame_bytes(max_message_bytes)
        self.budget = budget  # shared with the process's other connections; None: bounded per connection only
        self._key = base64.b64encode(os.urandom(16)).decode("ascii")
        self._inbuf = bytearray()  # the HTTP head while CONNECTING, then one incomplete frame at most
        self._pending_bytes: int | None = None  # declared size of the frame in _inbuf; None: header incomplete
        self._reserved_bytes = 0  # this connection's share of the budget
        self._outbuf: list[bytes] = []  # frames waiting for data_to_send()
        self._events: list[Event] = []
        self._fragments: list[bytes] = []  # pieces of a fragmented message
        self._fragment_opcode = 0
        self._fragment_bytes = 0
        self._reject_status = 0  # status of a non-101 response whose body is still arriving
        self._reject_body_left = -1
        self._close_sent = False

    @property
    def buffered_bytes(self) -> int:
        """What this connection holds of data not yet delivered (the HTTP head, a partial frame, fragments)."""
        return len(self._inbuf) + self._fragment_bytes

    @property
    def reserved_bytes(self) -> int:
        """This connection's share of the budget (0 without one)."""
        return self._reserved_bytes

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
        if end < 0 or end > MAX_HEAD_BYTES:
            if len(self._inbuf) > MAX_HEAD_BYTES:
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
            self._reject_status = status or -1  # a status of 0 must still read as "rejected"
            length = _CONTENT_LENGTH.fullmatch(headers.get("content-length", "").encode("latin-1"))
            self._reject_body_left = int(length[0]) if length else -1
            self._maybe_finish_reject(eof=False)
            return False
        if headers.get("sec-websocket-accept") != self._expected_accept():
            self._fail(CLOSE_PROTOCOL_ERROR, "bad Sec-WebSocket-Accept")
            return False
        self.state = State.OPEN
        self._events.append(Opened())
        return True

    def _maybe_finish_reject(self, *, eof: bool) -> None:
        if 0 <= self._reject_body_left <= len(self._inbuf):
            body = bytes(self._inbuf[: self._reject_body_left])
        elif eof or len(self._inbuf) >= MAX_REJECT_BODY_BYTES:
            body = bytes(self._inbuf[:MAX_REJECT_BODY_BYTES])  # a longer body is cut: the start says why
        else:
            return
        self._inbuf = bytearray()
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
            elif self._parse_response():
                data, self._inbuf = bytes(self._inbuf), bytearray()
                self._receive_frames(data)
        else:
            self._receive_frames(data)
        if self._closed():
            self._drop_buffers()

    def receive_eof(self) -> None:
        if self.state is State.CLOSED:
            return
        if self.state is State.CONNECTING and self._reject_status:
            self._maybe_finish_reject(eof=True)
        else:
            self.state = State.CLOSED
            self._events.append(Closed(CLOSE_ABNORMAL, "connection closed without a close frame"))
        self._drop_buffers()

    def _closed(self) -> bool:
        return self.state is State.CLOSED

    def _receive_frames(self, data: bytes) -> None:
        # Each pass consumes at least one byte: a pending frame always wants more, and a header never
        # holds 14 bytes while incomplete.
        pos = 0
        while pos < len(data) and not self._closed():
            if self._inbuf:
                pos += self._fill_pending(memoryview(data)[pos:])
            else:
                pos += self._parse_chunk(data if pos == 0 else memoryview(data)[pos:])

    def _parse_chunk(self, chunk: bytes | memoryview) -> int:
        """Handles the complete frames at the start of ``chunk`` and buffers what is left (a frame's start)."""
        frames, used = self._parse(chunk)
        self._handle_frames(frames)
        if used < len(chunk) and not self._closed() and self._admit_pending(chunk[used:]):
            self._inbuf += chunk[used:]
        return len(chunk)

    def _fill_pending(self, chunk: bytes | memoryview) -> int:
        """Adds to the buffered incomplete frame no more of ``chunk`` than it needs; returns the bytes taken."""
        want = MAX_HEADER_BYTES if self._pending_bytes is None else self._pending_bytes
        taken = chunk[: want - len(self._inbuf)]
        self._inbuf += taken
        if self._pending_bytes is not None and len(self._inbuf) < self._pending_bytes:
            return len(taken)  # still incomplete: nothing to parse yet
        frames, used = self._parse(self._inbuf)
        rest = self._inbuf[used:]
        # A fresh buffer, so that a large frame's memory goes back now rather than at the next resize.
        self._inbuf, self._pending_bytes = bytearray(), None
        self._handle_frames(frames)
        if self._closed():
            return len(taken)
        if not rest:
            self._settle_reservation(0)  # the frame is out: only fragments (if any) stay reserved
        elif self._admit_pending(rest):
            self._inbuf = rest
        return len(taken)

    def _parse(self, source: bytes | bytearray | memoryview) -> tuple[list[tuple[bool, int, bool, bytes]], int]:
        try:
            return ws_parse_frames(source, self.max_message_bytes)
        except ValueError as exc:  # the native parser's two refusals: a declared length, reserved bits
            declared = _DECLARED.search(str(exc))
            if declared is not None:
                self._refuse_too_big(int(declared[1]), "frame")
            else:
                self._fail(CLOSE_PROTOCOL_ERROR, str(exc))
            return [], len(source)

    def _admit_pending(self, start: bytes | bytearray | memoryview) -> bool:
        """Decides, from its header alone, whether the incomplete frame ``start`` begins may be buffered."""
        header = _peek_header(start)
        if header is None:
            self._pending_bytes = None
            return self._settle_reservation(len(start))
        opcode, header_bytes, payload_bytes = header
        if opcode >= OP_CLOSE and payload_bytes > MAX_CONTROL_PAYLOAD_BYTES:
            self._fail(CLOSE_PROTOCOL_ERROR, f"control frame of {payload_bytes} bytes (at most 125)")
            return False
        if opcode == OP_CONT and self._fragment_bytes + payload_bytes > self.max_message_bytes:
            self._refuse_too_big(self._fragment_bytes + payload_bytes, "fragmented message")
            return False
        self._pending_bytes = header_bytes + payload_bytes
        return self._settle_reservation(self._pending_bytes)

    def _settle_reservation(self, pending_bytes: int) -> bool:
        """Sets this connection's reservation to ``pending_bytes`` plus its fragments; False if refused."""
        wanted_bytes = pending_bytes + self._fragment_bytes
        if self.budget is not None and not self.budget.resize(self._reserved_bytes, wanted_bytes):
            budget = self.budget
            self._fail(
                CLOSE_TOO_BIG,
                f"receive_budget_exhausted: holding {wanted_bytes} bytes would pass the process's receive budget of "
                f"{budget.total_bytes} ({budget.used_bytes} reserved by its connections now; the budget is "
                f"{BUDGET_FRAMES} x --max-frame-bytes)",
                cause="receive_budget_exhausted",
            )
            return False
        self._reserved_bytes = wanted_bytes
        return True

    def _refuse_too_big(self, size_bytes: int, what: str) -> None:
        self._fail(
            CLOSE_TOO_BIG,
            f"frame_too_large: a {what} of {size_bytes} bytes exceeds the limit of {self.max_message_bytes} "
            "(--max-frame-bytes)",
            cause="frame_too_large",
        )

    def _drop_buffers(self) -> None:
        """A closed connection holds nothing and gives its share of the budget back."""
        self._inbuf, self._pending_bytes = bytearray(), None
        self._fragments, self._fragment_bytes = [], 0
        if self.budget is not None:
            self.budget.resize(self._reserved_bytes, 0)
        self._reserved_bytes = 0

    def _handle_frames(self, frames: list[tuple[bool, int, bool, bytes]]) -> None:
        closed = State.CLOSED
        for fin, opcode, masked, payload in frames:
            if self.state is closed:
                return
            if masked:
                self._fail(CLOSE_PROTOCOL_ERROR, "server frames must not be masked")
                return
            if fin and opcode == OP_BINARY and not self._fragments:
                self._events.append(Message(payload))  # nearly every frame: first, and without a call
            else:
                self._handle_frame(fin, opcode, payload)

    def _handle_frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode >= OP_CLOSE and (len(payload) > MAX_CONTROL_PAYLOAD_BYTES or not fin):
            self._fail(CLOSE_PROTOCOL_ERROR, "control frames must be final and at most 125 bytes")
        elif opcode in (OP_TEXT, OP_BINARY):
            if self._fragments:
                self._fail(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
            elif fin:
                self._deliver(opcode, payload)
            else:
                self._fragment_opcode = opcode
                self._fragments = [payload]
                self._fragment_bytes = len(payload)
                self._settle_reservation(0)
        elif opcode == OP_CONT:
            self._continue_message(fin, payload)
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

    def _continue_message(self, fin: bool, payload: bytes) -> None:
        if not self._fragments:
            self._fail(CLOSE_PROTOCOL_ERROR, "continuation frame without a message")
            return
        if self._fragment_bytes + len(payload) > self.max_message_bytes:
            self._refuse_too_big(self._fragment_bytes + len(payload), "fragmented message")
            return
        self._fragments.append(payload)
        self._fragment_bytes += len(payload)
        if fin:
            data = b"".join(self._fragments)
            self._fragments, self._fragment_bytes = [], 0
            self._deliver(self._fragment_opcode, data)
        self._settle_reservation(0)

    def _deliver(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_TEXT:
            try:
                self._events.append(Message(payload.decode("utf-8")))
            except UnicodeDecodeError:
                self._fail(CLOSE_PROTOCOL_ERROR, "text frame is not UTF-8")
        else:
            self._events.append(Message(payload))

    def _fail(self, code: int, reason: str, cause: str = "ws_protocol_error") -> None:
        if self.state is State.OPEN and not self._close_sent:
            self._outbuf.append(encode_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode()[:120]))
            self._close_sent = True
        self.state = State.CLOSED
        self._events.append(Closed(code, reason, cause))

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
