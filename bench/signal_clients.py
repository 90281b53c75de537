"""Client side of the signal-path benchmark: N connections doing closed-loop ping_req/pong_resp.

``python bench/signal_clients.py KIND PORT N SECONDS`` prints one JSON line with the round trips and the
client CPU seconds spent during the measured window. KIND is ``bare`` (a bare asyncio Protocol with
hand-made framing: the floor), ``websockets`` (the websockets library) or ``lkswarm`` (our WebSocket
client and SignalSession, as every participant runs them).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import struct
import sys
import time
from typing import Any, cast

import uvloop

from lkswarm import _core
from lkswarm.net.ws_driver import Endpoint, open_websocket
from lkswarm.signal.events import PongReceived
from lkswarm.signal.session import SignalSession
from lkswarm.signal.websocket import Message

WARMUP_S = 0.5
COUNT = {"round_trips": 0, "measuring": False}


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def masked(payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    body = (int.from_bytes(payload, "little") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "little")).to_bytes(
        n, "little"
    )
    return struct.pack("!BB", 0x82, 0x80 | n) + mask + body


UPGRADE = (
    b"GET /rtc HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class Bare(asyncio.Protocol):
    """The floor: no library, minimal framing, one write per round trip."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.upgraded = False
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(UPGRADE)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            del self.buf[: end + 4]
            self.upgraded = True
        buf = self.buf
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            off = 2
            if n == 126:
                n = struct.unpack_from("!H", buf, 2)[0]
                off = 4
            if len(buf) < off + n:
                break
            payload = bytes(buf[off : off + n])
            del buf[: off + n]
            _core.peek_response(payload)
            if COUNT["measuring"]:
                COUNT["round_trips"] += 1
            self.transport.write(masked(_core.encode_ping(int(time.time() * 1000), 0)))


async def run_bare(port: int, n: int) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(n):
        await loop.create_connection(Bare, "127.0.0.1", port)


async def run_websockets(port: int, n: int) -> None:
    from websockets.asyncio.client import connect

    async def one() -> None:
        async with connect(f"ws://127.0.0.1:{port}/rtc", compression=None, max_size=None, ping_interval=None) as ws:
            await ws.recv()  # join
            while True:
                await ws.send(_core.encode_ping(int(time.time() * 1000), 0))
                _core.peek_response(cast(bytes, await ws.recv()))  # binary frames: no decode
                if COUNT["measuring"]:
                    COUNT["round_trips"] += 1

    for _ in range(n):
        asyncio.get_running_loop().create_task(one())


async def run_lkswarm(port: int, n: int) -> None:
    endpoint = Endpoint.parse(f"ws://127.0.0.1:{port}")
    for i in range(n):
        session = SignalSession(f"b{i}", "token")
        session.start(time.perf_counter())
        holder: dict[str, Any] = {}

        def on_event(event: Any, session: SignalSession = session, holder: dict[str, Any] = holder) -> None:
            if not isinstance(event, Message):
                return
            now = time.perf_counter()
            session.receive_frame(event.data, now)
            for ev in session.events_received():
                if isinstance(ev, PongReceived) and COUNT["measuring"]:
                    COUNT["round_trips"] += 1
            session.send_ping(now)  # joined (first frame) or pong: ping again at once
            if "c" in holder:  # the join can arrive before open_websocket returns
                for frame in session.frames_to_send():
                    holder["c"].send(frame)

        holder["c"] = connection = await open_websocket(endpoint, "/rtc", on_event)
        for frame in session.frames_to_send():
            connection.send(frame)


async def main(kind: str, port: int, n: int, seconds: float) -> None:
    await {"bare": run_bare, "websockets": run_websockets, "lkswarm": run_lkswarm}[kind](port, n)
    await asyncio.sleep(WARMUP_S)
    COUNT["measuring"] = True
    cpu0, t0 = cpu(), time.perf_counter()
    await asyncio.sleep(seconds)
    COUNT["measuring"] = False
    cpu_s, wall_s = cpu() - cpu0, time.perf_counter() - t0
    print(
        json.dumps(
            {"kind": kind, "connections": n, "round_trips": COUNT["round_trips"], "cpu_s": cpu_s, "wall_s": wall_s}
        )
    )
    os._exit(0)  # skip orderly teardown of hundreds of sockets


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])))
