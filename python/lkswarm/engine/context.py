"""`Run`: the one `RunContext`, built by the composition root and shared by the engine and the tiers."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from lkswarm.auth import Credentials
from lkswarm.config import RunConfig
from lkswarm.metrics import PhaseMetrics
from lkswarm.net.ws_driver import Endpoint


@dataclass(slots=True, eq=False)
class Run:
    """What a run lends participants and tiers: configuration, credentials, the server, metrics, tasks."""

    config: RunConfig
    credentials: Credentials
    url: str  # the server's signal URL (ws:// or wss://); Twirp calls go to its http(s) twin
    endpoint: Endpoint = field(init=False)
    metrics: PhaseMetrics = field(default_factory=PhaseMetrics)
    counters: collections.Counter[str] = field(default_factory=collections.Counter)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.endpoint = Endpoint.parse(self.url)

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Runs ``coroutine`` as a task the engine waits for (and cancels) when the run stops."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
