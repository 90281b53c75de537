"""The engine: turns a `RunConfig` into participants on an open-model schedule and measures them.

Theory of operation
-------------------
Arrivals follow an open model: the whole plan (`lkswarm.plan`) is fixed
before the run: every participant's intended start, room, seat and, with
stages or churn, its planned departure. The scheduler starts each
participant as close to its intended time as the loop allows and records the
lateness separately; every latency is measured from the intended time, so a
saturated generator shows up as latency and as lateness instead of being
hidden (coordinated omission).

The run lasts ``duration_s`` from the first intended start. Arrivals that
fall after the end are ``not_started``. A planned departure leaves politely
and counts as ``completed``. With ``reconnect_storm_at_s`` every joined
participant drops its WebSocket at that instant and resumes (or, with
``reconnect_storm_mode = "rejoin"``, joins afresh). A `Sampler`
records the timeline once a second and feeds the observers (live view,
Prometheus). At the end the engine (optionally) checks each live
participant's view of its room against Twirp ListParticipants, then stops
every participant, which completes the ones still alive. Each scheduled
participant is counted in exactly one outcome.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from lkswarm.auth import Credentials
from lkswarm.config import RunConfig
from lkswarm.errors import LkswarmError, SignalError
from lkswarm.events import Joined
from lkswarm.media import MediaTier, MediaTotals
from lkswarm.metrics import (
    LoopLagMonitor,
    PhaseMetrics,
    ProcessUsage,
    current_rss_mb,
    raise_fd_limit,
)
from lkswarm.netem import ProbeNetwork
from lkswarm.participant import ParticipantDriver
from lkswarm.plan import Arrival, owns_room, worker_plan
from lkswarm.probe import ProbeTier, probe_count, probe_seats
from lkswarm.probe_report import ProbeTotals
from lkswarm.report import build_report
from lkswarm.timeline import Observer, Sampler
from lkswarm.transport import Endpoint
from lkswarm.twirp import RoomService

LATE_START_MS = 10.0  # a start later than this counts as late
ROOM_CHECK_TIMEOUT_S = 10.0  # ParticipantUpdates are batched every 3 s by the server
STOP_GRACE_S = 3.0


MAX_FAILED_ROWS = 1000  # failed participants listed one by one in the report


class Engine:
    """Runs one scenario against one server URL."""

    def __init__(
        self,
        config: RunConfig,
        credentials: Credentials,
        url: str,
        observers: list[Observer] | None = None,
        probe_network: ProbeNetwork | None = None,
        worker: tuple[int, int] = (0, 1),
        start_gate: Callable[[], Awaitable[float]] | None = None,
    ) -> None:
        self.config = config
        self.probe_network = probe_network  # the probes' impaired namespace (lkswarm.netem), if any
        # One of several generator processes (lkswarm.workers) runs rooms index % count == worker index.
        self.worker = worker
        self.plan: list[Arrival] = worker_plan(config, worker)
        # Awaited once set-up is done; returns the wall-clock time at which the run starts, so that
        # several processes share one time origin.
        self.start_gate = start_gate
        self.credentials = credentials
        self.url = url
        self.endpoint = Endpoint.parse(url)
        self.metrics = PhaseMetrics()
        self.counters: collections.Counter[str] = collections.Counter()
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.failure_details: dict[str, str] = {}  # first detail seen per outcome
        self.drivers: list[ParticipantDriver] = []
        self.joined = 0
        self.pinged: set[int] = set()  # indices of participants with at least one ping_rtt
        self.late_starts = 0
        self.server_version = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self._alive = 0
        self._scheduling_done = False
        self._by_index: dict[int, ParticipantDriver] = {}
        self.rss_start_mb = 0.0
        self.rss_ready_mb = 0.0  # after set-up (clips encoded, media hub and probes started)
        self.rss_end_mb = 0.0
        self.media: MediaTier | None = None if config.signal_only else MediaTier(self)
        self.media_totals: MediaTotals | None = None
        # The probe tier (aiortc, real codecs) for a sampled subset; see lkswarm.probe.
        has_probes = probe_count(config) > 0 and any(self.owns_room(room) for room, _ in probe_seats(config))
        self.probes: ProbeTier | None = ProbeTier(self) if has_probes else None
        self.probe_totals: ProbeTotals | None = None
        self.sampler = Sampler(self, list(observers or []))
        self.failed_rows: list[dict[str, Any]] = []
        self.departed = 0
        self.active_at_end_by_room: collections.Counter[str] = collections.Counter()
        self._t0 = 0.0

    def owns_room(self, room_index: int) -> bool:
        return owns_room(room_index, self.worker)

    # -- callbacks from drivers ----------------------------------------------------------

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def alive(self) -> int:
        """Participants started and not yet ended."""
        return self._alive

    def on_outcome(self, driver: ParticipantDriver, outcome: str, detail: str) -> None:
        self.outcomes[outcome] += 1
        self._alive -= 1
        detail = self.credentials.redact(detail) if detail else ""
        if detail and outcome not in self.failure_details:
            self.failure_details[outcome] = detail
        if outcome.startswith("failed:") and len(self.failed_rows) < MAX_FAILED_ROWS:
            self.failed_rows.append(
                {
                    "identity": driver.identity,
                    "room": driver.room,
                    "outcome": outcome,
                    "detail": detail[:200],
                    "at_s": round(time.perf_counter() - self._t0, 3),
                }
            )

    def on_joined(self, driver: ParticipantDriver, event: Joined) -> None:
        self.joined += 1
        if event.server_version:
            self.server_version = event.server_version

    def on_pong(self, driver: ParticipantDriver) -> None:
        self.pinged.add(driver.index)

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        config = self.config
        fd_limit = raise_fd_limit()
        usage = ProcessUsage()
        lag = LoopLagMonitor(self.metrics)
        started_at = datetime.now(UTC)
        self.rss_start_mb = current_rss_mb()
        usage.start()
        lag.start()
        if self.media is not None:
            await self.media.start()  # encodes the clips on first use, before the clock starts
        if self.probes is not None:
            await self.probes.start()
        for observer in self.sampler.observers:
            await observer.start(self)
        # Everything alive now (modules, the plan, the clips) lives for the whole run. Freezing it keeps the
        # cyclic GC from rescanning it in every full collection, which cost 10-40 ms pauses at 1000 joins/s.
        gc.freeze()
        # Set-up (the clips, the codec libraries they load, the hub's thread) is paid once per run:
        # per-participant memory is measured from here, not from rss_start_mb.
        self.rss_ready_mb = current_rss_mb()
        if self.start_gate is not None:
            start_at = await self.start_gate()
            t0 = time.perf_counter() + max(0.05, start_at - time.time())
        else:
            t0 = time.perf_counter() + 0.05
        self._t0 = t0
        end_at = t0 + config.duration_s
        loop = asyncio.get_running_loop()
        background = [
            loop.create_task(self._schedule(t0, end_at)),
            loop.create_task(self._depart(t0, end_at)),
        ]
        if config.reconnect_storm_at_s is not None:
            background.append(loop.create_task(self._reconnect_storm(t0 + config.reconnect_storm_at_s)))
        self.sampler.start(t0)
        while time.perf_counter() < end_at:
            if self._scheduling_done and self._alive == 0:
                break  # everyone has already ended (e.g. the server is unreachable)
            await asyncio.sleep(min(0.1, max(0.0, end_at - time.perf_counter())))
        for task in background:
            if task.done() and not task.cancelled() and task.exception() is not None:
                # A broken schedule must not pass for a run whose participants were simply not started.
                raise LkswarmError(f"internal error in the scheduler: {task.exception()!r}")
            task.cancel()
        self.sampler.sample()  # the last, partial interval
        await self.sampler.stop()
        run_duration_s = time.perf_counter() - t0
        self.rss_end_mb = current_rss_mb()  # every live participant still connected
        room_check = await self._verify_rooms() if config.verify_rooms else {"skipped": True}
        alive_at_end = sum(1 for d in self.drivers if not d.outcome)
        if self.media is not None:
            self.media_totals = self.media.collect()
        if self.probes is not None:
            self.probe_totals = await self.probes.collect()
        if self.media is not None or self.probes is not None:
            active = [d for d in self.drivers if not d.outcome and d.media is not None and d.media.active]
            self.counters["active_at_end"] = len(active)
            self.active_at_end_by_room.update(d.room for d in active)
        await self._stop_all()
        if self.media is not None:
            await self.media.close()
        if self.probes is not None:
            await self.probes.close()
        for observer in self.sampler.observers:
            await observer.stop()
        lag.stop()
        usage.stop()
        return build_report(
            self,
            started_at=started_at,
            duration_s=run_duration_s,
            usage=usage,
            fd_limit=fd_limit,
            room_check=room_check,
            alive_at_end=alive_at_end,
        )

    async def _schedule(self, t0: float, end_at: float) -> None:
        config = self.config
        try:
            for arrival in self.plan:
                intended = t0 + arrival.start_s
                if intended >= end_at:
                    break
                delay = intended - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                lateness_ms = max(0.0, time.perf_counter() - intended) * 1000
                self.metrics.record_lateness(lateness_ms)
                if lateness_ms > LATE_START_MS:
                    self.late_starts += 1
                driver = ParticipantDriver(
                    self,
                    arrival.index,
                    config.room_name(arrival.room_index),
                    config.identity(arrival.index),
                    intended,
                    seat=arrival.seat,
                )
                self.drivers.append(driver)
                self._by_index[arrival.index] = driver
                self._alive += 1
                self.spawn(driver.run())
        finally:
            self._scheduling_done = True

    async def _depart(self, t0: float, end_at: float) -> None:
        """Planned departures (ramp-down stages and churn): the participant leaves politely."""
        departures = sorted((a.leave_s, a.index) for a in self.plan if a.leave_s is not None)
        for leave_s, index in departures:
            at = t0 + leave_s
            if at >= end_at:
                return
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            driver = self._by_index.get(index)
            if driver is not None and not driver.outcome:
                self.departed += 1
                driver.stop()

    async def _reconnect_storm(self, at: float) -> None:
        """Every joined participant drops its WebSocket at once and resumes (reconnect=1) or joins afresh."""
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        dropped = 0
        rejoin = self.config.reconnect_storm_mode == "rejoin"
        for driver in self.drivers:
            if not driver.outcome and driver.joined_at is not None:
                if rejoin:
                    driver.force_reconnect()
                else:
                    driver.force_resume()
                dropped += 1
        self.counters["storm_dropped"] = dropped

    async def _verify_rooms(self) -> dict[str, Any]:
        """Compares every live participant's room view with ListParticipants, waiting for updates to settle."""
        rooms: dict[str, list[ParticipantDriver]] = collections.defaultdict(list)
        for driver in self.drivers:
            if not driver.outcome and driver.session is not None and driver.joined_at is not None:
                rooms[driver.room].append(driver)
        if not rooms:
            return {"rooms": 0, "participants": 0, "matched": 0, "mismatched": 0}
        service = RoomService(self.url, self.credentials)
        deadline = time.perf_counter() + ROOM_CHECK_TIMEOUT_S
        while True:
            mismatches: list[dict[str, Any]] = []
            try:
                for room, drivers in rooms.items():
                    listed_rows = await asyncio.to_thread(service.list_participants, room)
                    listed = {p["identity"]: p.get("sid", "") for p in listed_rows}
                    for driver in drivers:
                        if driver.outcome or driver.session is None:
                            continue
                        view = driver.session.room_view()
                        if view != listed:
                            # stale: a participant seen under a sid the server has replaced (a fresh join)
                            stale = [i for i, sid in view.items() if i in listed and listed[i] != sid]
                            mismatches.append(
                                {
                                    "identity": driver.identity,
                                    "room": room,
                                    "missing": sorted(listed.keys() - view.keys())[:5],
                                    "extra": sorted(view.keys() - listed.keys())[:5],
                                    "stale": sorted(stale)[:5],
                                }
                            )
            except SignalError as exc:
                return {"error": f"{exc.reason}: {exc.detail}"}
            if not mismatches or time.perf_counter() > deadline:
                break
            await asyncio.sleep(1.0)
        checked = sum(len(d) for d in rooms.values())
        return {
            "rooms": len(rooms),
            "participants": checked,
            "matched": checked - len(mismatches),
            "mismatched": len(mismatches),
            "examples": mismatches[:5],
        }

    async def _stop_all(self) -> None:
        for driver in self.drivers:
            driver.stop()
        deadline = time.perf_counter() + STOP_GRACE_S
        while self._tasks and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        # Let the transports deliver their close frames before the loop goes away.
        await asyncio.sleep(0.05)
