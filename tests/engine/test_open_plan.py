"""An open-plan engine (``lkswarm capacity``'s): arrivals and departures added while it runs, ended on `finish`.

Participants here join without a server: `ParticipantDriver.run` is replaced by one that "joins" at once
and waits for its outcome, so the engine's scheduling and bookkeeping are tested socket-free.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from fakes import fake_run
from lkswarm.config import RunConfig
from lkswarm.engine.engine import Engine
from lkswarm.engine.outcome import COMPLETED
from lkswarm.engine.participant import ParticipantDriver
from lkswarm.engine.plan import Arrival
from lkswarm.errors import LkswarmError


async def _join_without_a_server(self: ParticipantDriver) -> None:
    loop = asyncio.get_running_loop()
    self._done = loop.create_future()
    self.joined_at = time.perf_counter()
    await self._done


def _engine(open_plan: bool = True) -> Engine:
    config = RunConfig(url="ws://127.0.0.1:7880", rooms=2, participants=5, signal_only=True, duration_s=30)
    return Engine(fake_run(config), open_plan=open_plan)


@pytest.fixture(autouse=True)
def _no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ParticipantDriver, "run", _join_without_a_server)


def test_an_open_plan_starts_what_is_added_while_it_runs_and_ends_on_finish() -> None:
    async def main() -> tuple[Engine, float, list[int], list[int]]:
        engine = _engine()
        task = asyncio.get_running_loop().create_task(engine.run())
        await engine.started.wait()
        assert engine.plan == [] and not engine.drivers  # nothing planned: the run waits, it does not end
        await asyncio.sleep(0.2)
        assert not task.done()
        now_s = engine.elapsed_s()
        engine.add_arrivals([Arrival(i, now_s + 0.05 * i, i % 2, i // 2) for i in range(4)])
        await asyncio.sleep(0.4)
        started = sorted(d.index for d in engine.drivers)
        engine.add_departure(engine.elapsed_s(), 0)
        await asyncio.sleep(0.2)
        live = sorted(d.index for d in engine.live_drivers())
        engine.finish()
        await task
        return engine, now_s, started, live

    engine, _, started, live = asyncio.run(main())
    assert started == [0, 1, 2, 3]
    assert live == [1, 2, 3]
    assert engine.departed == 1
    assert engine.interrupted is None  # finish is an end, not an interruption
    assert engine.tally.outcomes[COMPLETED] == 4  # the leaver and the three alive at the end


def test_a_departure_added_later_but_due_sooner_is_not_held_up_by_an_earlier_planned_one() -> None:
    async def main() -> tuple[float, list[int]]:
        engine = _engine()
        task = asyncio.get_running_loop().create_task(engine.run())
        await engine.started.wait()
        now_s = engine.elapsed_s()
        engine.add_arrivals([Arrival(0, now_s, 0, 0, leave_s=now_s + 20), Arrival(1, now_s, 1, 0)])
        await asyncio.sleep(0.2)
        asked = time.perf_counter()
        engine.add_departure(engine.elapsed_s(), 1)
        while engine.driver_of(1) is not None and not engine.driver_of(1).outcome:  # type: ignore[union-attr]
            await asyncio.sleep(0.01)
        waited_s = time.perf_counter() - asked
        live = [d.index for d in engine.live_drivers()]
        engine.finish()
        await task
        return waited_s, live

    waited_s, live = asyncio.run(main())
    assert waited_s < 5.0, "held up by the departure planned for 20 s"  # a loaded machine may take a second
    assert live == [0]


def test_a_departure_due_before_its_participant_starts_keeps_it_from_starting() -> None:
    async def main() -> Engine:
        engine = _engine()
        task = asyncio.get_running_loop().create_task(engine.run())
        await engine.started.wait()
        now_s = engine.elapsed_s()
        # Participant 1 arrives in 0.5 s but is torn down now: it must not start (and then linger) later.
        engine.add_arrivals([Arrival(0, now_s, 0, 0), Arrival(1, now_s + 0.5, 1, 0)])
        engine.add_departure(now_s, 1)
        await asyncio.sleep(0.8)
        engine.finish()
        await task
        return engine

    engine = asyncio.run(main())
    assert [d.index for d in engine.drivers] == [0]
    assert engine.counters["departed_before_start"] == 1 and engine.departed == 0
    assert engine.tally.outcomes[COMPLETED] == 1


def test_a_departure_of_a_participant_still_joining_fails_it_and_is_not_counted_departed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`departed` counts the planned departures that completed (README); it counted failed joins too."""

    async def join_only_the_first(self: ParticipantDriver) -> None:
        self._done = asyncio.get_running_loop().create_future()
        if self.index == 0:
            self.joined_at = time.perf_counter()
        await self._done

    monkeypatch.setattr(ParticipantDriver, "run", join_only_the_first)

    async def main() -> Engine:
        engine = _engine()
        task = asyncio.get_running_loop().create_task(engine.run())
        await engine.started.wait()
        now_s = engine.elapsed_s()
        engine.add_arrivals([Arrival(0, now_s, 0, 0), Arrival(1, now_s, 1, 0)])
        await asyncio.sleep(0.2)
        engine.add_departure(engine.elapsed_s(), 0)
        engine.add_departure(engine.elapsed_s(), 1)
        await asyncio.sleep(0.2)
        engine.finish()
        await task
        return engine

    engine = asyncio.run(main())
    assert engine.departed == 1
    assert engine.tally.outcomes[COMPLETED] == 1
    [joining] = [d for d in engine.drivers if d.index == 1]
    assert joining.outcome is not None and joining.outcome.reason == "not_joined_by_departure"


def test_arrivals_cannot_go_back_in_time_or_go_to_a_fixed_plan() -> None:
    engine = _engine()
    engine.add_arrivals([Arrival(0, 5.0, 0, 0)])
    with pytest.raises(LkswarmError, match="precedes"):
        engine.add_arrivals([Arrival(1, 4.0, 0, 1)])
    with pytest.raises(LkswarmError, match="open_plan"):
        _engine(open_plan=False).add_arrivals([Arrival(0, 0.0, 0, 0)])
