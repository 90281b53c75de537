"""What one capacity level measures during its hold window: client SLO samples, generator health, the server.

Theory of operation
-------------------
A `HoldWindow` is opened when a level's settle ends and closed when its hold
ends. While open it is a tap on the run's `PhaseMetrics` (every latency value
recorded goes to the sub-window of the moment it was recorded), and at each
sub-window boundary the controller calls `boundary()`, which reads the media
tiers' running packet counts. Verdicts then come from the hold alone: values
of the ramp and the settle never reach it. Failed participants are the one
exception: a join refused during the ramp is the level's failure (a full room
refuses the level's newcomers, not the hold's probes), so failures are counted
from the level's start.

Server figures are the difference of two scrapes of livekit-server's
``/metrics`` (`lkswarm.observe.server_metrics`) around the hold, or, for the
embedded server without metrics, its /proc CPU time. What could not be read is
None, never guessed.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from lkswarm.capacity.schema import ClientFigures, GeneratorFigures, LatencySummary, ServerFigures
from lkswarm.engine.ports import MediaTier
from lkswarm.metrics import MAX_LATENESS_P99_MS, MAX_LOOP_LAG_P99_MS, PhaseMetrics, percentile
from lkswarm.observe.server_metrics import Scrape

GENERATOR_PHASES = ("lateness", "loop_lag")


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(slots=True)
class HoldData:
    """What a hold window measured, as plain data: one process's (`HoldWindow.snapshot`) or several merged.

    ``subwindows`` hold every latency value recorded in each sub-window (ms, per phase), ``media_marks``
    the media tiers' running (received, expected, lost) at each boundary. Merging (`merge_holds`) adds
    them up exactly: values are concatenated per sub-window, marks summed, so a verdict judged on the
    merge is the verdict one process would have judged on all of them. ``parts`` keeps each merged
    process's generator figures: saturation is a process's own, so one saturated part binds the level.
    """

    subwindows: list[dict[str, list[float]]] = field(default_factory=lambda: [{}])
    media_marks: list[tuple[int, int, int]] = field(default_factory=list)  # (received, expected, lost) per boundary
    held_s: float = 0.0
    cpu_s: float = 0.0
    media_lag: tuple[int, int] | None = None  # (media-thread timer samples, over 20 ms) during the hold
    has_media: bool = False
    parts: list[GeneratorFigures] = field(default_factory=list)  # one per merged process; empty for one

    def values(self, phase: str) -> list[list[float]]:
        """The hold's values of ``phase``, per sub-window."""
        return [window.get(phase, []) for window in self.subwindows]

    def media_trials(self) -> list[tuple[int, int]]:
        """(packets lost, packets expected) per sub-window."""
        marks = self.media_marks
        return [
            (max(0, marks[i + 1][2] - marks[i][2]), max(0, marks[i + 1][1] - marks[i][1]))
            for i in range(len(marks) - 1)
        ]

    def summary(self, phase: str) -> LatencySummary:
        values = sorted(v for window in self.values(phase) for v in window)
        return {
            "count": len(values),
            "p50": round(percentile(values, 50), 3),
            "p95": round(percentile(values, 95), 3),
            "p99": round(percentile(values, 99), 3),
        }

    def generator(self) -> GeneratorFigures:
        """The generator during the hold: this process's figures, or the merged processes' (`combine_generators`)."""
        if self.parts:
            return combine_generators(self.parts)
        lateness = sorted(v for window in self.values("lateness") for v in window)
        lags = sorted(v for window in self.values("loop_lag") for v in window)
        lateness_p99, lag_p99 = percentile(lateness, 99), percentile(lags, 99)
        reasons = []
        if lateness_p99 > MAX_LATENESS_P99_MS:
            reasons.append(f"scheduler lateness p99 {lateness_p99:.0f} ms > {MAX_LATENESS_P99_MS:.0f} ms")
        if lag_p99 > MAX_LOOP_LAG_P99_MS:
            reasons.append(f"event-loop lag p99 {lag_p99:.0f} ms > {MAX_LOOP_LAG_P99_MS:.0f} ms")
        media_lag = self.media_lag
        if media_lag is not None and media_lag[0] > 0 and media_lag[1] > media_lag[0] / 100:
            reasons.append("media thread lag p99 > 20 ms")
        return {
            "cpu_percent": round(self.cpu_s / max(1e-6, self.held_s) * 100, 1),
            "lateness_p99_ms": round(lateness_p99, 3),
            "loop_lag_p99_ms": round(lag_p99, 3),
            "bound": bool(reasons),
            "reason": "; ".join(reasons),
        }

    def client(self, failed: int, attempted: int, alive: int, active: int) -> ClientFigures:
        marks = self.media_marks
        received = marks[-1][0] - marks[0][0] if len(marks) > 1 else 0
        expected = marks[-1][1] - marks[0][1] if len(marks) > 1 else 0
        lost = marks[-1][2] - marks[0][2] if len(marks) > 1 else 0
        return {
            "join_response": self.summary("join_response"),
            "ping_rtt": self.summary("ping_rtt"),
            "joined": len([v for window in self.values("join_response") for v in window]),
            "failed": failed,
            "attempted": attempted,
            "alive": alive,
            "active": active,
            "packets_received": max(0, received),
            "packets_expected": max(0, expected),
            "packets_lost": max(0, lost),
            "loss_ratio": round(max(0, lost) / expected, 6) if expected > 0 else 0.0,
        }


def combine_generators(parts: Sequence[GeneratorFigures]) -> GeneratorFigures:
    """Several generator processes in one hold: CPU adds up; lateness and loop lag are the worst process's,
    and the level is generator-bound when any one of them saturated (its share of the load was not applied
    as planned, whatever the others did). A reason names its process by its index."""
    reasons = [f"generator {i}: {p['reason']}" for i, p in enumerate(parts) if p["bound"]]
    return {
        "cpu_percent": round(sum(p["cpu_percent"] for p in parts), 1),
        "lateness_p99_ms": max((p["lateness_p99_ms"] for p in parts), default=0.0),
        "loop_lag_p99_ms": max((p["loop_lag_p99_ms"] for p in parts), default=0.0),
        "bound": bool(reasons),
        "reason": "; ".join(reasons),
    }


def merge_holds(holds: Sequence[HoldData]) -> HoldData:
    """The hold windows of several processes over the same hold, as one (see `HoldData`)."""
    if len(holds) == 1:
        return holds[0]
    subwindows: list[dict[str, list[float]]] = [{} for _ in range(max((len(h.subwindows) for h in holds), default=1))]
    for hold in holds:
        for merged, window in zip(subwindows, hold.subwindows, strict=False):
            for phase, values in window.items():
                merged.setdefault(phase, []).extend(values)
    length = max((len(h.media_marks) for h in holds), default=0)
    marks = [(0, 0, 0)] * length
    for hold in holds:
        # A process with fewer marks (a boundary it missed) holds its last counts: its packets still count.
        own = hold.media_marks + hold.media_marks[-1:] * (length - len(hold.media_marks)) if hold.media_marks else []
        marks = [(a[0] + b[0], a[1] + b[1], a[2] + b[2]) for a, b in zip(marks, own, strict=False)] + marks[len(own) :]
    lags = [h.media_lag for h in holds if h.media_lag is not None]
    return HoldData(
        subwindows=subwindows,
        media_marks=marks,
        held_s=max(h.held_s for h in holds),
        cpu_s=sum(h.cpu_s for h in holds),
        media_lag=(sum(lag[0] for lag in lags), sum(lag[1] for lag in lags)) if lags else None,
        has_media=any(h.has_media for h in holds),
        parts=[part for h in holds for part in (h.parts or [h.generator()])],
    )


@dataclass(slots=True)
class HoldWindow:
    """One process's hold: a tap on its metrics that files each value in the sub-window of its moment."""

    metrics: PhaseMetrics
    tiers: Sequence[MediaTier]
    subwindows: list[dict[str, list[float]]] = field(default_factory=lambda: [{}])
    media_marks: list[tuple[int, int, int]] = field(default_factory=list)  # (received, expected, lost) per boundary
    opened_at: float = 0.0
    closed_at: float = 0.0
    cpu_at_open_s: float = 0.0
    cpu_s: float = 0.0
    media_lag: tuple[int, int] | None = None  # (media-thread timer samples, over 20 ms) during the hold

    def open(self) -> None:
        self.opened_at = time.perf_counter()
        self.cpu_at_open_s = _cpu_s()
        self.media_marks.append(self._media_counts())
        self.metrics.taps.append(self._tap)

    def _tap(self, phase: str, value_ms: float) -> None:
        self.subwindows[-1].setdefault(phase, []).append(value_ms)

    def boundary(self) -> None:
        """Ends the current sub-window (and starts the next)."""
        self.media_marks.append(self._media_counts())
        self.subwindows.append({})

    def close(self) -> None:
        """Ends the hold: the last sub-window is kept only if it has media or latency data."""
        if self._tap in self.metrics.taps:
            self.metrics.taps.remove(self._tap)
        self.closed_at = time.perf_counter()
        self.cpu_s = _cpu_s() - self.cpu_at_open_s
        if len(self.subwindows) > len(self.media_marks) - 1:
            self.media_marks.append(self._media_counts())

    @property
    def held_s(self) -> float:
        return (self.closed_at or time.perf_counter()) - self.opened_at

    def _media_counts(self) -> tuple[int, int, int]:
        counts = [c for tier in self.tiers if (c := tier.running_counts()) is not None]
        return (
            sum(c.packets_received for c in counts),
            sum(c.packets_expected for c in counts),
            sum(c.packets_lost for c in counts),
        )

    @property
    def has_media(self) -> bool:
        return any(tier.running_counts() is not None for tier in self.tiers)

    def snapshot(self) -> HoldData:
        """The hold so far (or whole, once closed) as plain data; the lists are copies. Before the close, the
        current sub-window's media are marked as of now, so that a verdict read then judges its packets too
        (the hold's last boundary falls at its end, after the verdict, so its last sub-window had no trial)."""
        marks = list(self.media_marks)
        if marks and not self.closed_at and len(self.subwindows) > len(marks) - 1:
            marks.append(self._media_counts())
        return HoldData(
            subwindows=[{phase: list(values) for phase, values in window.items()} for window in self.subwindows],
            media_marks=marks,
            held_s=self.held_s,
            cpu_s=self.cpu_s,
            media_lag=self.media_lag,
            has_media=self.has_media,
        )

    def values(self, phase: str) -> list[list[float]]:
        """The hold's values of ``phase``, per sub-window."""
        return [window.get(phase, []) for window in self.subwindows]

    def media_trials(self) -> list[tuple[int, int]]:
        """(packets lost, packets expected) per sub-window."""
        return self.snapshot().media_trials()

    def generator(self, media_lag: tuple[int, int] | None) -> GeneratorFigures:
        """This process during the hold; ``media_lag`` = (timer samples, over the limit) of the media thread."""
        data = self.snapshot()
        data.media_lag = media_lag
        return data.generator()

    def client(self, failed: int, attempted: int, alive: int, active: int) -> ClientFigures:
        return self.snapshot().client(failed, attempted, alive, active)


def server_figures(
    before: Scrape | str | None,
    after: Scrape | str | None,
    held_s: float,
    proc_cpu_s: float | None,
) -> ServerFigures | None:
    """The server during the hold, from two scrapes; with only the embedded server's /proc CPU time, its cores."""
    if isinstance(before, Scrape) and isinstance(after, Scrape) and held_s > 0:

        def rate(name: str, match: dict[str, str]) -> float:
            return round(max(0.0, after.total(name, match) - before.total(name, match)) / held_s, 3)

        packets_out = rate("livekit_packet_total", {"direction": "outgoing"})
        retransmits = rate("livekit_packet_total", {"direction": "outgoing", "transmission": "retransmit"})
        funnel: dict[str, float] = {}
        for name, labels, value in after.samples:
            if name == "livekit_participant_join_total" and "state" in labels:
                state = labels["state"]
                funnel[state] = funnel.get(state, 0.0) + value
        for name, labels, value in before.samples:
            if name == "livekit_participant_join_total" and labels.get("state") in funnel:
                funnel[labels["state"]] -= value
        cores = rate("process_cpu_seconds_total", {})
        rss = after.total("process_resident_memory_bytes", {})
        prometheus_cpu = after.has("process_cpu_seconds_total")
        return {
            "cores": cores if prometheus_cpu else proc_cpu_s,
            "cpu_source": "prometheus" if prometheus_cpu else "proc" if proc_cpu_s is not None else "",
            "rss_mb": round(rss / 1e6, 1) if rss else None,
            "participants": after.total("livekit_participant_total", {}),
            "packets_in_per_s": rate("livekit_packet_total", {"direction": "incoming"}),
            "packets_out_per_s": packets_out,
            "bytes_out_per_s": rate("livekit_packet_bytes", {"direction": "outgoing"}),
            "bytes_in_per_s": rate("livekit_packet_bytes", {"direction": "incoming"}),
            "retransmit_share": round(retransmits / packets_out, 6) if packets_out else 0.0,
            "nacks_per_s": rate("livekit_nack_total", {}),
            "plis_per_s": rate("livekit_pli_total", {}),
            "join_funnel": {state: round(count, 3) for state, count in sorted(funnel.items())},
        }
    if proc_cpu_s is not None:
        return {
            "cores": proc_cpu_s,
            "cpu_source": "proc",
            "rss_mb": None,
            "participants": None,
            "packets_in_per_s": None,
            "packets_out_per_s": None,
            "bytes_out_per_s": None,
            "bytes_in_per_s": None,
            "retransmit_share": None,
            "nacks_per_s": None,
            "plis_per_s": None,
            "join_funnel": {},
        }
    return None
