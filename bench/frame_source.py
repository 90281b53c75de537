"""A fast local frame source: a minimal WebSocket server that replays server frames.

It answers the `/rtc` upgrade at once, sends a recorded JoinResponse, answers every `ping_req` with a
`pong_resp` and every `leave` by closing. It lets benchmarks measure the generator rather than a 2-core
livekit-server. Run: ``python bench/frame_source.py PORT`` (prints "ready" when listening).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import sys

import uvloop

from lkswarm import _core

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def server_frame(payload: bytes, opcode: int = 2) -> bytes:
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x80 | opcode, n) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x80 | opcode, 126, n) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, n) + payload


def join_frame(identity: str) -> bytes:
    return server_frame(
        _core.encode_response(
            {
                "join": {
                    "room": {"sid": "RM_bench", "name": "bench"},
                    "participant": {"sid": f"PA_{identity}", "identity": identity, "state": "JOINED"},
                    "serverVersion": "frame-source",
                    "pingInterval": 5,
                    "pingTimeout": 15,
                }
            }
        )
    )


class FrameSource(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.open = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.open:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[: end + 4]
            key = next(
                line.split(":", 1)[1].strip()
                for line in head.split("\r\n")
                if line.lower().startswith("sec-websocket-key")
            )
            accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
            assert self.transport is not None
            self.transport.write(
                (
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
                ).encode()
                + join_frame(str(id(self)))
            )
            self.open = True
        self.parse()

    def parse(self) -> None:
        buf = self.buf
        pos = 0
        out = []
        while len(buf) - pos >= 6:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            off = pos + 2
            if n == 126:
                n = struct.unpack_from("!H", buf, off)[0]
                off += 2
            elif n == 127:
                n = struct.unpack_from("!Q", buf, off)[0]
                off += 8
            if len(buf) < off + 4 + n:
                break
            mask = bytes(buf[off : off + 4])
            raw = bytes(buf[off + 4 : off + 4 + n])
            payload = (int.from_bytes(raw, "little") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "little")).to_bytes(
                n, "little"
            )
            pos = off + 4 + n
            opcode = b0 & 0x0F
            if opcode == 8:
                assert self.transport is not None
                self.transport.write(server_frame(payload[:2], 8))
                self.transport.close()
                break
            kind = _core.peek_response(b"") if not payload else _core.peek_request(payload)
            if kind == "ping_req":
                ts = _core.decode_request(payload).ping_req.timestamp
                out.append(
                    server_frame(_core.encode_response({"pongResp": {"lastPingTimestamp": ts, "timestamp": ts}}))
                )
            elif kind == "leave":
                out.append(server_frame(_core.encode_response({"leave": {"reason": "CLIENT_INITIATED"}})))
        del buf[:pos]
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


async def serve(port: int) -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FrameSource, "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
