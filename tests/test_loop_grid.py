"""The loop grid: participants' timers and the loop-lag tick fire on shared instants of the loop's clock.

What the code controls is asserted exactly: every tick is armed for a whole multiple of the grid's
step. What the machine controls is asserted one-sided only (a tick never runs before its instant, a
stall is seen), because a busy CI runner may run any tick late by any amount.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import uvloop

from lkswarm.metrics import LOOP_CLOCK_RESOLUTION_S, LOOP_GRID_MS, LoopLagMonitor, PhaseMetrics


def test_the_lag_tick_is_armed_on_grid_instants_never_runs_early_and_measures_a_stall() -> None:
    metrics = PhaseMetrics()
    armed_ms: list[float] = []  # the loop-clock instant each tick was armed for, in ms
    ran: list[tuple[float, float]] = []  # (the loop's clock when a tick ran in s, the instant it was armed for in s)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        monitor = LoopLagMonitor(metrics)
        original_tick, original_schedule = monitor._tick, monitor._schedule

        def schedule() -> None:
            original_schedule()
            assert monitor._handle is not None
            armed_ms.append(monitor._handle.when() * 1000)

        def tick() -> None:
            ran.append((loop.time(), armed_ms[-1] / 1000))
            original_tick()

        monitor._schedule = schedule  # type: ignore[method-assign]
        monitor._tick = tick  # type: ignore[method-assign]
        monitor.start()
        await asyncio.sleep(0.32)
        time.sleep(0.2)  # a stall: the tick due inside it runs late, at its end
        await asyncio.sleep(0.12)
        monitor.stop()

    uvloop.run(main())
    assert len(ran) >= 3
    assert metrics.loop_lag.get_total_count() == len(ran)
    # Armed on whole multiples of the step, a step or more apart; or a millisecond after one: uvloop reads
    # its clock twice when it arms a timer (in `call_at`, and again as the timer starts), and a
    # millisecond that ends between the two reads arms it that much late (1 in ~1,000 here).
    assert all(abs(when_ms - round(when_ms)) < 1e-3 and round(when_ms) % LOOP_GRID_MS in (0, 1) for when_ms in armed_ms)
    assert all(round(b) - round(a) >= LOOP_GRID_MS - 1 for a, b in itertools.pairwise(armed_ms))
    # Never run before the instant it was armed for, beyond the loop clock's dropped millisecond.
    assert all(ran_s >= when_s - LOOP_CLOCK_RESOLUTION_S for ran_s, when_s in ran)
    assert metrics.loop_lag.get_max_value() >= 100  # the stall is seen (in ms)
