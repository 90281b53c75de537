"""A capacity search whose load is spread over Ray actors: ``lkswarm capacity --ray local|auto|ray://HOST:PORT``.

Theory of operation
-------------------
The search's controller (`lkswarm.app.capacity.Controller`) runs here, in the
driver, as it does for a one-process search; only its `LoadPort` differs.

- **Actors.** As for ``run --ray`` (`lkswarm.app.ray_engine.RayDriver`): N actors
  of one CPU in a SPREAD placement group, ``--workers`` and ``--workers-per-node``
  as there, the secret through the object store. Each is a
  `lkswarm.app.ray_actor.CapacityActor`: an open-plan engine of the search's
  configuration, started at one common time origin after a barrier.
- **Who owns whom.** Actor i owns the rooms whose index modulo N is i, as a
  ``--workers`` share does (`lkswarm.app.shares`). `RayPort` sends each arrival
  to its room's actor and remembers it, so a departure and a question about a
  participant go to the actor that has it.
- **Hold windows.** Every actor keeps its own window (the tap of a one-process
  search); the port opens them, cuts their sub-windows and reads them together,
  and merges them exactly (`lkswarm.app.capacity_level.merge_holds`: values
  concatenated per sub-window, packet counts summed), so a verdict is the one a
  single process holding every participant would have reached. A level is
  generator-bound when any one actor saturated.
- **Faults.** An actor that dies or does not answer a call within
  CALL_TIMEOUT_S stops the load (`stopped`): the level is ABORTED and the search
  ends with what it measured. Its participants are counted as
  ``worker_crashed`` in the merged report, from the arrivals it was sent. A stop
  signal ends the search as it does in one process; every actor's engine then
  finishes and reports.
- **The report** is the actors' reports merged exactly, with ``workers[]``
  (node, host, pid, CPU); the search's levels, ``levels.csv`` and the plan come
  from the controller, as for a one-process search.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import uvloop

from lkswarm.app.capacity import Controller
from lkswarm.app.capacity_level import HoldData, merge_holds
from lkswarm.app.capacity_port import LoadPort, Population
from lkswarm.app.ray_actor import CALL_TIMEOUT_S, CapacityActor
from lkswarm.app.ray_engine import END_GRACE_S, ActorShare, RayDriver, connect, import_ray, node_cpus, plan_actors
from lkswarm.app.shares import StopSignals
from lkswarm.auth import Credentials
from lkswarm.capacity.search import Search
from lkswarm.config import RunConfig
from lkswarm.engine.plan import Arrival
from lkswarm.errors import one_line

Spread = tuple[str, int | None, int | None]  # (Ray address, actors or None, per node or None)


class RayPort:
    """A `LoadPort` over the search's actors (see the module docstring)."""

    def __init__(self, ray: ModuleType, shares: list[ActorShare], stops: StopSignals) -> None:
        self.ray = ray
        self.shares = shares
        self.stops = stops
        self.go_at: float | None = None  # unix time of the run's origin, once named
        self.plans: dict[int, list[Arrival]] = defaultdict(list)  # actor index -> the arrivals it was sent
        self.dead: dict[int, str] = {}  # actor index -> what happened to it
        self._owner: dict[int, int] = {}  # plan index -> actor index

    # -- local reads -------------------------------------------------------------------------

    async def started(self) -> None:
        while self.go_at is None or time.time() < self.go_at:
            await asyncio.sleep(0.02)

    def elapsed_s(self) -> float:
        return max(0.0, time.time() - self.go_at) if self.go_at is not None else 0.0

    def stopped(self) -> str:
        if self.stops.signal_name is not None:
            return f"the search was stopped ({self.stops.signal_name})"
        return next(iter(self.dead.values()), "")

    def owner(self, room: int) -> int:
        return room % len(self.shares)

    # -- the load ------------------------------------------------------------------------------

    async def add_arrivals(self, arrivals: Sequence[Arrival]) -> None:
        by_actor: dict[int, list[Arrival]] = defaultdict(list)
        for arrival in arrivals:
            actor = self.owner(arrival.room_index)
            by_actor[actor].append(arrival)
            self._owner[arrival.index] = actor
            self.plans[actor].append(arrival)
        await self._call({actor: ("add_arrivals", (mine,)) for actor, mine in by_actor.items()})

    async def add_departures(self, at_s: float, indices: Sequence[int]) -> None:
        by_actor: dict[int, list[int]] = defaultdict(list)
        for index in indices:
            if index in self._owner:
                by_actor[self._owner[index]].append(index)
        await self._call({actor: ("add_departures", (at_s, mine)) for actor, mine in by_actor.items()})

    async def population(self, watched: Collection[int]) -> Population:
        by_actor: dict[int, list[int]] = {share.index: [] for share in self.shares}
        for index in watched:
            if index in self._owner:
                by_actor[self._owner[index]].append(index)
        answers = await self._call({actor: ("population", (mine,)) for actor, mine in by_actor.items()})
        total = Population()
        for answer in answers.values():
            total = total + answer
        return total

    async def open_hold(self) -> None:
        await self._call_all("open_hold")

    async def hold_boundary(self) -> None:
        await self._call_all("hold_boundary")

    async def read_hold(self) -> HoldData:
        return self._merged(await self._call_all("read_hold"))

    async def close_hold(self) -> HoldData:
        return self._merged(await self._call_all("close_hold"))

    def finish(self) -> None:
        for share in self._live():
            with contextlib.suppress(Exception):
                share.handle.call.remote("finish")

    # -- calls -----------------------------------------------------------------------------------

    def _live(self) -> list[ActorShare]:
        return [s for s in self.shares if s.ready and s.index not in self.dead]

    @staticmethod
    def _merged(answers: dict[int, Any]) -> HoldData:
        holds = [answers[index] for index in sorted(answers)]
        return merge_holds(holds) if holds else HoldData()

    async def _call_all(self, name: str) -> dict[int, Any]:
        return await self._call({share.index: (name, ()) for share in self.shares})

    async def _call(self, calls: dict[int, tuple[str, tuple[Any, ...]]]) -> dict[int, Any]:
        """Sends each actor its call, all at once; their answers, by actor. One that fails is dead."""
        live = {share.index: share for share in self._live()}
        refs = {
            index: live[index].handle.call.remote(name, *args) for index, (name, args) in calls.items() if index in live
        }
        if not refs:
            return {}
        return await asyncio.to_thread(self._gather, refs, live)

    def _gather(self, refs: dict[int, Any], live: dict[int, ActorShare]) -> dict[int, Any]:
        answers: dict[int, Any] = {}
        deadline = time.monotonic() + CALL_TIMEOUT_S + 5.0
        for index, ref in refs.items():
            try:
                answers[index] = self.ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
            except Exception as exc:  # RayActorError (it died), GetTimeoutError (hung), an error of the call
                share = live[index]
                cause = getattr(exc, "cause", None)
                first = str(cause if isinstance(cause, BaseException) else exc).strip().splitlines()
                detail = f"{type(exc).__name__}: {first[0] if first else ''}"[:300]
                self.dead[index] = f"{share.name} stopped answering ({detail})"
                share.error, share.ended_at = self.dead[index], time.time()
                with contextlib.suppress(Exception):
                    self.ray.kill(share.handle, no_restart=True)
        return answers


class CapacityDriver(RayDriver):
    """The driver of a capacity search on Ray actors: place, set up, start, search, collect, merge."""

    actor_class = CapacityActor
    port: RayPort

    def share_plan(self, index: int) -> list[Arrival] | None:
        return list(self.port.plans.get(index, []))

    def search(
        self, url: str, controller_for: Callable[[LoadPort], Controller], search: Search
    ) -> tuple[dict[str, Any], Controller, str | None]:
        """The merged report, the controller (its levels) and, if the controller failed, its error in one
        line: as in one process (`capacity_run._drive`), that stops the search, not the run."""
        started_at = datetime.now(UTC)
        error: str | None = None
        self.port = RayPort(self.ray, self.shares, self.stops)
        controller = controller_for(self.port)
        group = None
        self.stops.install()
        try:
            group = self._place()
            self._launch(group, rolling=False, exposition=False)
            self._await_ready()
            if self._start():
                self.port.go_at = self.go_at
                try:
                    uvloop.run(controller.run(search))
                except Exception as failure:  # a bug or a broken port: keep what was measured
                    error = one_line(failure)
                    search.stop_on_error()
                self.port.finish()
                self._await_reports()
            else:
                self._cancel()
        finally:
            self.stops.restore()
            self._release(group)
        result = self._merge(url, False, started_at, None)  # the caller says where the server was
        return result.report, controller, error

    def _await_reports(self) -> None:
        """Collects every live actor's report once the search has finished their engines."""
        deadline = time.monotonic() + END_GRACE_S
        for share in self.shares:
            if share.ready and not share.done and share.index not in self.port.dead:
                self._collect(share, wait_s=max(0.0, deadline - time.monotonic()))
                if not share.done:
                    share.error = f"{share.name} hung: no report {END_GRACE_S:g} s after the search ended"
                    self._kill(share)
                    share.done = True


def search_on_ray(
    config: RunConfig,
    credentials: Credentials,
    url: str,
    controller_for: Callable[[LoadPort], Controller],
    search: Search,
    spread: Spread,
) -> tuple[dict[str, Any], Controller, str | None]:
    """Runs ``search`` with its load on Ray actors; the merged report, the controller (with its levels) and the
    controller's error in one line if it failed.

    ``config`` is the search's open-plan configuration (`lkswarm.app.capacity.engine_config`)."""
    address, workers, per_node = spread
    ray = import_ray()
    config = config.replace(url=url)
    connected = connect(ray, address)
    try:
        count = plan_actors(workers, node_cpus(ray), config.rooms, per_node)
        return CapacityDriver(ray, config, credentials, count, per_node).search(url, controller_for, search)
    finally:
        if connected:
            ray.shutdown()
