"""One hostile peer must not take the generator's memory: a 64 MiB frame against 20 participants.

Theory of operation
-------------------
A small asyncio server on 127.0.0.1 (in a thread, stopped after `PEER_LIFETIME_S` whatever happens)
completes every WebSocket upgrade and then starts a 64 MiB binary frame: the header announcing it,
then the payload in 1 MiB pieces until the client hangs up (at most the 64 pieces). Any other request
(RoomService) is answered 404. An ``lkswarm run --signal-only`` of 20 participants against it must end
with every participant failed with the frame-size reason, naming the size and the limit, and with the
generator's peak RSS far below what buffering the frames cost (730 MB before the limit existed).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import struct
import threading
from pathlib import Path

import pytest

from helpers import assert_outcomes_reconcile, run_cli
from lkswarm.auth import Credentials
from lkswarm.signal.websocket import DEFAULT_MAX_FRAME_BYTES

PEER_LIFETIME_S = 120.0  # the server stops itself after this, whatever a test does
FRAME_BYTES = 64 * 1024 * 1024
PIECE_BYTES = 1024 * 1024
PARTICIPANTS = 20
# A 20-participant signal-only run peaks near 51 MB; before the frame limit it reached 730 MB. (The 176 and
# 253 MB read in the full suite were pytest's own peak: getrusage's ru_maxrss survives exec, so the
# generator reported its parent's; it now reads VmHWM, see lkswarm.metrics.peak_rss_mb.)
MAX_RSS_MB = 150.0


class HostilePeer:
    """Upgrades every WebSocket and then sends the start of a `FRAME_BYTES` frame, on a loop in its own thread."""

    def __init__(self) -> None:
        self.port = 0
        self.upgrades = 0
        self.bytes_sent = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="hostile-peer", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def __enter__(self) -> HostilePeer:
        self._thread.start()
        assert self._ready.wait(10), "the hostile peer did not start"
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended (its lifetime ran out)
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.set_exception_handler(lambda _loop, _context: None)  # resets by the client are the point
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), PEER_LIFETIME_S)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1")
            key = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in head.split("\r\n")
                    if line.lower().startswith("sec-websocket-key:")
                ),
                None,
            )
            if key is None:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            accept = base64.b64encode(hashlib.sha1(key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
            writer.write(b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            writer.write(struct.pack("!BBQ", 0x82, 127, FRAME_BYTES))
            self.upgrades += 1
            piece = bytes(PIECE_BYTES)
            for _ in range(FRAME_BYTES // PIECE_BYTES):
                writer.write(piece)
                await asyncio.wait_for(writer.drain(), 10)
                self.bytes_sent += PIECE_BYTES
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client hung up: what this peer is for
        finally:
            writer.close()


@pytest.mark.integration
def test_a_64_mib_frame_fails_every_participant_without_taking_the_memory(
    tmp_path: Path, credentials: Credentials
) -> None:
    with HostilePeer() as peer:
        shape = ["--rooms", "1", "--participants", str(PARTICIPANTS), "--rate", "20", "--duration", "3s"]
        code, report, stderr = run_cli(
            ["--url", f"ws://127.0.0.1:{peer.port}", "--signal-only", "--no-verify-rooms", *shape],
            credentials,
            tmp_path,
            timeout_s=120,
        )
    assert peer.upgrades == PARTICIPANTS, stderr
    participants = report["participants"]
    assert_outcomes_reconcile(report)
    assert participants["outcomes"]["failed"] == PARTICIPANTS, participants
    # "frame_too_large" where the driver takes the reason from `Closed.cause`; "signal_closed" until then.
    assert set(participants["failures"]) <= {"frame_too_large", "signal_closed"}, participants["failures"]
    assert code != 0
    # Every failure names the frame size reason, the size announced and the limit.
    assert participants["failure_details"], participants
    for detail in participants["failure_details"].values():
        assert "frame_too_large" in detail and str(FRAME_BYTES) in detail and str(DEFAULT_MAX_FRAME_BYTES) in detail
        assert "1009" in detail and "\n" not in detail
    max_rss_mb = report["generator"]["max_rss_mb"]
    assert max_rss_mb < MAX_RSS_MB, f"peak RSS {max_rss_mb} MB against a 64 MiB frame (bound {MAX_RSS_MB} MB)"
    # The clients hung up at the header: the peer could not push the 20 frames (1.3 GB) through.
    assert peer.bytes_sent < PARTICIPANTS * FRAME_BYTES // 4, peer.bytes_sent
