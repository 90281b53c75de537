"""``--prometheus HOST:PORT``: live counters and histograms in the Prometheus text format.

A minimal HTTP/1.1 responder (no dependency): every request gets ``/metrics``.
One generator process serves on the run's own loop: gauges come from the
sampler's latest snapshot, counters and the latency histograms from the engine
at scrape time, so a scrape costs nothing between scrapes.

With ``run --workers N`` the parent serves the one endpoint, on a loop of its
own in a thread, for the whole run. Each worker adds an `Exposition` to the
once-a-second sample it already sends the parent; the parent adds them up at
scrape time. Counters, gauges, bucket counts, totals and sums all add exactly
(the loop-lag p99 takes the worst process's), so the merged histograms are the
run's, not an estimate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lkswarm.engine.timeline import RunInfo, Snapshot, combine_snapshots
from lkswarm.errors import ConfigError
from lkswarm.metrics import BUCKET_BOUNDS_MS, PHASES, PhaseMetrics

# Bucket bounds (seconds) of the latency histograms, counted by `PhaseMetrics` as values are recorded.
BUCKETS_S = tuple(bound_ms / 1000 for bound_ms in BUCKET_BOUNDS_MS)
MAX_REQUEST_BYTES = 16 * 1024
REQUEST_TIMEOUT_S = 5.0


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT`` for 127.0.0.1) → (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--prometheus wants HOST:PORT (e.g. 127.0.0.1:9464), not {text!r}")
    return host or "127.0.0.1", int(port)


def check_bindable(text: str) -> None:
    """Refuses (a usage error, before the run) an address this process cannot serve ``/metrics`` on."""
    host, port = parse_address(text)
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"--prometheus {text}: cannot listen there ({exc.strerror or exc})") from None


@dataclass(slots=True)
class PhaseBuckets:
    """One phase's histogram as Prometheus shows it: cumulative counts per `BUCKETS_S` bound."""

    cumulative: list[int] = field(default_factory=lambda: [0] * len(BUCKETS_S))
    total: int = 0
    sum_s: float = 0.0


def phase_buckets(metrics: PhaseMetrics, phase: str) -> PhaseBuckets:
    """One phase's bucket counts so far (16 counters: no walk of the histogram; the media thread's data latency
    read from it)."""
    counts, sum_ms = metrics.bucket_counts_now(phase)
    return PhaseBuckets(list(itertools.accumulate(counts[:-1])), sum(counts), sum_ms / 1000)


@dataclass(slots=True)
class Exposition:
    """What one scrape shows, for one generator process or the sum of several."""

    snapshot: Snapshot
    outcomes: dict[str, int] = field(default_factory=dict)
    phases: dict[str, PhaseBuckets] = field(default_factory=dict)
    processes: int = 1


def exposition_of(info: RunInfo, snapshot: Snapshot) -> Exposition:
    """The run's counters and histograms now, with the sampler's gauges from ``snapshot``."""
    planned, started, joined, alive, outcomes = info.live_counts()
    live = dataclasses.replace(snapshot, planned=planned, started=started, joined=joined, alive=alive)
    phases = {phase: phase_buckets(info.metrics, phase) for phase in PHASES}
    return Exposition(live, outcomes, phases)


def combine_expositions(parts: Sequence[Exposition]) -> Exposition:
    """The sum of several processes' expositions (``run --workers``)."""
    out = Exposition(combine_snapshots([part.snapshot for part in parts]), processes=len(parts))
    for part in parts:
        for outcome, count in part.outcomes.items():
            out.outcomes[outcome] = out.outcomes.get(outcome, 0) + count
        for phase, buckets in part.phases.items():
            into = out.phases.setdefault(phase, PhaseBuckets())
            into.cumulative = [a + b for a, b in zip(into.cumulative, buckets.cumulative, strict=True)]
            into.total += buckets.total
            into.sum_s += buckets.sum_s
    return out


def exposition_to_dict(exposition: Exposition) -> dict[str, Any]:
    """The parts a worker adds to its sample line (the snapshot is the line itself)."""
    return {
        "outcomes": exposition.outcomes,
        "phases": {phase: [b.cumulative, b.total, b.sum_s] for phase, b in exposition.phases.items()},
    }


def exposition_from_dict(snapshot: Snapshot, data: dict[str, Any]) -> Exposition:
    """A worker's exposition from its sample line (raises ValueError/TypeError on a malformed one)."""
    phases: dict[str, PhaseBuckets] = {}
    for phase, (cumulative, total, sum_s) in data["phases"].items():
        if len(cumulative) != len(BUCKETS_S):
            raise ValueError(f"phase {phase!r} has {len(cumulative)} buckets, not {len(BUCKETS_S)}")
        phases[str(phase)] = PhaseBuckets([int(c) for c in cumulative], int(total), float(sum_s))
    outcomes = {str(outcome): int(count) for outcome, count in data["outcomes"].items()}
    return Exposition(snapshot, outcomes, phases)


def _sample_value(value: float) -> str:
    """A sample as the text format takes it, exactly: 12345678 packets, not ``{:g}``'s 1.23457e+07."""
    if isinstance(value, bool):
        return str(int(value))
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    if isinstance(value, int) or (number.is_integer() and abs(number) < 2**53):
        return str(int(value))
    # 15 significant digits drop the binary noise of a product (98262056.96000001 bytes, 0.0008349999999999999 s);
    # repr then gives the shortest form that reads back as that value.
    return repr(float(f"{number:.15g}"))


def _histogram_lines(name: str, phase: str, buckets: PhaseBuckets) -> list[str]:
    lines = [
        f'{name}_bucket{{phase="{phase}",le="{bound}"}} {count}'
        for bound, count in zip(BUCKETS_S, buckets.cumulative, strict=True)
    ]
    lines.append(f'{name}_bucket{{phase="{phase}",le="+Inf"}} {buckets.total}')
    lines.append(f'{name}_sum{{phase="{phase}"}} {buckets.sum_s:.6f}')
    lines.append(f'{name}_count{{phase="{phase}"}} {buckets.total}')
    return lines


# name -> (help text, [(labels, value)]): gauges a command adds to its scrape (``capacity``: the level, the verdicts)
ExtraGauges = dict[str, tuple[str, list[tuple[str, float]]]]


def render_metrics(exposition: Exposition, extra: ExtraGauges | None = None) -> str:
    """The exposition text for one scrape."""
    out: list[str] = []
    snap = exposition.snapshot

    def metric(name: str, kind: str, help_text: str, samples: Sequence[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(f"{name}{labels} {_sample_value(value)}" for labels, value in samples)

    metric("lkswarm_participants_planned", "gauge", "Participants in the run's plan.", [("", snap.planned)])
    metric("lkswarm_participants_started_total", "counter", "Participants started.", [("", snap.started)])
    metric("lkswarm_participants_joined_total", "counter", "JoinResponses received.", [("", snap.joined)])
    metric("lkswarm_participants_alive", "gauge", "Participants started and not ended.", [("", snap.alive)])
    metric("lkswarm_participants_active", "gauge", "Participants ACTIVE (PeerConnection up).", [("", snap.active)])
    # `completed` from the start, at 0: a series that appears only when the first participant ends makes
    # rate() and absent() alerts read nothing until then.
    ended = {"completed": 0, **exposition.outcomes}
    outcomes = [(f'{{outcome="{k}"}}', v) for k, v in sorted(ended.items())]
    metric("lkswarm_outcomes_total", "counter", "Participants ended, by outcome.", outcomes)
    metric(
        "lkswarm_media_packets_received_total", "counter", "RTP packets received.", [("", snap.media_packets_received)]
    )
    # A gauge, not a counter: the running loss (expected - received) falls when a late or retransmitted packet
    # fills a gap, and a counter that falls reads as a reset to rate() and increase().
    metric(
        "lkswarm_media_packets_lost",
        "gauge",
        "RTP packets lost so far (expected - received; falls when a late or repaired packet fills a gap).",
        [("", snap.media_packets_lost)],
    )
    metric("lkswarm_data_messages_sent_total", "counter", "Data messages written.", [("", snap.data_sent)])
    metric(
        "lkswarm_data_messages_received_total",
        "counter",
        "Data messages received (every sender's).",
        [("", snap.data_received)],
    )
    metric(
        "lkswarm_data_track_frames_sent_total", "counter", "Data-track frames written.", [("", snap.data_track_sent)]
    )
    metric(
        "lkswarm_data_track_packets_received_total",
        "counter",
        "Data-track packets received (every publisher's).",
        [("", snap.data_track_received)],
    )
    processes = [("", exposition.processes)]
    metric("lkswarm_generator_processes", "gauge", "Generator processes reporting (run --workers).", processes)
    metric("lkswarm_generator_cpu_percent", "gauge", "Generator CPU over the last interval.", [("", snap.cpu_percent)])
    rss_bytes = round(snap.rss_mb * 1024 * 1024)
    metric("lkswarm_generator_rss_bytes", "gauge", "Generator resident memory.", [("", rss_bytes)])
    metric(
        "lkswarm_loop_lag_p99_seconds",
        "gauge",
        "Event-loop lag p99 over the last interval (the worst process's).",
        [("", snap.loop_lag_p99_ms / 1000)],
    )
    name = "lkswarm_phase_latency_seconds"
    out.append(f"# HELP {name} Latency per phase (from the intended start where it applies).")
    out.append(f"# TYPE {name} histogram")
    for phase in PHASES:
        out.extend(_histogram_lines(name, phase, exposition.phases.get(phase) or PhaseBuckets()))
    for gauge, (help_text, samples) in sorted((extra or {}).items()):
        metric(gauge, "gauge", help_text, samples)
    return "\n".join(out) + "\n"


class MetricsServer:
    """Serves ``render()`` to every HTTP request, on the running loop."""

    def __init__(self, address: str, render: Callable[[], str]) -> None:
        self.host, self.port = parse_address(address)
        self.render = render
        self.scrapes = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_REQUEST_BYTES)
        except OSError as exc:
            raise ConfigError(f"--prometheus: cannot listen on {self.host}:{self.port}: {exc.strerror}") from None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
            body = self.render().encode()
            self.scrapes += 1
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a client that hangs up or never finishes its request gets nothing
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


class PrometheusExporter:
    """An `Observer` serving one generator process's ``/metrics`` while the run lasts."""

    def __init__(self, address: str) -> None:
        self.server = MetricsServer(address, self._render)
        self.info: RunInfo | None = None
        self.latest = Snapshot()
        self.gauges: ExtraGauges = {}  # set by the command that owns the exporter, rendered with each scrape

    async def start(self, info: RunInfo) -> None:
        self.info = info
        await self.server.start()

    def on_sample(self, snapshot: Snapshot) -> None:
        self.latest = snapshot

    def _render(self) -> str:
        assert self.info is not None
        return render_metrics(exposition_of(self.info, self.latest), self.gauges)

    async def stop(self) -> None:
        await self.server.stop()


class BackgroundMetricsServer:
    """A `MetricsServer` on a loop of its own in a daemon thread, for a parent that runs no loop
    (``run --workers``). ``start`` binds in the caller's thread, so a taken port fails the run at once."""

    def __init__(self, address: str, render: Callable[[], str]) -> None:
        self.server = MetricsServer(address, render)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lkswarm-prometheus", daemon=True)

    def start(self) -> None:
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException:
            self._loop.close()
            raise
        self._thread.start()

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._loop.run_until_complete(self.server.stop())
        self._loop.close()
