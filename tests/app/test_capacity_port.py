"""The capacity controller's seam (`LoadPort`): hold windows merged exactly, and one search driven through a port
in one process or through `RayPort` over two actors reaching the same levels. No socket, no Ray."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Collection, Sequence
from typing import Any, cast

import pytest

from lkswarm.app import capacity, capacity_run
from lkswarm.app.capacity import Controller, LevelTiming, Shape
from lkswarm.app.capacity_level import HoldData, merge_holds
from lkswarm.app.capacity_port import LoadPort, Population
from lkswarm.app.ray_capacity import RayPort
from lkswarm.app.ray_engine import ActorShare
from lkswarm.app.shares import StopSignals
from lkswarm.capacity.schema import Level
from lkswarm.capacity.search import Planned, Search
from lkswarm.capacity.slo import parse_slo
from lkswarm.engine.plan import Arrival

ROOM_LIMIT = 5  # the fake server refuses a room's sixth participant


def hold(values: dict[str, list[float]], marks: list[tuple[int, int, int]], **kw: Any) -> HoldData:
    return HoldData(subwindows=[values], media_marks=marks, **kw)


def test_merged_holds_concatenate_values_per_sub_window_and_sum_packet_counts() -> None:
    a = HoldData(
        subwindows=[{"ping_rtt": [1.0, 2.0]}, {"ping_rtt": [3.0]}],
        media_marks=[(10, 11, 1), (20, 22, 2), (30, 33, 3)],
        held_s=10.0,
        cpu_s=1.0,
        media_lag=(100, 0),
        has_media=True,
    )
    b = HoldData(
        subwindows=[{"ping_rtt": [4.0], "join_response": [50.0]}, {}],
        media_marks=[(1, 1, 0), (2, 2, 0), (3, 4, 1)],
        held_s=10.2,
        cpu_s=2.0,
        media_lag=(50, 1),
        has_media=True,
    )
    merged = merge_holds([a, b])
    assert merged.values("ping_rtt") == [[1.0, 2.0, 4.0], [3.0]]
    assert merged.values("join_response") == [[50.0], []]
    assert merged.media_marks == [(11, 12, 1), (22, 24, 2), (33, 37, 4)]
    assert merged.media_trials() == [(1, 12), (2, 13)]
    assert (merged.held_s, merged.cpu_s, merged.media_lag) == (10.2, 3.0, (150, 1))
    client = merged.client(failed=0, attempted=4, alive=4, active=4)
    assert client["ping_rtt"]["count"] == 4 and client["packets_lost"] == 3
    assert merge_holds([a]) is a


def test_one_saturated_generator_binds_the_merged_hold() -> None:
    calm = hold({"lateness": [1.0] * 100}, [], held_s=10.0, cpu_s=5.0)
    saturated = hold({"lateness": [50.0] * 100}, [], held_s=10.0, cpu_s=9.0)
    generator = merge_holds([calm, saturated]).generator()
    assert generator["bound"] is True
    assert generator["reason"] == "generator 1: scheduler lateness p99 50 ms > 10 ms"
    assert generator["cpu_percent"] == 140.0  # 50 % + 90 %: the generators' CPU adds up
    assert generator["lateness_p99_ms"] == 50.0
    assert merge_holds([calm, calm]).generator()["bound"] is False


class FakeLoad:
    """A `LoadPort` with participants that join at once, a room limit, and ping values that depend on who
    is live: the same population gives the same values, however it is split."""

    def __init__(self) -> None:
        self.live: dict[int, int] = {}  # index -> room
        self.ended: set[int] = set()
        self.failed = 0
        self.rooms_seen: set[int] = set()
        self._open = False
        self._t0 = time.perf_counter()

    async def started(self) -> None:
        return None

    def elapsed_s(self) -> float:
        return time.perf_counter() - self._t0

    def stopped(self) -> str:
        return ""

    async def add_arrivals(self, arrivals: Sequence[Arrival]) -> None:
        for arrival in arrivals:
            self.rooms_seen.add(arrival.room_index)
            if sum(1 for room in self.live.values() if room == arrival.room_index) >= ROOM_LIMIT:
                self.failed += 1
                self.ended.add(arrival.index)
            else:
                self.live[arrival.index] = arrival.room_index

    async def add_departures(self, at_s: float, indices: Sequence[int]) -> None:
        for index in indices:
            if self.live.pop(index, None) is not None:
                self.ended.add(index)

    async def population(self, watched: Collection[int]) -> Population:
        ended = frozenset(i for i in watched if i in self.ended)
        return Population(live=len(self.live), failed=self.failed, ended=ended)

    async def open_hold(self) -> None:
        self._open = True

    async def hold_boundary(self) -> None:
        return None

    async def read_hold(self) -> HoldData:
        pings = [float(10 + (i + k) % 7) for i in sorted(self.live) for k in range(3)]  # 3 per participant
        return hold({"ping_rtt": pings}, [], held_s=0.2)

    async def close_hold(self) -> HoldData:
        self._open = False
        return await self.read_hold()

    def finish(self) -> None:
        return None


class FakeRef:
    def __init__(self, load: FakeLoad, name: str, args: tuple[Any, ...]) -> None:
        self.load, self.name, self.args = load, name, args

    def result(self) -> Any:
        if self.load is None:
            raise RuntimeError("The actor died unexpectedly before finishing this task.")
        return asyncio.run(getattr(self.load, self.name)(*self.args))


class FakeMethod:
    def __init__(self, load: FakeLoad | None) -> None:
        self.load = load

    def remote(self, name: str, *args: Any) -> FakeRef:
        return FakeRef(cast(FakeLoad, self.load), name, args)


class FakeHandle:
    def __init__(self, load: FakeLoad | None) -> None:
        self.call = FakeMethod(load)


class FakeRay:
    killed: list[Any]

    def __init__(self) -> None:
        self.killed = []

    def get(self, ref: FakeRef, timeout: float | None = None) -> Any:
        return ref.result()

    def kill(self, handle: Any, no_restart: bool = True) -> None:
        self.killed.append(handle)


def ray_port(loads: list[FakeLoad | None]) -> tuple[RayPort, FakeRay]:
    fake = FakeRay()
    shares = [ActorShare(i, FakeHandle(load), ready=True) for i, load in enumerate(loads)]
    port = RayPort(cast(Any, fake), shares, StopSignals(lambda sig: None))
    port.go_at = 0.0
    return port, fake


def search_through(port: LoadPort, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Level], Search]:
    monkeypatch.setattr(capacity, "COOL_DOWN_S", 0.0)
    shape = Shape("subscribers", rooms=2, per_room=2, publishers=0)
    slos = [parse_slo("failed_ratio<1%"), parse_slo("ping_rtt.p50<100ms")]
    timing = LevelTiming(rate=1000.0, settle_s=0.0, hold_s=0.2, max_hold_s=0.2, probe_churn_per_s=0.0, confidence=0.95)
    controller = Controller(port, 2, shape, slos, timing)
    search = Search(4, 16, growth=2.0, step=None, width=0.05, max_probes=6, granularity=2)
    asyncio.run(controller.run(search))
    return controller.levels, search


def test_a_search_through_two_actors_reaches_the_levels_of_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    one, _ = search_through(FakeLoad(), monkeypatch)
    loads = [FakeLoad(), FakeLoad()]
    port, _ = ray_port(list(loads))
    two, _ = search_through(port, monkeypatch)
    # Rooms of 2, 4 and 8 (over the limit of 5), then bisection: 6 fails, 5 is the most a room holds.
    assert [(lv["participants"], lv["verdict"]) for lv in one] == [
        (4, "PASS"),
        (8, "PASS"),
        (16, "FAIL"),
        (12, "FAIL"),
        (10, "PASS"),
    ]
    assert [(lv["participants"], lv["verdict"]) for lv in two] == [(lv["participants"], lv["verdict"]) for lv in one]
    for a, b in zip(one, two, strict=True):
        assert a["client"]["ping_rtt"] == b["client"]["ping_rtt"]  # the merged values are the same multiset
        assert (a["client"]["failed"], a["client"]["attempted"], a["client"]["alive"]) == (
            b["client"]["failed"],
            b["client"]["attempted"],
            b["client"]["alive"],
        )
    assert loads[0].rooms_seen == {0} and loads[1].rooms_seen == {1}  # each actor owns its rooms only
    assert all(a.room_index % 2 == actor for actor, plan in port.plans.items() for a in plan)


def test_an_actor_that_dies_stops_the_load_and_aborts_the_level(monkeypatch: pytest.MonkeyPatch) -> None:
    port, fake = ray_port([FakeLoad(), None])
    levels, _ = search_through(port, monkeypatch)
    assert [lv["verdict"] for lv in levels] == ["ABORTED"]
    assert "actor 1" in levels[0]["reason"] and "stopped answering" in levels[0]["reason"]
    assert port.stopped() == levels[0]["reason"]
    assert len(fake.killed) == 1


class PlanOrderLoad(FakeLoad):
    """A `FakeLoad` that refuses an arrival starting before the last one planned, as the engine's open plan does."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[float] = []

    async def add_arrivals(self, arrivals: Sequence[Arrival]) -> None:
        for arrival in arrivals:
            assert not self.starts or arrival.start_s >= self.starts[-1], "a start precedes the plan's end"
            self.starts.append(arrival.start_s)
        await super().add_arrivals(arrivals)


def test_growth_right_after_a_churn_plans_no_start_before_the_churn_replacement() -> None:
    # The replacement joins CHURN_GAP_S after its predecessor left, so it is planned in the future; a level's
    # growth that follows at once must not plan starts before it (the engine refuses that: a gate failed on it).
    load = PlanOrderLoad()
    shape = Shape("subscribers", rooms=1, per_room=4, publishers=0)
    timing = LevelTiming(rate=1000.0, settle_s=0.0, hold_s=0.2, max_hold_s=0.2, probe_churn_per_s=0.0, confidence=0.95)
    controller = Controller(load, 1, shape, [parse_slo("failed_ratio<1%")], timing)

    async def churn_then_grow() -> None:
        await controller._grow_to(2)
        await controller._churn_one()
        await controller._grow_to(4)

    asyncio.run(churn_then_grow())
    assert len(load.starts) == 2 + 1 + 2
    assert load.starts == sorted(load.starts)


def test_a_churn_replaces_only_a_subscriber_that_has_lived_long_enough_to_ping() -> None:
    """A small level churned at 1/s: every seat was replaced within 4 s, before its first ping (every 5 s), so
    ping_rtt gathered no samples and the default ping SLO could never pass."""
    load = FakeLoad()
    shape = Shape("subscribers", rooms=1, per_room=4, publishers=1)
    slos = [parse_slo("failed_ratio<1%"), parse_slo("ping_rtt.p99<250ms")]
    assert capacity.churn_min_age_s(slos) == capacity.CHURN_MIN_AGE_S
    assert capacity.churn_min_age_s(slos[:1]) == 0.0  # no pings judged: the longest-lived goes, however young
    timing = LevelTiming(rate=1000.0, settle_s=0.0, hold_s=0.2, max_hold_s=0.2, probe_churn_per_s=1.0, confidence=0.95,
                         churn_min_age_s=capacity.churn_min_age_s(slos))  # fmt: skip
    controller = Controller(load, 1, shape, slos, timing)

    async def churn(ages_s: dict[int, float]) -> list[int]:
        now_s = load.elapsed_s()
        for index, age_s in ages_s.items():
            controller._started_s[index] = now_s - age_s
        before = set(controller._seats)
        await controller._churn_one()
        return sorted(before - set(controller._seats))

    async def scenario() -> None:
        await controller._grow_to(4)  # seat 0 publishes; 1 to 3 subscribe
        assert await churn({}) == []  # everyone just joined
        young = capacity.CHURN_MIN_AGE_S - 1
        assert await churn({0: 60.0, 1: young, 2: young, 3: young}) == []  # subscribers go first, none is old
        assert await churn({2: capacity.CHURN_MIN_AGE_S, 3: 60.0}) == [2]  # the longest-lived by plan order
        assert controller._started_s[4] >= load.elapsed_s()  # its replacement, in its seat, is young

    asyncio.run(scenario())
    assert controller._seats[4] == (0, 2)


def test_a_churn_leaves_a_participant_still_joining_be() -> None:
    """Against a slow server the churn departed subscribers that had not joined yet: each failed
    (not_joined_by_departure), 5 of 64 in a level, a failure the search itself made."""

    class SlowJoins(FakeLoad):
        joining: frozenset[int] = frozenset({1})

        async def population(self, watched: Collection[int]) -> Population:
            population = await super().population(watched)
            return dataclasses.replace(population, joining=self.joining & frozenset(watched))

    load = SlowJoins()
    shape = Shape("subscribers", rooms=1, per_room=3, publishers=1)
    timing = LevelTiming(rate=1000.0, settle_s=0.0, hold_s=0.2, max_hold_s=0.2, probe_churn_per_s=1.0, confidence=0.95)
    controller = Controller(load, 1, shape, [parse_slo("failed_ratio<1%")], timing)

    async def scenario() -> list[int]:
        await controller._grow_to(3)  # seat 0 publishes; 1 (still joining) and 2 subscribe
        before = set(controller._seats)
        await controller._churn_one()
        load.joining = frozenset({1, 2, 3})
        await controller._churn_one()  # every subscriber joining: nobody goes
        return sorted(before - set(controller._seats))

    assert asyncio.run(scenario()) == [2]  # the longest-lived that has joined, not 1


class JoinsInFlightLoad(FakeLoad):
    """A `FakeLoad` whose participants are still joining (pending) until ``joined_at``, on its clock."""

    def __init__(self, joined_at_s: float) -> None:
        super().__init__()
        self.joined_at_s = joined_at_s
        self.reads_at_s: list[float] = []

    async def population(self, watched: Collection[int]) -> Population:
        population = await super().population(watched)
        joining = (
            frozenset(i for i in watched if i in self.live) if self.elapsed_s() < self.joined_at_s else frozenset()
        )
        return dataclasses.replace(population, pending=len(joining), joining=joining)

    async def read_hold(self) -> HoldData:
        self.reads_at_s.append(self.elapsed_s())
        return await super().read_hold()


def test_a_hold_ends_with_the_churns_joins_in_flight_judged_not_cut() -> None:
    """Churn joins started just before a hold's end were cut by the teardown (not_joined_by_departure): failures
    in the run's report but in no level, and their (slowest) join times missing from the level's SLOs."""
    shape = Shape("subscribers", rooms=1, per_room=2, publishers=0)
    timing = LevelTiming(rate=1000.0, settle_s=0.0, hold_s=0.2, max_hold_s=0.2, probe_churn_per_s=1.0,
                         confidence=0.95, join_timeout_s=5.0)  # fmt: skip
    load = JoinsInFlightLoad(joined_at_s=0.6)
    controller = Controller(load, 1, shape, [parse_slo("ping_rtt.p50<100ms")], timing)

    async def one_level() -> None:
        await controller._grow_to(2)
        await controller._hold()

    asyncio.run(one_level())
    # judged at the planned end, then again once the joins ended (the last read is the closing one)
    assert load.reads_at_s[0] < 0.6 <= load.reads_at_s[1], load.reads_at_s
    # Joins that never end are waited for at most a join timeout (and a second): they fail in the level.
    stuck = JoinsInFlightLoad(joined_at_s=math.inf)
    quick = LevelTiming(rate=1000.0, settle_s=0.0, hold_s=0.2, max_hold_s=0.2, probe_churn_per_s=1.0,
                        confidence=0.95, join_timeout_s=0.2)  # fmt: skip
    controller = Controller(stuck, 1, shape, [parse_slo("ping_rtt.p50<100ms")], quick)

    async def stuck_joins() -> tuple[bool, float]:
        await controller._grow_to(2)
        started = time.perf_counter()
        waited = await controller._joins_in_flight_ended()
        return waited, time.perf_counter() - started

    waited, waited_s = asyncio.run(stuck_joins())
    assert waited and 1.2 <= waited_s < 3.0, waited_s


class _EngineUntilFinished:
    """The engine's side of `_drive`: runs until `finish`, then returns its record."""

    interrupted = None

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.finished = 0

    async def run(self) -> str:
        await self.done.wait()
        return "the engine's record"

    def finish(self) -> None:
        self.finished += 1
        self.done.set()


class _ControllerThatBreaksAfterOneLevel:
    async def run(self, search: Search) -> None:
        planned = search.next_level()
        assert planned is not None
        search.record(planned.participants, "PASS")
        raise RuntimeError("the port broke:\n  a multi-line\tdetail")


def test_a_failing_controller_stops_the_search_not_the_run_and_the_levels_so_far_stand() -> None:
    """A bug in the controller used to propagate out of `_drive` with the engine still running and no report:
    a 30-minute search lost everything it had measured."""
    engine = _EngineUntilFinished()
    search = Search(10, 100, growth=2.0)
    record, error = asyncio.run(
        capacity_run._drive(engine, cast(Controller, _ControllerThatBreaksAfterOneLevel()), search)
    )
    assert record == "the engine's record" and engine.finished == 1
    assert error == "RuntimeError: the port broke: a multi-line detail"
    assert search.done and search.stopped_because == "error"
    assert (search.lower, search.upper) == (10, None) and len(search.history) == 1


class _ControllerThatNeverEnds:
    async def run(self, search: Search) -> None:
        planned = search.next_level()
        assert planned is not None
        search.record(planned.participants, "PASS")
        await asyncio.sleep(3600)


class _EngineThatEndsAtItsTimeBound(_EngineUntilFinished):
    async def run(self) -> str:
        await asyncio.sleep(0.05)
        return "the engine's record"


def test_a_search_whose_run_ends_first_is_stopped_early_and_a_timeout_says_so() -> None:
    """The run's time bound (--timeout) ended the engine before the search: the controller was cancelled with
    no reason recorded, and the summary claimed the search had stopped at --max, with exit 0."""
    search = Search(10, 100, growth=2.0)
    engine = _EngineThatEndsAtItsTimeBound()
    record, error = asyncio.run(capacity_run._drive(engine, cast(Controller, _ControllerThatNeverEnds()), search))
    assert record == "the engine's record"
    assert error == "its time bound (--timeout) ran out before it finished"
    assert search.done and search.stopped_because == "stopped"
    assert (search.lower, search.upper) == (10, None)
    signalled = Search(10, 100, growth=2.0)
    engine = _EngineThatEndsAtItsTimeBound()
    engine.interrupted = {"signal": "SIGINT", "at_s": 1.0}  # type: ignore[assignment]
    _, error = asyncio.run(capacity_run._drive(engine, cast(Controller, _ControllerThatNeverEnds()), signalled))
    assert error is None and signalled.stopped_because == "stopped"  # the signal's own exit code says it


class JoinsNeverDoneLoad(FakeLoad):
    """Every participant told to leave is still joining: it ends failed (`not_joined_by_end`), as the engine
    ends one stopped before its JoinResponse."""

    async def add_departures(self, at_s: float, indices: Sequence[int]) -> None:
        for index in indices:
            if self.live.pop(index, None) is not None:
                self.ended.add(index)
                self.failed += 1


def test_a_fresh_level_is_not_charged_with_the_failures_of_the_population_it_tore_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fresh (bisection) level tears the grown population down first; those who were still joining end
    failed. The level read the failure count before the teardown, so they counted against it while its
    attempted total did not hold them: a level that lost no one of its own failed on failed_ratio."""
    monkeypatch.setattr(capacity, "COOL_DOWN_S", 0.0)
    shape = Shape("subscribers", rooms=2, per_room=4, publishers=0)
    timing = LevelTiming(rate=1000.0, settle_s=0.0, hold_s=0.2, max_hold_s=0.2, probe_churn_per_s=0.0, confidence=0.95)
    controller = Controller(JoinsNeverDoneLoad(), 2, shape, [parse_slo("failed_ratio<1%")], timing)

    async def grown_then_fresh() -> list[Level]:
        controller.search_started_at = time.perf_counter()
        levels = [await controller.measure(Planned(8, "bracket", False))]
        levels.append(await controller.measure(Planned(4, "bisect", True)))
        return levels

    grown, fresh = asyncio.run(grown_then_fresh())
    assert grown["client"]["failed"] == 0 and grown["verdict"] == "PASS"
    assert fresh["client"]["failed"] == 0, fresh["client"]
    assert fresh["verdict"] == "PASS", fresh["reason"]


def test_a_p99_9_slo_is_judged_on_its_phase() -> None:
    """``ping_rtt.p99.9`` was looked up as the phase ``ping_rtt.p99``: never any samples, always INCONCLUSIVE,
    so no level could pass."""
    timing = LevelTiming(rate=1000.0, settle_s=0.0, hold_s=0.2, max_hold_s=0.2, probe_churn_per_s=0.0, confidence=0.95)
    slos = [parse_slo("ping_rtt.p99.9<100ms"), parse_slo("ping_rtt.p99<100ms")]
    controller = Controller(FakeLoad(), 1, Shape("subscribers", rooms=1, per_room=4, publishers=0), slos, timing)
    window = HoldData(subwindows=[{"ping_rtt": [10.0] * 6000}, {"ping_rtt": [10.0] * 6000}])
    results = controller._judge(window)
    assert results["ping_rtt.p99.9"]["verdict"] == "PASS", results["ping_rtt.p99.9"]
    assert results["ping_rtt.p99"]["verdict"] == "PASS"
