"""The asyncio driver of `ws.WebSocketClient`: one Protocol per connection, no extra tasks."""

from __future__ import annotations

import asyncio
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from lkswarm.errors import ConfigError, SignalError
from lkswarm.signal.websocket import Closed, Event, Rejected, State, WebSocketClient


@dataclass(frozen=True)
class Endpoint:
    """Where a LiveKit server's signaling lives."""

    scheme: str  # "ws" or "wss"
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parsed = urllib.parse.urlsplit(url)
        scheme = {"http": "ws", "https": "wss"}.get(parsed.scheme, parsed.scheme)
        if scheme not in ("ws", "wss") or not parsed.hostname:
            raise ConfigError(f"not a LiveKit URL: {url!r} (expected ws://host:port or wss://host)")
        port = parsed.port or (443 if scheme == "wss" else 80)
        return cls(scheme, parsed.hostname, port)

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "wss" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


class WebSocketProtocol(asyncio.Protocol):
    """Feeds socket bytes to the sans-I/O client and hands its events to ``on_event``."""

    def __init__(self, client: WebSocketClient, on_event: Callable[[Event], None]) -> None:
        self.client = client
        self.on_event = on_event
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.client.handshake_request())

    def data_received(self, data: bytes) -> None:
        self.client.receive_data(data)
        self._flush()

    def eof_received(self) -> bool:
        self.client.receive_eof()
        self._flush()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.receive_eof()
        self._dispatch()
        self.transport = None

    def _flush(self) -> None:
        out = self.client.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)
        self._dispatch()

    def _dispatch(self) -> None:
        for event in self.client.events_received():
            self.on_event(event)
            # After a rejected upgrade the HTTP connection is of no further use.
            if isinstance(event, Closed | Rejected) and self.transport is not None:
                self.transport.close()

    def is_open(self) -> bool:
        return self.client.state is State.OPEN and self.transport is not None

    def send(self, data: bytes | str) -> None:
        """Sends a binary (bytes) or text (str) message."""
        if isinstance(data, str):
            self.client.send_text(data)
        else:
            self.client.send_binary(data)
        out = self.client.data_to_send()
        if self.transport is not None:
            self.transport.write(out)

    def close(self, code: int = 1000) -> None:
        self.client.send_close(code)
        out = self.client.data_to_send()
        if self.transport is not None:
            if out:
                self.transport.write(out)
            self.transport.close()

    def abort(self) -> None:
        """Drops the TCP connection without a close frame (to force a resume)."""
        if self.transport is not None:
            self.transport.abort()


async def open_websocket(
    endpoint: Endpoint,
    path: str,
    on_event: Callable[[Event], None],
    *,
    headers: tuple[tuple[str, str], ...] = (),
) -> WebSocketProtocol:
    """Opens the TCP (or TLS) connection and sends the upgrade; events then arrive via ``on_event``."""
    loop = asyncio.get_running_loop()
    client = WebSocketClient(endpoint.host_header, path, headers=headers)
    ssl_context = ssl.create_default_context() if endpoint.scheme == "wss" else None
    try:
        _, protocol = await loop.create_connection(
            lambda: WebSocketProtocol(client, on_event), endpoint.host, endpoint.port, ssl=ssl_context
        )
    except OSError as exc:
        raise SignalError("connect_failed", f"{endpoint.host}:{endpoint.port}: {exc.strerror or exc}") from None
    return protocol
