"""`Run`: the one `RunContext`, built by the composition root and shared by the engine and the tiers."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import ssl
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from lkswarm.auth import Credentials
from lkswarm.config import RunConfig
from lkswarm.metrics import PhaseMetrics
from lkswarm.net.ws_driver import Endpoint, tls_context


@dataclass(slots=True, eq=False)
class Run:
    """What a run lends participants and tiers: configuration, credentials, the server, metrics, tasks."""

    config: RunConfig
    credentials: Credentials
    url: str  # the server's signal URL (ws:// or wss://); Twirp calls go to its http(s) twin
    endpoint: Endpoint = field(init=False)  # carries ``tls``, so every participant's WebSocket shares it
    # The run's one TLS client context (wss:// only), for the WebSockets and for RoomService's https:// calls.
    tls: ssl.SSLContext | None = field(init=False, default=None)
    metrics: PhaseMetrics = field(default_factory=PhaseMetrics)
    counters: collections.Counter[str] = field(default_factory=collections.Counter)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        endpoint = Endpoint.parse(self.url)
        if endpoint.scheme == "wss":
            # Built here, once: a context per participant cost 33 ms of CPU per join (see `tls_context`).
            self.tls = tls_context(insecure=self.config.insecure, ca_file=self.config.ca_file)
            endpoint = dataclasses.replace(endpoint, tls=self.tls)
        self.endpoint = endpoint

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Runs ``coroutine`` as a task the engine waits for (and cancels) when the run stops."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
