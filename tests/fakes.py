"""Fakes of the engine's ports (`lkswarm.engine.ports`), for unit tests of a tier or a leg without an engine."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

from lkswarm.auth import Credentials
from lkswarm.config import RunConfig
from lkswarm.engine.context import Run
from lkswarm.engine.outcome import Outcome
from lkswarm.signal.session import SignalSession

TEST_SECRET = "secret-0123456789abcdef0123456789abcdef"


def fake_run(config: RunConfig | None = None) -> Run:
    """A real `Run` (plain data, no sockets) for a config that names an unreachable URL."""
    config = config or RunConfig(url="ws://127.0.0.1:7880", rooms=1, participants=1, signal_only=True)
    return Run(config, Credentials("key", TEST_SECRET), config.url or "ws://127.0.0.1:7880")


class RecordingMetrics:
    """Stands in for `PhaseMetrics`: each recorded phase goes to ``calls``."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.values: dict[str, list[float]] = collections.defaultdict(list)

    def record(self, phase: str, value_ms: float) -> None:
        self.calls.append(phase)
        self.values[phase].append(value_ms)


class FakeHost:
    """A `ParticipantHost`: what a leg may touch of its participant, recorded."""

    def __init__(self, run: Run, identity: str = "p1", *, index: int = 0, room: str = "room", seat: int = 0) -> None:
        self.run = run
        self.index = index
        self.identity = identity
        self.room = room
        self.seat = seat
        self.session: SignalSession | None = None
        self.outcome: Outcome | None = None
        self.outcome_detail = ""
        self.joined_at: float | None = time.perf_counter() - 60.0  # long enough before any end-of-run check
        self.details: list[str] = []
        self.connected_at: list[float] = []
        self.output: Callable[[Callable[[], None]], None] = lambda step: step()

    def media_output(self, step: Callable[[], None]) -> None:
        self.output(step)

    def media_resumed(self, at: float) -> None:
        self.connected_at.append(at)

    def media_connected(self, at: float) -> None:
        """Counted as the driver counts it: once, into ``active``."""
        if self.connected_at:
            return
        self.connected_at.append(at)
        self.run.counters["active"] += 1
        self.run.metrics.record("active", at * 1000)

    def finish(self, outcome: Outcome, detail: str = "") -> None:
        if self.outcome is None:
            self.outcome = outcome
            self.details.append(detail)
