"""`lkswarm capacity`: drives a load through the levels a `lkswarm.capacity.search.Search` asks for.

Theory of operation
-------------------
The load is behind a `lkswarm.app.capacity_port.LoadPort`: one engine with an
*open plan* in this process, or one per Ray actor (``capacity --ray``); it runs
for the whole search, and this controller adds its arrivals and departures as
the search goes, never knowing which it drives. A level is:

1. **Ramp.** Going up from a passing level, the population persists and only
   the difference arrives, at ``rate`` joins per second (open arrivals, as in
   `run`). A level below the population now (a bisection probe) is *fresh*:
   everyone leaves first, and the controller waits until the server reports no
   participants (its ``livekit_participant_total``, when readable) and a short
   cool-down, so the probe starts from an idle server.
2. **Settle**, a fixed time or ``auto`` (until every level participant has
   joined and, with media, is ACTIVE; at least 3 s, at most 60 s).
3. **Hold.** The `HoldWindow` taps the run's metrics; a low-rate churn of
   short-lived subscriber joins (``probe_churn_per_s``) keeps join latency
   sampled while the population is flat. A churn replaces the longest-lived
   subscriber in its seat; where a ping SLO is judged, only one that has lived
   `CHURN_MIN_AGE_S`: in a small level every seat was replaced within a ping
   interval, so nobody lived to ping and ``ping_rtt`` never gathered samples. The verdicts of every SLO come from
   the hold alone (`lkswarm.capacity.slo.judge`); a hold whose verdicts are
   INCONCLUSIVE is extended by half a hold until ``max_hold_s``.
4. **Guards.** A level at which this generator saturated (scheduler lateness,
   loop lag or media-thread lag over their limits *in the hold*) is
   GENERATOR_BOUND: never the server's limit, and the search stops with a lower
   bound. A server that died, or a load that stopped (a stop signal, a Ray actor
   that died), ABORTS.

The controller never decides what comes next: the search does. Everything it
measured is returned as `Level` rows, also when a signal ends it early.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from lkswarm.app.capacity_level import HoldData, server_figures
from lkswarm.app.capacity_port import LoadPort, Population
from lkswarm.capacity.schema import Level, LevelVerdict, SloResult, SloSpec
from lkswarm.capacity.search import Planned, Search
from lkswarm.capacity.slo import combine, judge, judge_count, phase_of
from lkswarm.config import RunConfig
from lkswarm.engine.plan import Arrival, Rooms
from lkswarm.metrics import process_cpu_s
from lkswarm.observe.server_metrics import Scrape, scrape
from lkswarm.signal.session import DEFAULT_PING_INTERVAL_S

Grow = Literal["subscribers", "rooms", "publishers"]
AUTO_SETTLE_MIN_S = 3.0
AUTO_SETTLE_MAX_S = 60.0
TEARDOWN_TIMEOUT_S = 45.0
COOL_DOWN_S = 2.0
MIN_SUBWINDOW_S = 2.0
SUBWINDOWS_PER_HOLD = 6
CHURN_GAP_S = 0.5
# Where a ping SLO is judged, a participant churned out has lived six ping intervals (it pinged five times):
# caps the churn at a level's population over this, per second. Longer keeps more pings but makes fewer
# joins: a level of 10 gathers the 59 joins of a p95 and the 299 pings of a p99 in a hold of 180 s
# (`capacity_run.sample_shortfalls`).
CHURN_MIN_AGE_S = 6 * DEFAULT_PING_INTERVAL_S


def churn_min_age_s(slos: list[SloSpec]) -> float:
    """How long a seat lives before the hold's churn may replace it: long enough to ping where pings are judged."""
    return CHURN_MIN_AGE_S if any(phase_of(spec["key"]) == "ping_rtt" for spec in slos) else 0.0


# A retry of a hold-edge scrape that timed out (see `Controller._scrape_hold_edge`).
PATIENT_SCRAPE_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Shape:
    """How a level's population is laid out: which dimension grows, and what stays fixed."""

    grow: Grow
    rooms: int  # fixed rooms (subscribers, publishers); for "rooms", the start's
    per_room: int  # participants per room at the start; fixed when growing rooms
    publishers: int  # per room (audio + video); everyone when growing publishers

    @property
    def granularity(self) -> int:
        return self.per_room if self.grow == "rooms" else self.rooms

    def room_targets(self, participants: int) -> list[int]:
        """Participants per room at a level (levels are multiples of the granularity)."""
        if self.grow == "rooms":
            return [self.per_room] * max(1, participants // self.per_room)
        return [participants // self.rooms] * self.rooms

    def describe(self, participants: int) -> dict[str, int]:
        targets = self.room_targets(participants)
        per_room = targets[0] if targets else 0
        publishers = per_room if self.grow == "publishers" else min(self.publishers, per_room)
        return {"rooms": len(targets), "publishers": publishers, "subscribers": per_room - publishers}


@dataclass(frozen=True, slots=True)
class LevelTiming:
    rate: float  # joins per second in a ramp
    settle_s: float | None  # None: auto
    hold_s: float
    max_hold_s: float
    probe_churn_per_s: float
    confidence: float
    # The least a seat lives before the churn replaces it: `CHURN_MIN_AGE_S` where a ping SLO is judged
    # (`churn_min_age_s`), else 0 (the longest-lived first, however young).
    churn_min_age_s: float = 0.0
    # How long a join may take before it fails (the scenario key join_timeout): the hold waits this long at most for
    # the churn's joins still in flight at its end, so each ends in the level, as a sample or a failure.
    join_timeout_s: float = 15.0


@dataclass(slots=True)
class Controller:
    """Adds and removes participants of a load, level by level, and measures each hold."""

    port: LoadPort
    rooms: int  # of the load's plan (every level fits in them)
    shape: Shape
    slos: list[SloSpec]
    timing: LevelTiming
    metrics_url: str | None = None
    server_pid: Callable[[], int | None] = lambda: None
    server_alive: Callable[[], bool] = lambda: True
    on_level: Callable[[Level], None] = lambda level: None
    on_level_start: Callable[[Planned], None] = lambda planned: None
    levels: list[Level] = field(default_factory=list)
    search_started_at: float = 0.0
    _seats: dict[int, tuple[int, int]] = field(default_factory=dict)  # live plan index -> (room, seat)
    _rooms: Rooms | None = None
    _next_index: int = 0
    _last_start_s: float = 0.0  # the latest start planned so far (run s)
    _churned: set[int] = field(default_factory=set)
    _started_s: dict[int, float] = field(default_factory=dict)  # live plan index -> its planned start (run s)

    def __post_init__(self) -> None:
        self._rooms = Rooms(self.rooms)

    # -- the search ----------------------------------------------------------------------

    async def run(self, search: Search) -> None:
        await self.port.started()
        self.search_started_at = time.perf_counter()
        while (planned := search.next_level()) is not None:
            self.on_level_start(planned)
            level = await self.measure(planned)
            self.levels.append(level)
            self.on_level(level)
            search.record(planned.participants, level["verdict"])
            if level["verdict"] == "ABORTED":
                break

    def _t(self) -> float:
        return round(time.perf_counter() - self.search_started_at, 3)

    def _ended(self) -> str:
        """Why the level cannot go on ("" while it can)."""
        if not self.server_alive():
            return "the server died"
        return self.port.stopped()

    async def measure(self, planned: Planned) -> Level:
        ramp_from = self._t()
        if planned.fresh and self._seats:
            await self._teardown()
        # After the teardown: a participant told to leave before it joined ends failed (not_joined_by_departure), and
        # that failure is the old population's, not this level's, whose attempted count does not hold it.
        failed_before = (await self.port.population(())).failed
        attempted_before = self._next_index
        live_before = len(self._seats)
        ramp_end_s = await self._grow_to(planned.participants)
        await self._sleep_until(ramp_end_s + 0.5)
        ramp = (ramp_from, self._t())
        await self._settle(planned.participants)
        settle = (ramp[1], self._t())
        window, results, before, after, proc_s = await self._hold()
        hold = (settle[1], self._t())
        now = await self.port.population(())
        alive, active, failed = now.live, now.active if now.media else 0, now.failed - failed_before
        attempted = live_before + (self._next_index - attempted_before)
        if self._has_slo("failed_ratio"):
            spec = self._spec("failed_ratio")
            results["failed_ratio"] = judge_count(spec, failed, max(attempted, 1), self.timing.confidence)
        verdict, reason, _ = combine(results)
        generator = window.generator()
        ended = self._ended()
        level_verdict: LevelVerdict = verdict
        if ended:
            level_verdict, reason = "ABORTED", ended
        elif generator["bound"]:
            level_verdict, reason = "GENERATOR_BOUND", generator["reason"]
        layout = self.shape.describe(planned.participants)
        return {
            "index": len(self.levels),
            "participants": planned.participants,
            "rooms": layout["rooms"],
            "publishers": layout["publishers"],
            "subscribers": layout["subscribers"],
            "phase": planned.phase,
            "fresh": planned.fresh,
            "ramp_s": ramp,
            "settle_s": settle,
            "hold_s": hold,
            "verdict": level_verdict,
            "reason": reason,
            "slos": results,
            "client": window.client(failed, attempted, alive, active),
            "generator": generator,
            "server": server_figures(before, after, window.held_s, proc_s),
        }

    # -- populations -----------------------------------------------------------------------

    async def _reconcile(self) -> Population:
        """Frees the seats of participants that ended (failed, or left after a churn or teardown)."""
        assert self._rooms is not None
        population = await self.port.population(list(self._seats))
        for index in population.ended:
            self._started_s.pop(index, None)
            if index in self._seats:
                room, seat = self._seats.pop(index)
                self._rooms.release(room, seat)
        return population

    async def _add(self, arrivals: list[Arrival]) -> None:
        if arrivals:
            self._last_start_s = max(self._last_start_s, arrivals[-1].start_s)
            await self.port.add_arrivals(arrivals)

    async def _grow_to(self, participants: int) -> float:
        """Plans the arrivals that bring each room to its target; returns the ramp's last start (run s)."""
        assert self._rooms is not None
        await self._reconcile()
        # Never before an arrival already planned: a churn replacement may start later than now (it waits
        # CHURN_GAP_S after its predecessor), and an open plan's starts must not go backwards.
        now_s = max(self.port.elapsed_s() + 0.05, self._last_start_s)
        arrivals: list[Arrival] = []
        for room, target in enumerate(self.shape.room_targets(participants)):
            for _ in range(max(0, target - self._rooms.occupancy[room])):
                seat = self._rooms.take_in(room)
                start_s = now_s + len(arrivals) / self.timing.rate
                arrivals.append(Arrival(self._next_index, start_s, room, seat))
                self._seats[self._next_index] = (room, seat)
                self._started_s[self._next_index] = start_s
                self._next_index += 1
        arrivals.sort(key=lambda a: (a.start_s, a.index))
        await self._add(arrivals)
        return arrivals[-1].start_s if arrivals else now_s

    async def _teardown(self) -> None:
        """Everyone leaves; then waits for an empty server and a cool-down."""
        # A churn replacement may still be due (it starts CHURN_GAP_S after its predecessor left): a departure
        # planned before its start would find no participant to stop, and it would live on into the next level.
        await self._sleep_until(self._last_start_s + 0.05)
        await self.port.add_departures(self.port.elapsed_s(), list(self._seats))
        deadline = time.perf_counter() + TEARDOWN_TIMEOUT_S
        while time.perf_counter() < deadline and not self._ended():
            await asyncio.sleep(0.25)
            await self._reconcile()
            if self._seats:
                continue
            if await self._server_participants() in (None, 0.0):
                break
        await asyncio.sleep(COOL_DOWN_S)

    async def _server_participants(self) -> float | None:
        if self.metrics_url is None:
            return None
        scraped = await asyncio.to_thread(scrape, self.metrics_url)
        return scraped.total("livekit_participant_total", {}) if isinstance(scraped, Scrape) else None

    async def _churn_one(self) -> None:
        """Replaces the longest-lived subscriber (a publisher when there is none) with a fresh join in its seat,
        if it has joined and lived ``timing.churn_min_age_s``."""
        publishers = 0 if self.shape.grow == "publishers" else self.shape.publishers
        now_s = self.port.elapsed_s()
        live = [i for i in self._seats if i not in self._churned]
        pool = [i for i in live if self._seats[i][1] >= publishers] or live
        min_age_s = self.timing.churn_min_age_s
        candidates = [i for i in pool if not min_age_s or now_s - self._started_s.get(i, now_s) >= min_age_s]
        if candidates:  # one still joining stays: its departure would fail it (not_joined_by_departure), our doing
            joining = (await self.port.population(candidates)).joining
            candidates = [i for i in candidates if i not in joining]
        if not candidates:
            return
        leaving = min(candidates)
        room, seat = self._seats.pop(leaving)
        self._started_s.pop(leaving, None)
        self._churned.add(leaving)
        await self.port.add_departures(now_s, [leaving])
        # The replacement joins a moment later: in a room at its size limit the server must have seen the
        # leaver go, or it refuses the newcomer as "room full" and the probe measures the limit, not the join.
        start_s = max(now_s + CHURN_GAP_S, self._last_start_s)
        self._seats[self._next_index] = (room, seat)  # the seat passes straight to the replacement
        self._started_s[self._next_index] = start_s
        self._next_index += 1
        await self._add([Arrival(self._next_index - 1, start_s, room, seat)])

    # -- windows ----------------------------------------------------------------------------

    async def _sleep_until(self, run_s: float) -> None:
        while not self._ended():
            remaining = run_s - self.port.elapsed_s()
            if remaining <= 0:
                return
            await asyncio.sleep(min(0.25, remaining))

    async def _settle(self, participants: int) -> None:
        if self.timing.settle_s is not None:
            await self._sleep_until(self.port.elapsed_s() + self.timing.settle_s)
            return
        started = self.port.elapsed_s()
        while not self._ended():
            waited = self.port.elapsed_s() - started
            now = await self.port.population(())
            inactive = now.media and now.active < now.live
            if waited >= AUTO_SETTLE_MAX_S or (waited >= AUTO_SETTLE_MIN_S and not now.pending and not inactive):
                return
            await asyncio.sleep(0.25)

    async def _scrape_hold_edge(self) -> Scrape | str | None:
        """The server's counters at a hold's edge. A server held to a fraction of a core (--server-cpus) may
        answer /metrics slower than a scrape's timeout: one patient retry, so the level keeps its server side."""
        if not self.metrics_url:
            return None
        scraped = await asyncio.to_thread(scrape, self.metrics_url)
        if isinstance(scraped, str):
            scraped = await asyncio.to_thread(scrape, self.metrics_url, PATIENT_SCRAPE_TIMEOUT_S)
        return scraped

    async def _hold(
        self,
    ) -> tuple[HoldData, dict[str, SloResult], Scrape | str | None, Scrape | str | None, float | None]:
        before = await self._scrape_hold_edge()
        pid = self.server_pid()
        proc_before = process_cpu_s(pid) if pid is not None else None
        self._churned.clear()
        await self.port.open_hold()
        opened = time.perf_counter()
        subwindow_s = max(MIN_SUBWINDOW_S, self.timing.hold_s / SUBWINDOWS_PER_HOLD)
        planned_s = self.timing.hold_s
        results: dict[str, SloResult] = {}
        while not self._ended():
            await self._hold_for(planned_s - (time.perf_counter() - opened), subwindow_s)
            results = self._judge(await self.port.read_hold())
            inconclusive = any(r["verdict"] == "INCONCLUSIVE" for r in results.values())
            if not inconclusive or planned_s >= self.timing.max_hold_s:
                break
            # Each extension adds at least a sub-window, so the hold reaches --max-hold whatever --hold is.
            planned_s = min(self.timing.max_hold_s, planned_s + max(self.timing.hold_s / 2, subwindow_s))
        if await self._joins_in_flight_ended():
            results = self._judge(await self.port.read_hold())  # with the joins that ended since
        window = await self.port.close_hold()
        after = await self._scrape_hold_edge()
        proc_after = process_cpu_s(pid) if pid is not None else None
        proc_cores = None
        if proc_before is not None and proc_after is not None and window.held_s > 0:
            proc_cores = round((proc_after - proc_before) / window.held_s, 3)
        return window, results, before, after, proc_cores

    async def _joins_in_flight_ended(self) -> bool:
        """At the hold's end, waits (at most a join timeout) for the churn's joins still in flight: the teardown or
        the search's end would cut them (``not_joined_by_departure``), a failure in no level, and the slowest
        joins of a struggling server would be missing from its join SLOs. True when the hold churned, so that it
        is judged again with the joins that ended since its planned end."""
        if self.timing.probe_churn_per_s <= 0:
            return False
        await self._sleep_until(self._last_start_s + 0.05)  # a replacement due after its predecessor left
        deadline = time.perf_counter() + self.timing.join_timeout_s + 1.0
        while time.perf_counter() < deadline and not self._ended():
            # This level's seats, a replacement whose driver has not started yet included (a Ray actor's clock or
            # loop may be a little behind ours).
            if not (await self.port.population(list(self._seats))).joining:
                break
            await asyncio.sleep(0.25)
        return True

    async def _hold_for(self, duration_s: float, subwindow_s: float) -> None:
        end = time.perf_counter() + max(0.0, duration_s)
        next_boundary = time.perf_counter() + subwindow_s
        churn_every_s = 1.0 / self.timing.probe_churn_per_s if self.timing.probe_churn_per_s > 0 else math.inf
        # `--probe-churn 0` churns no one (the first churn used to come at the hold's start whatever the rate).
        next_churn = time.perf_counter() if churn_every_s < math.inf else math.inf
        while time.perf_counter() < end and not self._ended():
            now = time.perf_counter()
            if now >= next_churn:
                await self._reconcile()
                await self._churn_one()
                next_churn += churn_every_s
            if now >= next_boundary:
                await self.port.hold_boundary()
                next_boundary += subwindow_s
            await asyncio.sleep(max(0.0, min(0.1, end - now, next_boundary - now, next_churn - now)))

    def _has_slo(self, key: str) -> bool:
        return any(spec["key"] == key for spec in self.slos)

    def _spec(self, key: str) -> SloSpec:
        return next(spec for spec in self.slos if spec["key"] == key)

    def _judge(self, window: HoldData) -> dict[str, SloResult]:
        confidence = self.timing.confidence
        results: dict[str, SloResult] = {}
        for spec in self.slos:
            key = spec["key"]
            if key == "failed_ratio":
                continue  # judged from the level's start, after the hold (see the module docstring)
            if key == "media.loss_ratio":
                results[key] = judge(spec, None, window.media_trials(), confidence)
            else:
                results[key] = judge(spec, window.values(phase_of(key)), None, confidence)
        return results


def engine_config(base: RunConfig, shape: Shape, maximum: int, timeout_s: float) -> RunConfig:
    """The open-plan engine's config: room count and seats for the largest level, the search's time bound."""
    rooms = math.ceil(maximum / shape.per_room) if shape.grow == "rooms" else shape.rooms
    per_room = shape.per_room if shape.grow == "rooms" else math.ceil(maximum / shape.rooms)
    update: dict[str, object] = {
        "rooms": rooms,
        "participants": max(per_room, shape.publishers, 1),
        "duration_s": timeout_s,
        "stages": (),
        "churn_rate": 0.0,
        "verify_rooms": False,
    }
    if shape.grow == "publishers":
        kind = "video_publishers" if base.video_publishers > 0 else "audio_publishers"
        update[kind] = max(per_room, 1)
    return base.replace(**update)
