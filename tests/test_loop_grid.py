"""The loop grid: participants' timers and the loop-lag tick fire on shared instants of the loop's clock."""

from __future__ import annotations

import asyncio
import time

import uvloop

from lkswarm.metrics import LOOP_CLOCK_RESOLUTION_S, LOOP_GRID_MS, LoopLagMonitor, PhaseMetrics


def test_the_lag_tick_runs_on_grid_instants_never_early_and_measures_a_stall() -> None:
    metrics = PhaseMetrics()
    ticks: list[tuple[float, float]] = []  # (the loop's clock at the tick in ms, its unclamped lateness in s)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        monitor = LoopLagMonitor(metrics)
        original_tick = monitor._tick

        def tick() -> None:
            ticks.append((loop.time() * 1000, time.perf_counter() - monitor._expected))
            original_tick()

        monitor._tick = tick  # type: ignore[method-assign]
        monitor.start()
        await asyncio.sleep(0.32)
        time.sleep(0.2)  # a stall: the tick due inside it runs late, at its end
        await asyncio.sleep(0.12)
        monitor.stop()

    uvloop.run(main())
    assert len(ticks) >= 5
    assert metrics.loop_lag.get_total_count() == len(ticks)
    # Never before its instant, beyond the loop clock's dropped millisecond.
    assert min(lateness_s for _, lateness_s in ticks) >= -LOOP_CLOCK_RESOLUTION_S - 1e-4
    # All but the stalled one (and one more, for a busy machine) run within 10 ms after a grid instant.
    on_time = [t_ms for t_ms, lateness_s in ticks if lateness_s < 0.010]
    assert len(on_time) >= len(ticks) - 2
    assert all(t_ms % LOOP_GRID_MS <= 10 for t_ms in on_time)
    assert metrics.loop_lag.get_max_value() >= 100  # the stall is seen (in ms)
