"""Once-a-second samples of a running engine: the report's ``timeline``, the live view and Prometheus.

Theory of operation
-------------------
`Sampler` wakes every ``interval_s`` on the loop and takes a `Snapshot`: the
participant counts, the join latencies completed in the interval, the media
tier's packet rate and loss over the interval (from the hub's running totals,
which never go backwards), this process's CPU share and the loop lag. Each
snapshot is appended to the timeline and handed to every observer (the live
view, the Prometheus exporter). Sampling costs one pass over the drivers per
interval, so it stays well under a millisecond at thousands of participants.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import resource
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, Protocol

from lkswarm.engine.outcome import Outcome, OutcomeKind
from lkswarm.engine.ports import MediaTier
from lkswarm.metrics import PHASES, PhaseMetrics, current_rss_mb, percentile

ROLLING_WINDOW_S = 10.0
TIMELINE_FIELDS = (
    "t_s",
    "started",
    "joined",
    "active",
    "failed",
    "alive",
    "join_count",
    "join_p50_ms",
    "join_p99_ms",
    "media_packets_per_s",
    "media_loss_ratio",
    "data_sent_per_s",
    "data_received_per_s",
    "data_track_sent_per_s",
    "data_track_received_per_s",
    "cpu_percent",
    "loop_lag_p99_ms",
    "rss_mb",
)


@dataclass(slots=True)
class Snapshot:
    """The state of the run at one sample."""

    t_s: float = 0.0  # seconds since the run's start
    planned: int = 0
    started: int = 0
    joined: int = 0
    active: int = 0  # ACTIVE (subscriber PeerConnection connected) and still alive
    failed: int = 0
    completed: int = 0
    left: int = 0
    alive: int = 0
    join_count: int = 0
    join_p50_ms: float = 0.0
    join_p99_ms: float = 0.0
    media_packets_per_s: float = 0.0
    media_loss_ratio: float = 0.0
    media_packets_received: int = 0
    media_packets_lost: int = 0
    data_sent_per_s: float = 0.0
    data_received_per_s: float = 0.0
    data_sent: int = 0
    data_received: int = 0
    data_track_sent_per_s: float = 0.0
    data_track_received_per_s: float = 0.0
    data_track_sent: int = 0
    data_track_received: int = 0
    cpu_percent: float = 0.0
    loop_lag_p99_ms: float = 0.0
    rss_mb: float = 0.0
    # phase -> (count, p50, p99) over the last ROLLING_WINDOW_S; filled by the live view, which alone shows it
    rolling_ms: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    invalid_reason: str = ""


def combine_snapshots(snapshots: list[Snapshot]) -> Snapshot:
    """One snapshot of several generator processes' latest ones (``run --workers``), for the live view.

    Counts, rates, CPU and memory add. Per-interval and rolling percentiles cannot be merged from
    summaries: p99s take the worst process's (an upper bound), p50s the count-weighted mean (an
    estimate); the end-of-run report merges the histograms exactly.
    """
    out = Snapshot()
    if not snapshots:
        return out
    for name in (*_SUMMED_INTS, *_SUMMED_FLOATS):
        setattr(out, name, sum(getattr(s, name) for s in snapshots))
    out.t_s = max(s.t_s for s in snapshots)
    out.join_p99_ms = max(s.join_p99_ms for s in snapshots)
    out.loop_lag_p99_ms = max(s.loop_lag_p99_ms for s in snapshots)
    out.media_loss_ratio = max(s.media_loss_ratio for s in snapshots)
    out.join_p50_ms = _weighted((s.join_count, s.join_p50_ms) for s in snapshots)
    for phase in dict.fromkeys(p for s in snapshots for p in s.rolling_ms):
        parts = [s.rolling_ms[phase] for s in snapshots if phase in s.rolling_ms]
        count = sum(c for c, _, _ in parts)
        out.rolling_ms[phase] = (count, _weighted((c, p50) for c, p50, _ in parts), max(p99 for _, _, p99 in parts))
    for snap in snapshots:
        for reason, count in snap.failures.items():
            out.failures[reason] = out.failures.get(reason, 0) + count
    out.invalid_reason = next((s.invalid_reason for s in snapshots if s.invalid_reason), "")
    return out


_SUMMED_INTS = (
    "planned",
    "started",
    "joined",
    "active",
    "failed",
    "completed",
    "left",
    "alive",
    "join_count",
    "media_packets_received",
    "media_packets_lost",
    "data_sent",
    "data_received",
    "data_track_sent",
    "data_track_received",
)
_SUMMED_FLOATS = (
    "media_packets_per_s",
    "data_sent_per_s",
    "data_received_per_s",
    "data_track_sent_per_s",
    "data_track_received_per_s",
    "cpu_percent",
    "rss_mb",
)


def _weighted(pairs: Iterable[tuple[int, float]]) -> float:
    items = list(pairs)
    total = sum(count for count, _ in items)
    return round(sum(count * value for count, value in items) / total, 3) if total else 0.0


def snapshot_from_dict(data: dict[str, Any]) -> Snapshot:
    """A snapshot sent by a worker as JSON (unknown keys ignored, tuples restored)."""
    known = {f.name for f in dataclasses.fields(Snapshot)}
    snap = Snapshot(**{k: v for k, v in data.items() if k in known})
    snap.rolling_ms = {phase: (int(c), float(p50), float(p99)) for phase, (c, p50, p99) in snap.rolling_ms.items()}
    return snap


def rolling_ms(metrics: PhaseMetrics, now: float) -> dict[str, tuple[int, float, float]]:
    """(count, p50, p99) per phase over the last ROLLING_WINDOW_S (sorting them is why only the live view asks)."""
    out: dict[str, tuple[int, float, float]] = {}
    for phase in PHASES:
        values = sorted(metrics.recent_values(phase, now - ROLLING_WINDOW_S))
        if values:
            out[phase] = (len(values), percentile(values, 50), percentile(values, 99))
    return out


class RunInfo(NamedTuple):
    """What an observer may read of the run besides its samples."""

    duration_s: float
    metrics: PhaseMetrics  # for rolling percentiles and histogram buckets
    # (planned, started, joined, alive, outcome counts keyed as the report names them) at the moment of the call
    live_counts: Callable[[], tuple[int, int, int, int, dict[str, int]]]


class Observer(Protocol):
    """Something that follows the run's samples (the live view, the Prometheus exporter)."""

    async def start(self, info: RunInfo) -> None: ...
    def on_sample(self, snapshot: Snapshot) -> None: ...
    async def stop(self) -> None: ...


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class SampleSource(Protocol):
    """What the sampler reads of a running engine."""

    def counts(self) -> tuple[int, int, int, int, int]:
        """(planned, started, joined, alive, active) right now."""

    def outcomes(self) -> collections.Counter[Outcome]: ...
    def tiers(self) -> Sequence[MediaTier]: ...


class Sampler:
    """Takes a `Snapshot` every ``interval_s`` and keeps the timeline."""

    def __init__(
        self,
        source: SampleSource,
        observers: list[Observer],
        interval_s: float = 1.0,
        metrics: PhaseMetrics | None = None,
    ) -> None:
        self.source = source
        self.metrics = metrics if metrics is not None else PhaseMetrics()
        self.observers = observers
        self.interval_s = interval_s
        self.samples: list[Snapshot] = []
        self.latest = Snapshot()
        self._t0 = 0.0
        self._last_at = 0.0
        self._last_cpu_s = 0.0
        self._last_media = (0, 0, 0)  # packets received, expected, lost
        self._last_data = (0, 0, 0, 0)  # data messages sent, received; data-track frames sent, received
        self._task: asyncio.Task[None] | None = None

    def start(self, t0: float) -> None:
        self._t0 = t0
        self._last_at = time.perf_counter()
        self._last_cpu_s = _cpu_s()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.sample()

    def sample(self) -> Snapshot:
        metrics = self.metrics
        now = time.perf_counter()
        elapsed_s = max(1e-6, now - self._last_at)
        cpu_s = _cpu_s()
        planned, started, joined, alive, active = self.source.counts()
        snap = Snapshot(t_s=round(now - self._t0, 3), planned=planned, started=started)
        snap.joined, snap.alive, snap.active = joined, alive, active
        for outcome, count in self.source.outcomes().items():
            if outcome.kind is OutcomeKind.FAILED:
                snap.failed += count
                snap.failures[outcome.reason] = count
            elif outcome.kind is OutcomeKind.LEFT:
                snap.left += count
            else:
                snap.completed += count
        joins = sorted(metrics.recent_values("join_response", self._last_at))
        snap.join_count = len(joins)
        snap.join_p50_ms = round(percentile(joins, 50), 3)
        snap.join_p99_ms = round(percentile(joins, 99), 3)
        self._media(snap, elapsed_s)
        snap.cpu_percent = round((cpu_s - self._last_cpu_s) / elapsed_s * 100, 1)
        lags = sorted(metrics.recent_values("loop_lag", self._last_at))
        snap.loop_lag_p99_ms = round(percentile(lags, 99), 3)
        snap.rss_mb = current_rss_mb()
        metrics.forget_recent(now - ROLLING_WINDOW_S)
        snap.invalid_reason = metrics.saturation() or next(
            (reason for tier in self.source.tiers() if (reason := tier.saturation())), ""
        )
        self._last_at, self._last_cpu_s = now, cpu_s
        self.samples.append(snap)
        self.latest = snap
        for observer in self.observers:
            observer.on_sample(snap)
        return snap

    def _media(self, snap: Snapshot, elapsed_s: float) -> None:
        counts = [c for tier in self.source.tiers() if (c := tier.running_counts()) is not None]
        if not counts:
            return
        received = sum(c.packets_received for c in counts)
        expected = sum(c.packets_expected for c in counts)
        lost = sum(c.packets_lost for c in counts)
        last_received, last_expected, last_lost = self._last_media
        snap.media_packets_received, snap.media_packets_lost = received, lost
        snap.media_packets_per_s = round(max(0, received - last_received) / elapsed_s, 1)
        delta_expected = expected - last_expected
        snap.media_loss_ratio = round(max(0, lost - last_lost) / delta_expected, 6) if delta_expected > 0 else 0.0
        self._last_media = (received, expected, lost)
        sent, got = sum(c.data_sent for c in counts), sum(c.data_received for c in counts)
        track_sent, track_got = sum(c.data_track_sent for c in counts), sum(c.data_track_received for c in counts)
        last_sent, last_got, last_track_sent, last_track_got = self._last_data
        snap.data_sent, snap.data_received = sent, got
        snap.data_sent_per_s = round(max(0, sent - last_sent) / elapsed_s, 1)
        snap.data_received_per_s = round(max(0, got - last_got) / elapsed_s, 1)
        snap.data_track_sent, snap.data_track_received = track_sent, track_got
        snap.data_track_sent_per_s = round(max(0, track_sent - last_track_sent) / elapsed_s, 1)
        snap.data_track_received_per_s = round(max(0, track_got - last_track_got) / elapsed_s, 1)
        self._last_data = (sent, got, track_sent, track_got)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def report(self) -> dict[str, Any]:
        """The report's ``timeline``: parallel arrays, one entry per sample. An interval without joins has no join
        latency, and one without media packets no loss ratio: null there, not a 0 that reads as measured."""
        out: dict[str, Any] = {"interval_s": self.interval_s}
        rows = [asdict(s) for s in self.samples]
        for row in rows:
            if not row["join_count"]:
                row["join_p50_ms"] = row["join_p99_ms"] = None
            if not row["media_packets_per_s"]:
                row["media_loss_ratio"] = None
        for name in TIMELINE_FIELDS:
            out[name] = [row[name] for row in rows]
        return out
