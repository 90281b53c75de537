"""The loop grid: participants' timers and the loop-lag tick fire on shared instants of the loop's clock."""

from __future__ import annotations

import asyncio
import time

import uvloop

from lkswarm.metrics import LOOP_GRID_MS, LoopLagMonitor, PhaseMetrics


def test_the_lag_tick_fires_on_grid_instants_and_measures_a_stall() -> None:
    metrics = PhaseMetrics()
    tick_times_ms: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        monitor = LoopLagMonitor(metrics)
        original_tick = monitor._tick

        def tick() -> None:
            tick_times_ms.append(loop.time() * 1000)
            original_tick()

        monitor._tick = tick  # type: ignore[method-assign]
        monitor.start()
        await asyncio.sleep(0.32)
        time.sleep(0.12)  # a stall: the tick due inside it runs ~up to 120 ms late
        await asyncio.sleep(0.12)
        monitor.stop()

    uvloop.run(main())
    assert 6 <= len(tick_times_ms) <= 10
    # uvloop's clock is whole milliseconds: a tick runs on a grid instant or a few ms after it (a busy machine: 10) (the
    # stalled one excepted), never before.
    offsets_ms = sorted(t % LOOP_GRID_MS for t in tick_times_ms)
    assert sum(1 for o in offsets_ms if o <= 10) >= len(offsets_ms) - 2
    assert metrics.loop_lag.get_total_count() == len(tick_times_ms)
    assert metrics.loop_lag.get_max_value() >= 50  # the stall is seen
