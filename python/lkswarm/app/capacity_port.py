"""The seam between the capacity controller and the load it drives: `LoadPort`, and its in-process side.

Theory of operation
-------------------
The controller (`lkswarm.app.capacity.Controller`) decides who arrives and who
leaves, and when; a `LoadPort` carries that out and reports back. It never
knows what is behind the port:

- `EnginePort`: one open-plan engine in this process (``lkswarm capacity``).
- `lkswarm.app.ray_capacity.RayPort`: one open-plan engine per Ray actor, each
  owning the rooms whose index modulo N is its own (``capacity --ray``), the
  hold windows of all of them merged exactly (`lkswarm.app.capacity_level.merge_holds`).

Times are run seconds: from the run's time origin, which every engine shares.
Participants are named by their plan index, which the controller hands out.
Every call that may cross a process is a coroutine; `elapsed_s` and `stopped`
are local reads, asked often.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from lkswarm.app.capacity_level import HoldData, HoldWindow
from lkswarm.engine.engine import Engine
from lkswarm.engine.outcome import OutcomeKind
from lkswarm.engine.plan import Arrival
from lkswarm.media.tier import LightTier
from lkswarm.metrics import MAX_MEDIA_LAG_P99_MS


@dataclass(frozen=True, slots=True)
class Population:
    """The participants behind a port right now."""

    live: int = 0  # started and not ended
    pending: int = 0  # live, not yet joined
    active: int = 0  # live with a connected primary PeerConnection (0 without media)
    failed: int = 0  # ended FAILED since the start of the run
    media: bool = False  # the load has a media tier (ACTIVE counts mean something)
    ended: frozenset[int] = field(default_factory=frozenset)  # of the indices asked about, those that ended
    # Of the indices asked about, those not joined yet (not started, or joining): the churn leaves them be.
    joining: frozenset[int] = field(default_factory=frozenset)

    def __add__(self, other: Population) -> Population:
        return Population(
            self.live + other.live,
            self.pending + other.pending,
            self.active + other.active,
            self.failed + other.failed,
            self.media or other.media,
            self.ended | other.ended,
            self.joining | other.joining,
        )


class LoadPort(Protocol):
    """What the capacity controller needs from the load it drives (see the module docstring)."""

    async def started(self) -> None:
        """Returns once the run's time origin has passed."""

    def elapsed_s(self) -> float:
        """Run seconds now (0 before the origin)."""
        ...

    def stopped(self) -> str:
        """Why the load cannot go on ("" while it can): a stop signal, a generator that died."""
        ...

    async def add_arrivals(self, arrivals: Sequence[Arrival]) -> None:
        """Plans ``arrivals`` (start times not before any planned so far)."""

    async def add_departures(self, at_s: float, indices: Sequence[int]) -> None:
        """Plans the polite departure of participants ``indices`` at run second ``at_s``."""

    async def population(self, watched: Collection[int]) -> Population:
        """The counts now; ``ended`` are the indices of ``watched`` that have ended."""
        ...

    async def open_hold(self) -> None:
        """Starts a hold window (its first sub-window)."""

    async def hold_boundary(self) -> None:
        """Ends the hold's current sub-window and starts the next."""

    async def read_hold(self) -> HoldData:
        """The hold so far (the window stays open)."""
        ...

    async def close_hold(self) -> HoldData:
        """Ends the hold and returns it whole."""
        ...

    def finish(self) -> None:
        """Ends the load's run, as its duration would (the search is over)."""


class EnginePort:
    """A `LoadPort` on one open-plan engine of this process."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._window: HoldWindow | None = None
        self._lag_before: tuple[int, int] | None = None

    async def started(self) -> None:
        await self.engine.started.wait()

    def elapsed_s(self) -> float:
        return self.engine.elapsed_s()

    def stopped(self) -> str:
        interrupted = self.engine.interrupted
        return f"the search was stopped ({interrupted['signal']})" if interrupted is not None else ""

    async def add_arrivals(self, arrivals: Sequence[Arrival]) -> None:
        self.engine.add_arrivals(arrivals)

    async def add_departures(self, at_s: float, indices: Sequence[int]) -> None:
        for index in indices:
            self.engine.add_departure(at_s, index)

    async def population(self, watched: Collection[int]) -> Population:
        engine = self.engine
        live = engine.live_drivers()
        media = bool(engine.tiers)
        drivers = {i: engine.driver_of(i) for i in watched}
        ended = frozenset(i for i, driver in drivers.items() if driver is not None and driver.outcome)
        joining = frozenset(
            i for i, driver in drivers.items() if driver is None or (driver.joined_at is None and not driver.outcome)
        )
        return Population(
            live=len(live),
            pending=sum(1 for d in live if d.joined_at is None),
            active=engine.active_count() if media else 0,
            failed=sum(n for outcome, n in engine.tally.outcomes.items() if outcome.kind is OutcomeKind.FAILED),
            media=media,
            ended=ended,
            joining=joining,
        )

    async def open_hold(self) -> None:
        self._window = HoldWindow(self.engine.metrics, self.engine.tiers)
        self._lag_before = self._media_lag_counts()
        self._window.open()

    async def hold_boundary(self) -> None:
        if self._window is not None:
            self._window.boundary()

    async def read_hold(self) -> HoldData:
        return self._window.snapshot() if self._window is not None else HoldData()

    async def close_hold(self) -> HoldData:
        window = self._window
        if window is None:
            return HoldData()
        window.close()
        lag_before, lag_after = self._lag_before, self._media_lag_counts()
        if lag_before is not None and lag_after is not None:
            window.media_lag = (lag_after[0] - lag_before[0], lag_after[1] - lag_before[1])
        self._window = None
        return window.snapshot()

    def finish(self) -> None:
        self.engine.finish()

    def _media_lag_counts(self) -> tuple[int, int] | None:
        """(timer samples, samples over the limit) of the media thread so far; the hold's share is a difference."""
        for tier in self.engine.tiers:
            if isinstance(tier, LightTier) and tier.hub is not None:
                count, over = tier.hub.timer_lag_above(MAX_MEDIA_LAG_P99_MS / 1000)
                return int(count), int(over)
        return None
