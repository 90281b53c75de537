"""The asyncio driver of `ws.WebSocketClient`: one Protocol per connection, no extra tasks."""

from __future__ import annotations

import asyncio
import functools
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from lkswarm.errors import ConfigError, SignalError
from lkswarm.signal.websocket import (
    DEFAULT_MAX_FRAME_BYTES,
    Closed,
    Event,
    ReceiveBudget,
    Rejected,
    State,
    WebSocketClient,
)


@functools.cache
def shared_budget(max_frame_bytes: int) -> ReceiveBudget:
    """The process's one receive budget for connections with this frame limit (a run uses one limit).

    Every connection reserves from it before buffering a partial frame, so all of them together hold at
    most `BUDGET_FRAMES` frames of the limit; a connection that would pass it fails (see `ReceiveBudget`).
    """
    return ReceiveBudget.for_frame_limit(max_frame_bytes)


def tls_context(*, insecure: bool = False, ca_file: str | None = None) -> ssl.SSLContext:
    """The client TLS context of a whole run, for wss:// and https:// alike.

    Build it once and share it: `ssl.create_default_context` parses the system's CA store, about
    33 ms of CPU, which per participant made 60 joins at 60/s cost 2.1 s of CPU and saturated the run.
    ``insecure`` checks neither certificate nor host name (an explicit choice the report names);
    ``ca_file`` adds a PEM bundle to the system's roots (a private CA, a test server).
    """
    if insecure:
        # No CA store to load: nothing is verified against it.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except OSError as exc:  # RunConfig checked the file; this is one that changed since
            raise ConfigError(f"--ca-file {ca_file}: cannot load it ({exc.strerror or exc})") from None
    return context


@functools.cache
def _default_tls() -> ssl.SSLContext:
    """A verified context for endpoints that carry none, built on first need and then shared."""
    return tls_context()


@dataclass(frozen=True)
class Endpoint:
    """Where a LiveKit server's signaling lives, and the TLS context every connection to it shares."""

    scheme: str  # "ws" or "wss"
    host: str
    port: int
    # One per run (`lkswarm.engine.context.Run`); None for wss:// means a process-wide verified default.
    tls: ssl.SSLContext | None = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, url: str, tls: ssl.SSLContext | None = None) -> Endpoint:
        parsed = urllib.parse.urlsplit(url)
        if "@" in parsed.netloc:  # never echoed: it may hold the secret
            raise ConfigError(
                "the URL must not carry credentials (user:password@host): pass them with --api-key and "
                "--api-secret or LIVEKIT_API_KEY and LIVEKIT_API_SECRET"
            )
        if parsed.query or parsed.fragment:  # never echoed: it may hold an access token
            raise ConfigError(
                f"the URL must not carry a query string or fragment: {parsed.scheme}://{parsed.netloc}{parsed.path} "
                "is where lkswarm adds its own (/rtc?access_token=...)"
            )
        scheme = {"http": "ws", "https": "wss"}.get(parsed.scheme, parsed.scheme)
        if scheme not in ("ws", "wss") or not parsed.hostname:
            raise ConfigError(f"not a LiveKit URL: {url!r} (expected ws://host:port or wss://host)")
        try:
            given = parsed.port
        except ValueError as exc:  # urllib's own words: "Port out of range 0-65535", "Port could not be cast..."
            raise ConfigError(f"not a LiveKit URL: {url!r} ({exc})") from None
        port = given if given is not None else 443 if scheme == "wss" else 80
        if port == 0:  # `:0` used to read as no port at all: port 80
            raise ConfigError(f"not a LiveKit URL: {url!r} (port 0)")
        return cls(scheme, parsed.hostname, port, tls)

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """What a connection to this endpoint wraps its socket with (None for ws://)."""
        if self.scheme != "wss":
            return None
        return self.tls if self.tls is not None else _default_tls()

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
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    budget: ReceiveBudget | None = None,
) -> WebSocketProtocol:
    """Opens the TCP (or TLS) connection and sends the upgrade; events then arrive via ``on_event``.

    ``max_frame_bytes`` is the run's ``--max-frame-bytes``; ``budget`` defaults to the process's shared one.
    """
    loop = asyncio.get_running_loop()
    if budget is None:
        budget = shared_budget(max_frame_bytes)
    client = WebSocketClient(
        endpoint.host_header, path, headers=headers, max_message_bytes=max_frame_bytes, budget=budget
    )
    where = f"{endpoint.host}:{endpoint.port}"
    try:
        _, protocol = await loop.create_connection(
            lambda: WebSocketProtocol(client, on_event), endpoint.host, endpoint.port, ssl=endpoint.ssl_context
        )
    except ssl.SSLCertVerificationError as exc:  # before OSError, its base
        raise SignalError(
            "tls_verify_failed",
            f"{where}: certificate verify failed: {exc.verify_message} (trust its CA with --ca-file, or skip "
            "verification with --insecure)",
        ) from None
    except ssl.SSLError as exc:
        raise SignalError("tls_failed", f"{where}: TLS handshake failed: {exc.reason or exc}") from None
    except OSError as exc:
        raise SignalError("connect_failed", f"{where}: {exc.strerror or exc}") from None
    return protocol
