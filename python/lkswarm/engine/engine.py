"""The engine: turns a `RunConfig` into participants on an open-model schedule and measures them.

Theory of operation
-------------------
Arrivals follow an open model: the whole plan (`lkswarm.engine.plan`) is fixed
before the run: every participant's intended start, room, seat and, with
stages or churn, its planned departure. The scheduler starts each
participant as close to its intended time as the loop allows and records the
lateness separately; every latency is measured from the intended time, so a
saturated generator shows up as latency and as lateness instead of being
hidden (coordinated omission).

The run lasts ``duration_s`` from the first intended start. Arrivals that
fall after the end are ``not_started``. A planned departure leaves politely
and counts as ``completed``, or, for a participant whose join is still in
flight, as failed ``not_joined_by_departure`` (its join did not complete in
its planned stay; the run had not ended); one that comes due before its participant has
started (a late scheduler, or an open plan's teardown of arrivals still
queued) keeps it from starting: it is ``not_started``, and counted in
``counters["departed_before_start"]``. With ``reconnect_storm_at_s`` every joined
participant drops its WebSocket at that instant and resumes (or, with
``reconnect_storm_mode = "rejoin"``, joins afresh). A `Sampler`
records the timeline once a second and feeds the observers (live view,
Prometheus). At the end (the duration, or `stop` on a signal) the engine
decides every participant's outcome at once: alive ones complete, joins still
in flight fail with the stage they were stuck in. Only then does it
(optionally) check each live participant's view of its room against Twirp
ListParticipants, which is reported apart and changes no outcome, and stop
every participant. Each scheduled participant is counted in exactly one
outcome. A second stop (`abort`, a second Ctrl-C) skips the grace periods.

An *open plan* (``open_plan=True``, ``lkswarm capacity``) starts empty: its
owner adds arrivals and departures while the run goes (`add_arrivals`,
`add_departure`) and ends it with `finish`; ``duration_s`` is then only an
upper bound. The scheduler and the departures wait for additions instead of
ending when the plan runs out.

Seams: the engine is handed its media tiers (`lkswarm.engine.ports.MediaTier`,
built by `lkswarm.app.runner.build_engine`) and attaches the first one that
claims a participant to its driver; it never imports a tier or the report.
`Engine.run()` returns a `RunRecord` of plain data, from which
`lkswarm.report.build` makes the report.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import heapq
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from lkswarm.engine.context import Run
from lkswarm.engine.outcome import Outcome
from lkswarm.engine.participant import ParticipantDriver
from lkswarm.engine.plan import Arrival, worker_plan
from lkswarm.engine.ports import MediaTier, TierTotals
from lkswarm.engine.record import ParticipantRow, RunRecord, Tally
from lkswarm.engine.timeline import Observer, RunInfo, Sampler
from lkswarm.errors import LkswarmError, SignalError
from lkswarm.metrics import (
    LoopLagMonitor,
    PhaseMetrics,
    ProcessUsage,
    current_rss_mb,
    raise_fd_limit,
)
from lkswarm.net.twirp import RoomService
from lkswarm.signal.events import Joined

LATE_START_MS = 10.0  # a start later than this counts as late
ROOM_CHECK_TIMEOUT_S = 10.0  # ParticipantUpdates are batched every 3 s by the server
STOP_GRACE_S = 3.0
ABORT_CLOSE_S = 1.0  # after a second Ctrl-C, what a tier may take to close


class Engine:
    """Runs one scenario against one server URL, with the media tiers it is given."""

    def __init__(
        self,
        run: Run,
        tiers: Sequence[MediaTier] = (),
        observers: list[Observer] | None = None,
        worker: tuple[int, int] = (0, 1),
        start_gate: Callable[[], Awaitable[float]] | None = None,
        *,
        open_plan: bool = False,
    ) -> None:
        self.run_context = run
        self.config = run.config
        # In priority order: the first tier that claims a participant gets it (probes before the light tier).
        self.tiers = list(tiers)
        # One of several generator processes (lkswarm.app.workers) runs rooms index % count == worker index.
        self.worker = worker
        # An open plan starts empty and grows while the run goes (`add_arrivals`, `add_departure`): a
        # capacity search decides each level's population from the last level's verdict. The run then ends
        # on `finish` (or at ``duration_s``, the search's overall bound), not when the plan runs out.
        self.open_plan = open_plan
        self.plan: list[Arrival] = [] if open_plan else worker_plan(run.config, worker)
        self._departures: list[tuple[float, int]] = []  # heap of (leave_s, plan index)
        self._arrivals_added = asyncio.Event()  # wakes the scheduler of an open plan
        self._departures_added = asyncio.Event()  # wakes its departures
        self.started = asyncio.Event()  # set once the run's time origin is fixed
        # Awaited once set-up is done; returns the wall-clock time at which the run starts, so that
        # several processes share one time origin.
        self.start_gate = start_gate
        self.tally = Tally()
        self.drivers: list[ParticipantDriver] = []
        self.late_starts = 0
        self.departed = 0
        self._scheduling_done = False
        self._by_index: dict[int, ParticipantDriver] = {}
        self._left_before_start: set[int] = set()  # departures due before their participant started
        self.rss_start_mb = 0.0
        self.rss_ready_mb = 0.0  # after set-up (clips encoded, media hub and probes started)
        self.rss_end_mb = 0.0
        self.sampler = Sampler(_EngineSource(self), list(observers or []), metrics=run.metrics)
        self._t0 = 0.0
        self.interrupted: dict[str, Any] | None = None  # {"signal", "at_s"} when a stop ended the run early
        self._stop_requested = asyncio.Event()
        # Set when the run may be over before its duration: a stop, or everyone ended once scheduling is
        # done. The run's main wait sleeps on it instead of polling (a wakeup ten times a second).
        self._may_end = asyncio.Event()
        self._aborting = False

    @property
    def metrics(self) -> PhaseMetrics:
        return self.run_context.metrics

    @property
    def counters(self) -> collections.Counter[str]:
        return self.run_context.counters

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self.run_context.spawn(coroutine)

    def tier_of(self, index: int) -> MediaTier | None:
        return next((tier for tier in self.tiers if tier.claims(index)), None)

    # -- callbacks from drivers ----------------------------------------------------------

    def on_outcome(self, driver: ParticipantDriver, outcome: Outcome, detail: str) -> None:
        detail = self.run_context.credentials.redact(detail) if detail else ""
        self.run_context.counters[f"signal_path_outcome:{driver.path}:{outcome.kind.value}"] += 1
        self.tally.outcome(driver.identity, driver.room, outcome, detail, time.perf_counter() - self._t0)
        if self.tally.alive == 0:
            self._may_end.set()

    def on_joined(self, driver: ParticipantDriver, event: Joined) -> None:
        self.tally.joined += 1
        if event.server_version:
            self.tally.server_version = event.server_version

    def on_pong(self, driver: ParticipantDriver) -> None:
        self.tally.pinged.add(driver.index)

    def stop(self, signal_name: str) -> None:
        """Ends the run early, as at its duration: arrivals stop, everyone alive leaves politely, and the
        run returns its record. Called from a signal handler on the loop (SIGINT, SIGTERM, SIGHUP)."""
        if self.interrupted is None:
            at_s = max(0.0, time.perf_counter() - self._t0) if self._t0 else 0.0
            self.interrupted = {"signal": signal_name, "at_s": round(at_s, 3)}
        self._stop_requested.set()
        self._may_end.set()

    def finish(self) -> None:
        """Ends the run now, as its duration would (not an interruption): for an open plan's owner."""
        self._stop_requested.set()
        self._may_end.set()

    def elapsed_s(self) -> float:
        """Seconds since the run's time origin (0 before it is fixed)."""
        return max(0.0, time.perf_counter() - self._t0) if self._t0 else 0.0

    def add_arrivals(self, arrivals: Sequence[Arrival]) -> None:
        """Appends arrivals to an open plan; their start times (run seconds) must not precede the last one's."""
        if not self.open_plan:
            raise LkswarmError("add_arrivals needs an engine built with open_plan=True")
        last_s = self.plan[-1].start_s if self.plan else 0.0
        for arrival in sorted(arrivals, key=lambda a: a.start_s):
            if arrival.start_s < last_s:
                raise LkswarmError(f"arrival {arrival.index} at {arrival.start_s:.3f} s precedes the plan's end")
            last_s = arrival.start_s
            self.plan.append(arrival)
            if arrival.leave_s is not None:
                heapq.heappush(self._departures, (arrival.leave_s, arrival.index))
        self._arrivals_added.set()
        self._departures_added.set()

    def add_departure(self, leave_s: float, index: int) -> None:
        """Plans a polite departure of participant ``index`` at run second ``leave_s`` (an open plan's)."""
        heapq.heappush(self._departures, (leave_s, index))
        self._departures_added.set()

    def driver_of(self, index: int) -> ParticipantDriver | None:
        """The participant of plan index ``index``, once started."""
        return self._by_index.get(index)

    def live_drivers(self) -> list[ParticipantDriver]:
        """Participants started and not yet ended, oldest first."""
        return [d for d in self.drivers if not d.outcome]

    def abort(self, signal_name: str) -> None:
        """A second stop: as `stop`, with no grace for participants to leave or tiers to close."""
        self.stop(signal_name)
        self._aborting = True

    def active_count(self) -> int:
        """Participants alive whose current primary PeerConnection is connected."""
        return sum(1 for d in self.drivers if not d.outcome and d.leg is not None and d.leg.active)

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> RunRecord:
        """Runs the plan to its end (or a stop) and returns what the report is built from."""
        try:
            return await self._run()
        finally:
            # What the run froze (`_run`) is collectable again: a process that runs again (a Ray actor's next
            # job, an embedding program) kept every earlier run's cyclic garbage for good, ~7 MB a run.
            gc.unfreeze()

    async def _run(self) -> RunRecord:
        config = self.config
        fd_limit = raise_fd_limit()
        usage = ProcessUsage()
        lag = LoopLagMonitor(self.metrics)
        started_at = datetime.now(UTC)
        self.rss_start_mb = current_rss_mb()
        usage.start()
        for tier in self.tiers:
            await tier.start()  # clips are encoded on first use, before the clock starts
        info = RunInfo(config.duration_s, self.metrics, self._live_counts)
        for observer in self.sampler.observers:
            await observer.start(info)
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
        # From here: the set-up above (a probe tier's codec libraries, the clips) blocks the loop once, before
        # anyone joins; measured with the run, its stall read as a saturated generator in a short run.
        lag.start()
        # The report's start is the timeline's zero (the first arrival's instant), not the set-up before it.
        started_at = datetime.now(UTC) + timedelta(seconds=t0 - time.perf_counter())
        self.started.set()
        end_at = t0 + config.duration_s
        loop = asyncio.get_running_loop()
        background = [
            loop.create_task(self._schedule(t0, end_at)),
            loop.create_task(self._depart(t0, end_at)),
        ]
        if config.reconnect_storm_at_s is not None:
            background.append(loop.create_task(self._reconnect_storm(t0 + config.reconnect_storm_at_s)))
        self.sampler.start(t0)
        while time.perf_counter() < end_at and not self._stop_requested.is_set():
            if self._scheduling_done and self.tally.alive == 0:
                self.counters["ended_early"] = 1  # said in the report's notes
                break  # everyone has already ended (e.g. the server is unreachable)
            self._may_end.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._may_end.wait(), max(0.0, end_at - time.perf_counter()))
        for task in background:
            if task.done() and not task.cancelled() and task.exception() is not None:
                # A broken schedule must not pass for a run whose participants were simply not started.
                raise LkswarmError(f"internal error in the scheduler: {task.exception()!r}")
            task.cancel()
        interrupted_by = self.interrupted["signal"] if self.interrupted is not None else None
        for driver in self.drivers:  # outcomes are decided now, before anything below can fail a participant
            driver.settle_at_end(interrupted_by)
        self.sampler.sample()  # the last, partial interval
        await self.sampler.stop()
        run_duration_s = time.perf_counter() - t0
        self.rss_end_mb = current_rss_mb()  # every live participant still connected
        # Who is alive and ACTIVE at the end, taken now: the room check below takes up to 10 s, and a participant
        # the server drops meanwhile (its 60 s rule for signal-only ones) completed, but was counted out of both.
        alive_at_end = sum(1 for d in self.drivers if d.ended_alive and not d.outcome)
        active_at_end = {d.index for d in self.drivers if not d.outcome and d.leg is not None and d.leg.active}
        if interrupted_by is not None:
            room_check: dict[str, Any] = {"skipped": True, "reason": f"the run was stopped ({interrupted_by})"}
        elif not config.verify_rooms:
            room_check = {"skipped": True}
        else:
            try:
                room_check = await self._verify_rooms()
            except Exception as exc:  # the check only reads; its failure must not cost the run its report
                room_check = {"error": f"internal error in the room check: {exc!r}"[:300]}
        totals: list[TierTotals] = [await tier.collect() for tier in self.tiers]
        if self.tiers:
            self.counters["active_at_end"] = len(active_at_end)
        participants = [self._row(d, d.index in active_at_end) for d in self.drivers]
        messages: collections.Counter[str] = collections.Counter()
        for driver in self.drivers:
            messages.update(driver.messages_received)
        await self._stop_all()
        for tier in self.tiers:
            if self._aborting:  # a second Ctrl-C: what has not closed in a second is left to the process's end
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(tier.close(), ABORT_CLOSE_S)
            else:
                await tier.close()
        for observer in self.sampler.observers:
            await observer.stop()
        lag.stop()
        usage.stop()
        return RunRecord(
            config=config,
            started_at=started_at,
            duration_s=run_duration_s,
            room_names=[config.room_name(a.room_index) for a in self.plan],
            participants=participants,
            tally=self.tally,
            counters=self.counters,
            metrics=self.metrics,
            messages_received=messages,
            timeline=self.sampler.report(),
            tiers=totals,
            room_check=room_check,
            alive_at_end=alive_at_end,
            departed=self.departed,
            late_starts=self.late_starts,
            cpu_s=usage.cpu_s,
            max_rss_mb=usage.max_rss_mb,
            rss_start_mb=self.rss_start_mb,
            rss_ready_mb=self.rss_ready_mb,
            rss_end_mb=self.rss_end_mb,
            fd_limit=fd_limit,
            interrupted=self.interrupted,
            open_plan=self.open_plan,
        )

    @staticmethod
    def _row(driver: ParticipantDriver, active_at_end: bool) -> ParticipantRow:
        joined = driver.joined_at
        join_ms = (joined - driver.intended_start) * 1000 if joined is not None else None
        return ParticipantRow(driver.room, join_ms, driver.outcome, active_at_end, driver.server_quality)

    def _live_counts(self) -> tuple[int, int, int, int, dict[str, int]]:
        """(planned, started, joined, alive, outcome counts) right now, for a Prometheus scrape."""
        return len(self.plan), len(self.drivers), self.tally.joined, self.tally.alive, self.tally.outcome_texts()

    async def _schedule(self, t0: float, end_at: float) -> None:
        try:
            next_arrival = 0
            while True:
                while next_arrival < len(self.plan):
                    arrival = self.plan[next_arrival]
                    next_arrival += 1
                    intended = t0 + arrival.start_s
                    if intended >= end_at:
                        return
                    # Never before its instant: uvloop rounds a sleep to its millisecond clock and can wake up to
                    # a millisecond early (97 of 300 sleeps did here), so sleep again until the instant has come.
                    while (delay := intended - time.perf_counter()) > 0:
                        await asyncio.sleep(delay)
                    self._start(arrival, intended)
                if not self.open_plan:
                    return
                self._arrivals_added.clear()
                await self._arrivals_added.wait()
        finally:
            self._scheduling_done = True
            self._may_end.set()

    def _start(self, arrival: Arrival, intended: float) -> None:
        if arrival.index in self._left_before_start:
            return
        lateness_ms = max(0.0, time.perf_counter() - intended) * 1000
        self.metrics.record_lateness(lateness_ms)
        if lateness_ms > LATE_START_MS:
            self.late_starts += 1
        config = self.config
        driver = ParticipantDriver(
            self.run_context,
            self,
            arrival.index,
            config.room_name(arrival.room_index),
            config.identity(arrival.index),
            intended,
            seat=arrival.seat,
        )
        self.drivers.append(driver)
        tier = self.tier_of(arrival.index)
        if tier is not None:
            driver.leg = tier.attach(driver)
        self._by_index[arrival.index] = driver
        self.tally.alive += 1
        self.spawn(driver.run())

    async def _depart(self, t0: float, end_at: float) -> None:
        """Planned departures (ramp-down stages, churn, an open plan's teardowns): the participant leaves politely."""
        if not self.open_plan:  # an open plan's departures are pushed as they are added
            for arrival in self.plan:
                if arrival.leave_s is not None:
                    heapq.heappush(self._departures, (arrival.leave_s, arrival.index))
        departures = self._departures
        while departures or self.open_plan:
            if not departures:
                self._departures_added.clear()
                await self._departures_added.wait()
                continue
            leave_s, index = departures[0]
            at = t0 + leave_s
            if at >= end_at:
                return
            delay = at - time.perf_counter()
            if delay > 0:
                # An open plan may gain an earlier departure meanwhile: wake for it.
                self._departures_added.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._departures_added.wait(), delay)
                continue
            heapq.heappop(departures)
            driver = self._by_index.get(index)
            if driver is None:
                # Not started yet: it never will be (see the module doc), rather than start after its own departure.
                self._left_before_start.add(index)
                self.counters["departed_before_start"] += 1
            elif not driver.outcome:
                if driver.joined_at is not None:  # one still joining fails (not_joined_by_departure): not departed
                    self.departed += 1
                driver.stop(departure=True)

    async def _reconnect_storm(self, at: float) -> None:
        """Every participant joined at ``at`` drops its WebSocket and resumes (reconnect=1) or joins afresh: all at
        once, or one after another evenly over ``reconnect_storm_window_s``."""
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        rejoin = self.config.reconnect_storm_mode == "rejoin"
        targets = [driver for driver in self.drivers if not driver.outcome and driver.joined_at is not None]
        gap_s = self.config.reconnect_storm_window_s / len(targets) if targets else 0.0
        for k, driver in enumerate(targets):
            if gap_s:
                await asyncio.sleep(max(0.0, at + k * gap_s - time.perf_counter()))
            if driver.outcome or driver.joined_at is None:
                continue  # it ended (or left) while the window ran
            dropped = driver.force_reconnect() if rejoin else driver.force_resume()
            if dropped:  # one mid-resume or stopping was not dropped: not counted as if it were
                self.counters["storm_dropped"] += 1

    async def _verify_rooms(self) -> dict[str, Any]:
        """Compares every live participant's room view with ListParticipants, waiting for updates to settle."""
        rooms: dict[str, list[ParticipantDriver]] = collections.defaultdict(list)
        for driver in self.drivers:
            if not driver.outcome and driver.session is not None and driver.joined_at is not None:
                rooms[driver.current_room].append(driver)
        if not rooms:
            return {"rooms": 0, "participants": 0, "matched": 0, "mismatched": 0}
        service = RoomService(self.run_context.url, self.run_context.credentials, self.run_context.tls)
        deadline = time.perf_counter() + ROOM_CHECK_TIMEOUT_S
        while True:
            mismatches: list[dict[str, Any]] = []
            try:
                for room, drivers in rooms.items():
                    listed_rows = await asyncio.to_thread(service.list_participants, room)
                    # Hidden participants (a recorder, say, in a room named with --room) are listed but never
                    # announced to the others: no view has them.
                    listed = {
                        p["identity"]: p.get("sid", "")
                        for p in listed_rows
                        if not (p.get("permission") or {}).get("hidden")
                    }
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
        deadline = time.perf_counter() + (0.0 if self._aborting else STOP_GRACE_S)
        tasks = self.run_context.tasks
        while tasks and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        # Let the transports deliver their close frames before the loop goes away.
        await asyncio.sleep(0.05)


class _EngineSource:
    """What the sampler reads of a running engine (`lkswarm.engine.timeline.SampleSource`)."""

    __slots__ = ("_engine",)

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def counts(self) -> tuple[int, int, int, int, int]:
        engine = self._engine
        has_media = bool(engine.tiers)
        active = engine.active_count() if has_media else 0
        return len(engine.plan), len(engine.drivers), engine.tally.joined, engine.tally.alive, active

    def outcomes(self) -> collections.Counter[Outcome]:
        return self._engine.tally.outcomes

    def tiers(self) -> Sequence[MediaTier]:
        return self._engine.tiers
