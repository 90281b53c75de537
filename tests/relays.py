"""TCP relays in front of the real server, each on its own event loop in a thread (so the code under test
keeps its own loop), bounded in lifetime:

- `HttpRelay` logs each request line (``GET /rtc/v1?… HTTP/1.1``), can answer ``/rtc/v1`` itself with a 404
  (a server older than single-PC signaling), replace its ``join_request`` (a corrupt one) or answer the
  RoomService's ``/twirp/`` calls with a page of its own (a gateway's), and otherwise pipes the bytes both
  ways untouched (the signaling-path and room-check tests);
- `TlsRelay` terminates TLS and pipes the plain bytes (the ``wss://`` tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import threading
from pathlib import Path
from typing import Self

RELAY_LIFETIME_S = 300.0  # a bound, should a test forget to stop it
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 19\r\nConnection: close\r\n\r\n404 page not found\n"
_JOIN_REQUEST = re.compile(rb"join_request=[^& ]*")


class ThreadedRelay:
    """Relays 127.0.0.1:``port`` to ``target_port`` on a loop of its own; subclasses decide what a connection
    does first (`_relay`) and whether it speaks TLS (`ssl_context`)."""

    name = "relay"
    ssl_context: ssl.SSLContext | None = None

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> Self:
        self._thread.start()
        assert self._ready.wait(10), f"the {self.name} did not start"
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended (its lifetime ran out)
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        finally:
            self._ready.set()  # never leave __enter__ waiting on a relay that failed to start

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.ssl_context is not None:
            # Handshakes the client refuses (the unverified-CA test) are the point there, not errors to print.
            self._loop.set_exception_handler(lambda _loop, _context: None)
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0, ssl=self.ssl_context, limit=1 << 20)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), RELAY_LIFETIME_S)
        for writer in list(self._writers):
            writer.close()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self._writers.add(client_writer)
        await self._connect(client_reader, client_writer, b"")

    async def _connect(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter, first: bytes
    ) -> None:
        """Opens the upstream connection, sends it ``first``, then pipes both ways until either side ends."""
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        self._writers.add(server_writer)
        if first:
            server_writer.write(first)
        await asyncio.gather(
            self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer), return_exceptions=True
        )
        self._writers -= {client_writer, server_writer}

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass  # a participant dropped its connection: the other direction ends with it
        finally:
            writer.close()


class HttpRelay(ThreadedRelay):
    """``request_lines`` holds every request line seen, in order."""

    name = "http-relay"

    def __init__(
        self,
        target_port: int,
        *,
        deny_v1: bool = False,
        join_request: str | None = None,
        twirp_answer: bytes | None = None,
    ) -> None:
        super().__init__(target_port)
        self.deny_v1 = deny_v1  # answer GET /rtc/v1 with 404, as a server without the path does
        self.join_request = join_request  # replace every join_request value with this
        self.twirp_answer = twirp_answer  # a whole HTTP response for every /twirp/ request, instead of the server's
        self.request_lines: list[str] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self._writers.add(client_writer)
        try:
            head = await client_reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            client_writer.close()
            return
        request_line = head.split(b"\r\n", 1)[0]
        self.request_lines.append(request_line.decode("latin-1"))
        target = request_line.split(b" ")[1] if request_line.count(b" ") >= 2 else b""
        if self.deny_v1 and target.startswith(b"/rtc/v1"):
            client_writer.write(NOT_FOUND)
            await client_writer.drain()
            client_writer.close()
            return
        if self.twirp_answer is not None and target.startswith(b"/twirp/"):
            client_writer.write(self.twirp_answer)
            await client_writer.drain()
            client_writer.close()
            return
        if self.join_request is not None:
            head = _JOIN_REQUEST.sub(b"join_request=" + self.join_request.encode(), head, count=1)
        await self._connect(client_reader, client_writer, head)


class TlsRelay(ThreadedRelay):
    """Terminates TLS with ``cert`` and ``key``."""

    name = "tls-relay"

    def __init__(self, target_port: int, cert: Path, key: Path) -> None:
        super().__init__(target_port)
        self.ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ssl_context.load_cert_chain(cert, key)
