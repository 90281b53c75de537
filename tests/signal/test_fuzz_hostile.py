"""Property-based fuzzing of the sans-I/O WebSocket client and `SignalSession` against hostile byte streams.

Theory of operation
-------------------
Hypothesis builds a server byte stream: a valid 101 handshake (for the client's own key), then pieces
chosen among arbitrary bytes, well-formed frames with random payloads (protobuf-ish bytes, JSON text,
mutated real SignalResponses), random fragmentation, declared lengths far past the limit, control frames
where they do not belong (fragmented, oversized, mid-message), masked frames and reserved bits. The stream
is cut at random boundaries and fed, chunk by chunk, to clients that share one small `ReceiveBudget`; every
delivered message goes to a `SignalSession`, with a clock that moves and timers that fire.

The properties, checked after every feed:
- nothing escapes but the project's own errors (`LkswarmError`): the fuzzed calls are not wrapped, so any
  other exception (a Rust panic included) fails the test;
- the client buffers at most the frame limit plus one header once open (the HTTP head cap before), a
  closed client holds nothing, and the budget's count is exactly the sum of the clients' reservations
  and never passes its total;
- the session is in a defined state: ENDED always carries a reason and wants no timer.
After end-of-stream every client is CLOSED and the budget is back to zero.

No sockets, no server: these run in the unit suite. ``max_examples`` keeps each under a few seconds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lkswarm.errors import LkswarmError
from lkswarm.signal import codec
from lkswarm.signal.session import SessionState, SignalSession
from lkswarm.signal.websocket import (
    MAX_HEAD_BYTES,
    MAX_HEADER_BYTES,
    Message,
    ReceiveBudget,
    State,
    WebSocketClient,
)

LIMIT_BYTES = 2048  # small, so that random lengths cross it often
CLIENTS = 3
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- building blocks -----------------------------------------------------------------------------------------


def accept_response(client: WebSocketClient) -> bytes:
    request = client.handshake_request().decode()
    key = next(line.split(": ")[1] for line in request.split("\r\n") if line.startswith("Sec-WebSocket-Key"))
    accept = base64.b64encode(hashlib.sha1(key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"


def frame_header(opcode: int, length: int, *, fin: bool = True, masked: bool = False, rsv: int = 0) -> bytes:
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head = struct.pack("!BB", first, mask_bit | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, length)
    return head + (b"\x01\x02\x03\x04" if masked else b"")


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    return frame_header(opcode, len(payload), fin=fin) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


# Real SignalResponses (join, update, leave, pong, refresh, trickle, offer) to mutate and splice.
SEEDS = [
    codec.encode_response(mapping)
    for mapping in (
        {
            "join": {
                "room": {"sid": "RM_1", "name": "r"},
                "participant": {"sid": "PA_me", "identity": "me"},
                "otherParticipants": [{"sid": "PA_b", "identity": "bob", "tracks": [{"sid": "TR_1", "type": "AUDIO"}]}],
                "pingInterval": 5,
                "pingTimeout": 15,
            }
        },
        {"update": {"participants": [{"sid": "PA_c", "identity": "carol", "state": "DISCONNECTED"}]}},
        {"leave": {"reason": 7, "action": "DISCONNECT"}},
        {"pongResp": {"lastPingTimestamp": 1, "timestamp": 2}},
        {"refreshToken": "tok"},
        {"trickle": {"candidateInit": "{}", "target": 1}},
        {"offer": {"type": "offer", "sdp": "v=0", "id": 3}},
    )
]

JSON_SEEDS = [
    {"join": {"room": {"name": "r"}, "participant": {"sid": "PA_me", "identity": "me"}, "pingInterval": 1}},
    {"update": {"participants": [{"sid": "PA_x", "identity": "x", "state": "ACTIVE"}]}},
    {"leave": {"reason": 99, "action": "RECONNECT", "canReconnect": True}},
    {"roomMoved": {"room": {"name": "r2"}, "token": "t", "otherParticipants": []}},
    {"requestResponse": {"requestId": 1, "reason": "NOT_FOUND", "message": "m"}},
]


@st.composite
def protobufish(draw: st.DrawFn) -> bytes:
    """Bytes shaped like protobuf: tags with plausible field numbers and wire types, nested at random."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 8))):
        field_number = draw(st.integers(1, 40))
        wire_type = draw(st.sampled_from([0, 1, 2, 5, 3, 4, 6, 7]))  # 3, 4 (groups), 6, 7 are invalid
        out += _varint(field_number << 3 | wire_type)
        if wire_type == 0:
            out += _varint(draw(st.integers(0, 2**64 - 1)))
        elif wire_type == 1:
            out += draw(st.binary(min_size=8, max_size=8))
        elif wire_type == 5:
            out += draw(st.binary(min_size=4, max_size=4))
        elif wire_type == 2:
            inner = draw(st.one_of(st.binary(max_size=40), st.just(bytes(draw(st.integers(0, 3))))))
            # A declared length that lies (too long, or absurd) as often as one that tells the truth.
            length = draw(st.sampled_from([len(inner), len(inner) + 5, 2**32, 2**63]))
            out += _varint(length) + inner
    return bytes(out)


@st.composite
def mutated_seed(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[position:]
        else:
            data[position:position] = draw(st.binary(min_size=1, max_size=6))
    return bytes(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@st.composite
def json_text(draw: st.DrawFn) -> str:
    """A JSON response: a seed with a field replaced by anything, any JSON at all, or text that is not JSON."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        seed: dict[str, Any] = json.loads(json.dumps(draw(st.sampled_from(JSON_SEEDS))))
        variant = next(iter(seed))
        if isinstance(seed[variant], dict):
            seed[variant][draw(st.sampled_from([*seed[variant], "bogus"]))] = draw(json_values)
        return json.dumps(seed)
    if kind == 1:
        return json.dumps({draw(st.sampled_from(["join", "update", "leave", "offer", "x"])): draw(json_values)})
    if kind == 2:
        return json.dumps(draw(json_values))
    return draw(st.text(max_size=40))


payloads = st.one_of(st.binary(max_size=64), protobufish(), mutated_seed())


@st.composite
def piece(draw: st.DrawFn) -> bytes:
    """One hostile piece of the server's stream."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(min_size=1, max_size=32))  # garbage
    if kind == 1:
        return frame(0x2, draw(payloads))
    if kind == 2:
        return frame(0x1, draw(json_text()).encode("utf-8"))
    if kind == 3:  # a message in fragments, with a control frame between them
        data = draw(payloads) + draw(payloads)
        cut = draw(st.integers(0, len(data)))
        control = frame(0x9, draw(st.binary(max_size=8))) if draw(st.booleans()) else b""
        return frame(0x2, data[:cut], fin=False) + control + frame(0x0, data[cut:])
    if kind == 4:  # a declared length near or far past the limit; the payload (if any) never all arrives
        length = draw(st.sampled_from([LIMIT_BYTES, LIMIT_BYTES + 1, 64 * 1024 * 1024, 2**63 - 1, 2**64 - 1]))
        opcode = draw(st.sampled_from([0x0, 0x1, 0x2, 0x9]))
        return frame_header(opcode, length, fin=draw(st.booleans())) + draw(st.binary(max_size=16))
    if kind == 5:  # a frame just under the limit (the buffer's worst case), or continuations adding up past it
        size = draw(st.integers(LIMIT_BYTES - 40, LIMIT_BYTES))
        return frame(0x2, bytes(size), fin=draw(st.booleans())) + frame(0x0, bytes(draw(st.integers(0, 64))))
    if kind == 6:  # control frames in odd places: fragmented, oversized, close with odd payloads
        opcode = draw(st.sampled_from([0x8, 0x9, 0xA, 0xB]))
        body = draw(st.binary(max_size=130))
        return frame(opcode, body, fin=draw(st.booleans()))
    if kind == 7:  # masked, reserved bits, reserved opcodes
        opcode = draw(st.sampled_from([0x1, 0x2, 0x3, 0x7]))
        body = draw(st.binary(max_size=16))
        header = frame_header(opcode, len(body), masked=draw(st.booleans()), rsv=draw(st.integers(0, 7)))
        return header + body
    if kind == 8:  # a continuation without a message, or a new message inside one
        return frame(draw(st.sampled_from([0x0, 0x2])), draw(st.binary(max_size=8)), fin=draw(st.booleans()))
    return frame(0x1, draw(st.binary(min_size=1, max_size=12)))  # text that is (likely) not UTF-8


def cut_points(data: st.DataObject, length: int) -> list[int]:
    """Random chunk boundaries over ``length`` bytes, single bytes included."""
    if length == 0:
        return []
    cuts = data.draw(st.lists(st.integers(1, length), max_size=12))
    return sorted({*cuts, length})


# -- the harness ---------------------------------------------------------------------------------------------


class Harness:
    """Clients sharing one budget, each feeding a session; checks the invariants after every step."""

    def __init__(self, budget_frames: int) -> None:
        self.budget = ReceiveBudget(budget_frames * (LIMIT_BYTES + MAX_HEADER_BYTES))
        self.clients = [
            WebSocketClient("h:1", "/rtc", max_message_bytes=LIMIT_BYTES, budget=self.budget) for _ in range(CLIENTS)
        ]
        self.sessions = [SignalSession(f"me{i}", "token", json_mode=i % 2 == 1) for i in range(CLIENTS)]
        self.now = 100.0
        for session in self.sessions:
            session.start(self.now)
        self.errors: list[LkswarmError] = []

    def feed(self, index: int, chunk: bytes | None) -> None:
        client, session = self.clients[index], self.sessions[index]
        if chunk is None:
            client.receive_eof()
        else:
            client.receive_data(chunk)
        client.data_to_send()  # as the driver does after every feed: pongs and close echoes do not pile up
        self.now += 0.25
        for event in client.events_received():
            if isinstance(event, Message):
                session.receive_frame(event.data, self.now)
        session.handle_timer(self.now)
        for frame_out in session.frames_to_send():
            self._send(client, frame_out)
        session.events_received()
        self.check()

    def _send(self, client: WebSocketClient, data: bytes | str) -> None:
        try:
            if isinstance(data, str):
                client.send_text(data)
            else:
                client.send_binary(data)
        except LkswarmError as exc:  # SignalError("not_open"): the project's own, and the driver's to handle
            self.errors.append(exc)
        client.data_to_send()

    def check(self) -> None:
        for client in self.clients:
            if client.state is State.CONNECTING:
                assert client.buffered_bytes <= MAX_HEAD_BYTES
            elif client.state is State.CLOSED:
                assert client.buffered_bytes == 0 and client.reserved_bytes == 0
            else:
                assert client.buffered_bytes <= LIMIT_BYTES + MAX_HEADER_BYTES
                assert client.reserved_bytes >= client.buffered_bytes  # nothing is held that is not reserved
        assert self.budget.used_bytes == sum(client.reserved_bytes for client in self.clients)
        assert 0 <= self.budget.used_bytes <= self.budget.total_bytes
        for session in self.sessions:
            assert session.state in set(SessionState)
            if session.state is SessionState.ENDED:
                assert session.end_reason and session.get_timer() is None

    def finish(self) -> None:
        for index in range(CLIENTS):
            self.feed(index, None)
        assert all(client.state is State.CLOSED for client in self.clients)
        assert self.budget.used_bytes == 0


# -- the properties ------------------------------------------------------------------------------------------


@FUZZ
@given(data=st.data(), budget_frames=st.integers(1, 3))
def test_websocket_clients_survive_hostile_streams_within_bounds(data: st.DataObject, budget_frames: int) -> None:
    harness = Harness(budget_frames)
    plans: list[list[bytes]] = []
    for client in harness.clients:
        stream = accept_response(client) + b"".join(data.draw(st.lists(piece(), max_size=8)))
        cuts = cut_points(data, len(stream))
        plans.append([stream[start:end] for start, end in zip([0, *cuts], cuts, strict=False)])
    # Interleave the clients' chunks in a random order, as an event loop would deliver them.
    order = data.draw(st.permutations([i for i, plan in enumerate(plans) for _ in plan]))
    position = [0] * CLIENTS
    for index in order:
        harness.feed(index, plans[index][position[index]])
        position[index] += 1
    harness.finish()


@FUZZ
@given(data=st.data())
def test_arbitrary_bytes_after_the_handshake(data: st.DataObject) -> None:
    harness = Harness(budget_frames=1)
    client = harness.clients[0]
    stream = accept_response(client) + data.draw(st.binary(max_size=4096))
    cuts = cut_points(data, len(stream))
    for start, end in zip([0, *cuts], cuts, strict=False):
        harness.feed(0, stream[start:end])
    harness.finish()


@FUZZ
@given(data=st.data())
def test_hostile_http_responses(data: st.DataObject) -> None:
    """Before the upgrade: status lines, headers and refusal bodies of any shape, cut anywhere."""
    harness = Harness(budget_frames=1)
    status = data.draw(st.sampled_from([b"101", b"200", b"401", b"0", b"-1", b"1_01", b"x", b"\xb2"]))
    length = data.draw(st.sampled_from([b"", b"5", b"99999999999999999999", b"\xb2", b"9" * 5000, b"-3"]))
    head = b"HTTP/1.1 " + status + b" S\r\nContent-Length: " + length + b"\r\n"
    head += data.draw(st.binary(max_size=64)) + b"\r\n\r\n"
    stream = head + data.draw(st.binary(max_size=512))
    if data.draw(st.booleans()):
        stream = data.draw(st.binary(max_size=2048)) + b"x" * data.draw(st.sampled_from([0, MAX_HEAD_BYTES + 1]))
    cuts = cut_points(data, len(stream))
    for start, end in zip([0, *cuts], cuts, strict=False):
        harness.feed(0, stream[start:end])
    harness.finish()


@FUZZ
@given(
    frames=st.lists(
        st.one_of(payloads, json_text(), st.sampled_from(SEEDS), st.builds(json.dumps, st.sampled_from(JSON_SEEDS))),
        max_size=12,
    ),
    steps_s=st.lists(st.floats(0, 30), min_size=12, max_size=12),
    json_mode=st.booleans(),
)
def test_signal_session_survives_hostile_frames(
    frames: list[bytes | str], steps_s: list[float], json_mode: bool
) -> None:
    session = SignalSession("me", "token", json_mode=json_mode)
    now = 10.0
    session.start(now)
    for data, step_s in zip(frames, steps_s, strict=False):
        now += step_s
        session.receive_frame(data, now)
        session.handle_timer(now)
        session.events_received()
        session.frames_to_send()
        assert session.state in set(SessionState)
        timer = session.get_timer()
        if session.state is SessionState.ENDED:
            assert session.end_reason.startswith(("failed:", "left:")) and timer is None
        else:
            assert timer is not None
    session.connection_closed("code 1006")
    assert session.state is SessionState.ENDED or session.end_reason == "code 1006"
