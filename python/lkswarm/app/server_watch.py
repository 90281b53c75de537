"""What the server did during a run, read around it: its Prometheus counters and, when it is our child, its CPU.

One `ServerWatch` spans the engine's run: `start` just before it, `stop` just after. ``lkswarm run``,
``run --workers`` and ``run --ray`` (whose parent owns the embedded server and the one scrape, not each worker
or actor) use it alike, so their reports carry the same ``server`` and ``machine`` sections.
"""

from __future__ import annotations

import time
from typing import Any

from lkswarm.app.server import LocalServer
from lkswarm.config import RunConfig
from lkswarm.metrics import process_cpu_s
from lkswarm.observe.server_metrics import Scrape, scrape, server_section
from lkswarm.report.build import EmbeddedServerUse, machine_figures
from lkswarm.report.thresholds import Threshold, evaluate

NO_METRICS = "no --server-metrics URL"


def server_cpu_s(local: LocalServer | None) -> float | None:
    """The embedded server's CPU seconds so far (None without one, or when /proc cannot say)."""
    return process_cpu_s(local.pid) if local is not None and local.pid is not None else None


class ServerWatch:
    """The server's counters and CPU at the start and the end of a run."""

    def __init__(self, config: RunConfig, local: LocalServer | None) -> None:
        self.local = local
        self.metrics_url = config.server_metrics or (local.metrics_url if local is not None else None)
        self._before: Scrape | str = NO_METRICS
        self._after: Scrape | str = NO_METRICS
        self._cpu_before_s: float | None = None
        self._started = 0.0
        self.wall_s = 0.0
        self.use: EmbeddedServerUse | None = None  # set by `stop` when the server is our child

    def start(self) -> None:
        self._before = scrape(self.metrics_url) if self.metrics_url else NO_METRICS
        self._cpu_before_s = server_cpu_s(self.local)
        self._started = time.perf_counter()

    def stop(self) -> None:
        self.wall_s = time.perf_counter() - self._started
        if self._cpu_before_s is not None and (cpu_s := server_cpu_s(self.local)) is not None:
            self.use = EmbeddedServerUse(cpu_s - self._cpu_before_s, self.wall_s)
        self._after = scrape(self.metrics_url) if self.metrics_url else self._before

    def section(self) -> dict[str, Any]:
        """The report's ``server`` section (``available: false`` and why, without metrics)."""
        return server_section(self._before, self._after, self.wall_s)


def add_server_sections(report: dict[str, Any], watch: ServerWatch, thresholds: list[Threshold] | None) -> None:
    """Gives a merged report (``--workers``, ``--ray``) the sections one process's report has, which its shares
    cannot: the server's counters over the run and the machine's figures (generator over server CPU). The
    thresholds are judged again, as a threshold may read them (``server.loss_out_ratio<1%``)."""
    report["server"] = watch.section()
    generator_cpu_s = (report.get("generator") or {}).get("cpu_s", 0.0)  # none: every share hung
    report["machine"] = machine_figures(generator_cpu_s, watch.use)
    evaluate(report, thresholds or [])
