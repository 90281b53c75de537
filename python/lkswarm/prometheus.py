"""``--prometheus HOST:PORT``: live counters and histograms in the Prometheus text format.

A minimal HTTP/1.1 responder on the run's own loop (no extra thread or
dependency): every request gets ``/metrics``. Gauges and counters come from
the sampler's latest snapshot; the latency histograms are built at scrape time
from the run's HdrHistograms, so a scrape costs nothing between scrapes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lkswarm.errors import ConfigError
from lkswarm.metrics import PHASES
from lkswarm.timeline import Snapshot

if TYPE_CHECKING:
    from hdrh.histogram import HdrHistogram

    from lkswarm.engine import Engine

# Bucket bounds (seconds) of the latency histograms.
BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
MAX_REQUEST_BYTES = 16 * 1024


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT`` for 127.0.0.1) → (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--prometheus wants HOST:PORT (e.g. 127.0.0.1:9464), not {text!r}")
    return host or "127.0.0.1", int(port)


def _histogram_lines(name: str, phase: str, histogram: HdrHistogram) -> list[str]:
    counts = [0] * len(BUCKETS_S)
    total_us = 0
    for item in histogram.get_recorded_iterator():
        value_us, count = item.value_iterated_to, item.count_at_value_iterated_to
        total_us += value_us * count
        for i, bound_s in enumerate(BUCKETS_S):
            if value_us <= bound_s * 1_000_000:
                counts[i] += count
    total = histogram.get_total_count()
    lines = [
        f'{name}_bucket{{phase="{phase}",le="{bound}"}} {count}' for bound, count in zip(BUCKETS_S, counts, strict=True)
    ]
    lines.append(f'{name}_bucket{{phase="{phase}",le="+Inf"}} {total}')
    lines.append(f'{name}_sum{{phase="{phase}"}} {total_us / 1_000_000:.6f}')
    lines.append(f'{name}_count{{phase="{phase}"}} {total}')
    return lines


def render_metrics(engine: Engine, snap: Snapshot) -> str:
    """The exposition text for one scrape."""
    out: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: Sequence[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(f"{name}{labels} {value:g}" for labels, value in samples)

    metric("lkswarm_participants_planned", "gauge", "Participants in the run's plan.", [("", snap.planned)])
    metric("lkswarm_participants_started_total", "counter", "Participants started.", [("", len(engine.drivers))])
    metric("lkswarm_participants_joined_total", "counter", "JoinResponses received.", [("", engine.joined)])
    metric("lkswarm_participants_alive", "gauge", "Participants started and not ended.", [("", engine.alive)])
    metric("lkswarm_participants_active", "gauge", "Participants ACTIVE (PeerConnection up).", [("", snap.active)])
    outcomes = [(f'{{outcome="{k}"}}', v) for k, v in sorted(engine.outcomes.items())]
    metric("lkswarm_outcomes_total", "counter", "Participants ended, by outcome.", outcomes)
    metric(
        "lkswarm_media_packets_received_total", "counter", "RTP packets received.", [("", snap.media_packets_received)]
    )
    metric("lkswarm_media_packets_lost_total", "counter", "RTP packets lost.", [("", snap.media_packets_lost)])
    metric("lkswarm_generator_cpu_percent", "gauge", "Generator CPU over the last interval.", [("", snap.cpu_percent)])
    metric("lkswarm_generator_rss_bytes", "gauge", "Generator resident memory.", [("", snap.rss_mb * 1024 * 1024)])
    metric(
        "lkswarm_loop_lag_p99_seconds",
        "gauge",
        "Event-loop lag p99 over the last interval.",
        [("", snap.loop_lag_p99_ms / 1000)],
    )
    name = "lkswarm_phase_latency_seconds"
    out.append(f"# HELP {name} Latency per phase (from the intended start where it applies).")
    out.append(f"# TYPE {name} histogram")
    for phase in PHASES:
        out.extend(_histogram_lines(name, phase, engine.metrics.phases[phase]))
    return "\n".join(out) + "\n"


class PrometheusExporter:
    """An `Observer` serving ``/metrics`` while the run lasts."""

    def __init__(self, address: str) -> None:
        self.host, self.port = parse_address(address)
        self.engine: Engine | None = None
        self.latest = Snapshot()
        self._server: asyncio.Server | None = None
        self.scrapes = 0

    async def start(self, engine: Engine) -> None:
        self.engine = engine
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port)
        except OSError as exc:
            raise ConfigError(f"--prometheus: cannot listen on {self.host}:{self.port}: {exc.strerror}") from None

    def on_sample(self, snapshot: Snapshot) -> None:
        self.latest = snapshot

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            assert self.engine is not None
            body = render_metrics(self.engine, self.latest).encode()
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
