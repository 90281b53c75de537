"""Per-phase latency histograms (HdrHistogram, mergeable across processes) and generator self-monitoring."""

from __future__ import annotations

import asyncio
import bisect
import collections
import math
import os
import resource
import threading
import time
from collections.abc import Callable
from typing import Any

from hdrh.histogram import HdrHistogram

PHASES = (
    "ws_connect",
    "join_response",
    "offer_answer",
    "active",
    "track_subscribed",
    "ping_rtt",
    "resume",  # a resume, until media flows again (media participants) or the server answered (signal only)
    "resume_signal",  # a resume until the server's reconnect response alone
    "rejoin",
    "recovery",  # from a lost connection until media flows again (lkswarm.engine.reconnect)
    "media_e2e",
    "data_e2e",  # a data message, from its send time (the sender's clock) to its arrival (the receiver's)
    "data_e2e_slow_readers",  # data_e2e of the slow readers (--data-slow-readers) alone; data_e2e is everyone else's
    "data_track_e2e",  # a data-track packet, from its user timestamp (the sender's clock) to its arrival
    # A run that mixes signaling paths (--signal-path v1:70,v0:30) also records these two phases by path.
    "join_response_v1",
    "join_response_v0",
    "active_v1",
    "active_v0",
)
# A run whose scheduler lateness or loop lag p99 exceeds these is saturated: its latencies include our queueing.
MAX_LATENESS_P99_MS = 10.0
MAX_LOOP_LAG_P99_MS = 20.0
# A loop-lag p99 is judged once there are this many ticks (5 s of the 20 Hz grid): over the handful of a run that
# ended at once (everyone refused), one tick's blip was its p99, and the run read as a saturated generator.
MIN_LOOP_LAG_SAMPLES = 100
# One stall this long (a paused or starved generator) is invalid whatever the p99: a 24 s stall is one tick in
# hundreds, yet every participant missed its pings and the server may have dropped them for our silence.
MAX_LOOP_STALL_MS = 1000.0
# The media thread serving its deadlines later than one audio frame (20 ms) at p99 sends frames late
# and stamps arrivals late: receive jitter and loss then describe the generator, not the server.
MAX_MEDIA_LAG_P99_MS = 20.0
RECENT_SAMPLES = 50_000  # per phase, a cap; the sampler also drops what its window no longer needs
# Upper bounds of the phase histograms' Prometheus buckets. Values are counted into them as they are
# recorded (a bisect each), so a scrape reads 16 counters per phase: bucketing an HdrHistogram's recorded
# values instead walks every distinct value in Python, too slow for a worker sending it every second.
BUCKET_BOUNDS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000)
_LOWEST_US = 1
_HIGHEST_US = 3_600_000_000  # one hour
_SIGNIFICANT_DIGITS = 3


def new_histogram() -> HdrHistogram:
    return HdrHistogram(_LOWEST_US, _HIGHEST_US, _SIGNIFICANT_DIGITS)


def record_ms(histogram: HdrHistogram, value_ms: float) -> None:
    """Records a millisecond value at microsecond resolution, clamped into the histogram's range."""
    histogram.record_value(min(_HIGHEST_US, max(_LOWEST_US, round(value_ms * 1000))))


def p99_exceeds(count: int, over_limit: int) -> bool:
    """Whether a p99 is above a limit, from how many of ``count`` values are: exactly when more than 1 %."""
    return count > 0 and over_limit > count / 100


def record_buckets_us(histogram: HdrHistogram, buckets: list[tuple[int, int]]) -> None:
    """Replays (value in µs, count) pairs, e.g. the media thread's own histogram, clamped into range."""
    for value_us, count in buckets:
        histogram.record_value(min(_HIGHEST_US, max(_LOWEST_US, value_us)), count)


def nonzero_counts(histogram: HdrHistogram) -> list[tuple[int, int]]:
    """The (counts-array index, count) pairs that are not zero, in order of value.

    Only the counts up to the maximum's index are read, in one slice of the ctypes array (a C copy):
    hdrh's own percentile and mean walk every index below in Python, through its iterator, about
    23,500 steps for a histogram of this range holding one hour-long value."""
    if not histogram.get_total_count():
        return []
    end = min(histogram.get_counts_array_index(histogram.get_max_value()) + 1, len(histogram.counts))
    return [(index, count) for index, count in enumerate(histogram.counts[:end]) if count]


def mean_of(histogram: HdrHistogram, counts: list[tuple[int, int]] | None = None) -> float:
    """``get_mean_value``'s figure (each count at the middle of its bucket), from the non-empty counts."""
    total_count: int = histogram.get_total_count()
    if not total_count:
        return 0.0
    total: int = 0
    for index, count in nonzero_counts(histogram) if counts is None else counts:
        value = histogram.get_value_from_index(index)
        lowest = histogram.get_lowest_equivalent_value(value)
        total += count * (lowest + ((histogram.get_highest_equivalent_value(value) - lowest + 1) >> 1))
    return float(total) / total_count


def value_at_percentile(histogram: HdrHistogram, percentile: float, counts: list[tuple[int, int]] | None = None) -> int:
    """``get_value_at_percentile``'s value, walking only the non-empty counts."""
    target = histogram.get_target_count_at_percentile(percentile)
    running = 0
    for index, count in nonzero_counts(histogram) if counts is None else counts:
        running += count
        if running >= target:
            value = histogram.get_value_from_index(index)
            if percentile:
                return int(histogram.get_highest_equivalent_value(value))
            return int(histogram.get_lowest_equivalent_value(value))
    return 0


def summarize(histogram: HdrHistogram) -> dict[str, Any]:
    """count, min, p50, p90, p99, p99.9, max and mean in milliseconds (zeros when empty)."""
    count = histogram.get_total_count()
    if count == 0:
        return {"count": 0, "min": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0, "mean": 0.0}
    counts = nonzero_counts(histogram)

    def at(p: float) -> float:
        return round(float(value_at_percentile(histogram, p, counts)) / 1000, 3)

    return {
        "count": count,
        "min": round(histogram.get_min_value() / 1000, 3),
        "p50": at(50),
        "p90": at(90),
        "p99": at(99),
        "p999": at(99.9),
        "max": round(histogram.get_max_value() / 1000, 3),
        "mean": round(mean_of(histogram, counts) / 1000, 3),
    }


def _add_to_buckets(counts: list[int], value_ms: float, count: int) -> float:
    """Counts ``count`` values of ``value_ms`` in their BUCKET_BOUNDS_MS bucket; returns what they add to the sum."""
    counts[bisect.bisect_left(BUCKET_BOUNDS_MS, value_ms)] += count
    return value_ms * count


class PhaseMetrics:
    """One histogram per phase, plus scheduler lateness and event-loop lag."""

    def __init__(self) -> None:
        self.phases = {phase: new_histogram() for phase in PHASES}
        # Per phase: counts per BUCKET_BOUNDS_MS bucket (value <= bound, not cumulative; the last is
        # above every bound) and the sum of the values, for Prometheus.
        self.bucket_counts = {phase: [0] * (len(BUCKET_BOUNDS_MS) + 1) for phase in PHASES}
        self.sum_ms = dict.fromkeys(PHASES, 0.0)
        self.lateness = new_histogram()
        self.loop_lag = new_histogram()
        self._starts_over_limit = 0
        self._lags_over_limit = 0
        # (perf_counter time, value) of the latest samples, for per-interval and rolling figures.
        self.recent: dict[str, collections.deque[tuple[float, float]]] = {
            phase: collections.deque(maxlen=RECENT_SAMPLES) for phase in (*PHASES, "loop_lag")
        }
        # Called with (phase, value in ms) for every value recorded (also "loop_lag" and "lateness"), while
        # set: a capacity level's hold window collects exactly its own values this way (lkswarm.capacity).
        self.taps: list[Callable[[str, float], None]] = []
        # Phases whose values the media thread keeps until the run's end (data latency): their (µs, count) buckets
        # so far, read at a Prometheus scrape (`bucket_counts_now`) until `settle_live_source` adds the final ones.
        self._live_sources: dict[str, Callable[[], list[tuple[int, int]]]] = {}
        self._live_lock = threading.Lock()  # a scrape runs on the exporter's thread

    def record(self, phase: str, value_ms: float) -> None:
        record_ms(self.phases[phase], value_ms)
        self.recent[phase].append((time.perf_counter(), value_ms))
        self._count(phase, value_ms, 1)
        for tap in self.taps:
            tap(phase, value_ms)

    def add_histogram(self, phase: str, histogram: HdrHistogram) -> None:
        """Adds a whole histogram of µs values (e.g. the probes' end-to-end latencies) to ``phase``."""
        self.phases[phase].add(histogram)
        for item in histogram.get_recorded_iterator():
            self._count(phase, item.value_iterated_to / 1000, item.count_at_value_iterated_to)

    def add_live_source(self, phase: str, source: Callable[[], list[tuple[int, int]]]) -> None:
        """``phase``'s values so far are ``source()``'s (µs, count) buckets, until `settle_live_source`."""
        with self._live_lock:
            self._live_sources[phase] = source

    def settle_live_source(self, phase: str, final: Callable[[], list[tuple[int, int]]]) -> None:
        """``phase``'s final values, ``final()``'s (µs, count) buckets, replace its live source in one step, read
        under the lock a scrape takes: a scrape sees one or the other, and never fewer than it saw before. They are
        counted as a scrape counted them (the same Prometheus bucket for the same value)."""
        with self._live_lock:
            self._live_sources.pop(phase, None)
            buckets = final()
            histogram = new_histogram()
            record_buckets_us(histogram, buckets)
            if not histogram.get_total_count():
                return
            self.phases[phase].add(histogram)
            for value_us, count in buckets:
                self._count(phase, value_us / 1000, count)

    def bucket_counts_now(self, phase: str) -> tuple[list[int], float]:
        """``phase``'s counts per BUCKET_BOUNDS_MS bucket and the sum of its values (ms), a live source's
        included: what a Prometheus scrape shows."""
        with self._live_lock:
            counts, sum_ms = list(self.bucket_counts[phase]), self.sum_ms[phase]
            source = self._live_sources.get(phase)
            if source is None:
                return counts, sum_ms
            for value_us, count in source():
                sum_ms += _add_to_buckets(counts, value_us / 1000, count)
        return counts, sum_ms

    def _count(self, phase: str, value_ms: float, count: int) -> None:
        self.sum_ms[phase] += _add_to_buckets(self.bucket_counts[phase], value_ms, count)

    def record_loop_lag(self, value_ms: float) -> None:
        record_ms(self.loop_lag, value_ms)
        self.recent["loop_lag"].append((time.perf_counter(), value_ms))
        self._lags_over_limit += value_ms > MAX_LOOP_LAG_P99_MS
        for tap in self.taps:
            tap("loop_lag", value_ms)

    def record_lateness(self, value_ms: float) -> None:
        record_ms(self.lateness, value_ms)
        self._starts_over_limit += value_ms > MAX_LATENESS_P99_MS
        for tap in self.taps:
            tap("lateness", value_ms)

    def saturation(self) -> str:
        """Why the latencies so far cannot be trusted ("" while they can).

        p99 > limit exactly when more than 1 % of the values exceed it, so two counters answer
        in O(1); a percentile walk of the HdrHistograms every second stalled the loop for ms.
        """
        if p99_exceeds(self.lateness.get_total_count(), self._starts_over_limit):
            return f"scheduler lateness p99 > {MAX_LATENESS_P99_MS:.0f} ms: the generator is saturated"
        if p99_exceeds(self.loop_lag.get_total_count(), self._lags_over_limit):
            return f"event-loop lag p99 > {MAX_LOOP_LAG_P99_MS:.0f} ms: the generator is saturated"
        return ""

    def forget_recent(self, before: float) -> None:
        """Drops samples older than perf_counter time ``before``, so the rings hold one window, not 50k each."""
        for ring in self.recent.values():
            while ring and ring[0][0] < before:
                ring.popleft()

    def recent_values(self, phase: str, since: float) -> list[float]:
        """Values recorded after perf_counter time ``since`` (newest samples only; see RECENT_SAMPLES)."""
        ring = self.recent[phase]
        out: list[float] = []
        for at, value in reversed(ring):
            if at <= since:
                break
            out.append(value)
        return out

    def latency_report(self) -> dict[str, dict[str, Any]]:
        return {phase: summarize(h) for phase, h in self.phases.items()}

    def encoded(self) -> dict[str, str]:
        """V2-compressed, base64 encodings of every histogram, for merging runs of several processes."""
        out = {phase: h.encode().decode("ascii") for phase, h in self.phases.items() if h.get_total_count()}
        for name, histogram in (("loop_lag", self.loop_lag), ("lateness", self.lateness)):
            if histogram.get_total_count():
                out[name] = histogram.encode().decode("ascii")
        return out


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


#: The grid, in milliseconds of the event loop's clock, that participants' timers and the loop-lag
#: tick fire on. Timers due on one grid instant run in one pass of the loop: 102 participants'
#: pings and the lag tick took about 91 wake-ups of the loop a second, each costing ~60 µs of
#: Python and libuv whatever it served. A ping or a timeout up to 50 ms late changes nothing.
LOOP_GRID_MS = 50
#: uvloop's clock is whole milliseconds (libuv's ``uv_now``): its ``time()`` may be this far behind.
LOOP_CLOCK_RESOLUTION_S = 0.001


def loop_grid_time(loop_time_s: float, grid_ms: int = LOOP_GRID_MS) -> float:
    """The first grid instant at or after ``loop_time_s`` (the loop's clock, seconds).

    Computed in whole milliseconds, so that uvloop, which keeps timers in milliseconds, gives every
    timer armed for one instant the same due time, whenever it was armed. (Rarely a millisecond
    later: uvloop reads its clock in ``call_at`` and again as the timer starts, and a millisecond
    that ends between the two reads moves the due time by one; never earlier.)
    """
    ms = math.ceil(loop_time_s * 1000 - 1e-6)
    return -(-ms // grid_ms) * grid_ms / 1000


def timer_at(deadline: float, now: float, loop_now_s: float) -> float:
    """The loop time to hand ``call_at`` for ``deadline`` (on perf_counter, as ``now`` is): the first
    instant of the loop grid (`loop_grid_time`) at or after it.

    Participants' timers (pings, above all) share the grid, and the loop-lag tick, so that one wake-up
    of the loop serves all that are due; a timer fires at most one grid step late. uvloop's clock
    drops the fraction of its millisecond (``loop_now_s`` may be up to 1 ms behind ``now``), so the
    deadline is padded by that millisecond: a timer is never due before its deadline.
    """
    return loop_grid_time(loop_now_s + max(0.0, deadline - now) + LOOP_CLOCK_RESOLUTION_S)


class LoopLagMonitor:
    """Measures how late the event loop runs a callback scheduled on the instants of the loop grid.

    The tick shares the grid with the participants' timers (`loop_grid_time`), so it costs no
    wake-up of its own; ``interval_s`` is the grid's step. After a tick, the next is due on the first
    instant at least half a step away (a tick that ran half a step late or more skips one). Lateness is
    read on perf_counter against the due instant carried over from the loop's clock, which under
    uvloop may be up to a millisecond behind: a lag can read up to 1 ms low (and is never below 0).
    """

    def __init__(self, metrics: PhaseMetrics, interval_s: float = LOOP_GRID_MS / 1000) -> None:
        self.metrics = metrics
        self.interval_s = interval_s
        self._handle: asyncio.TimerHandle | None = None
        self._expected = 0.0

    def start(self) -> None:
        self._schedule()

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        loop_now_s, now = loop.time(), time.perf_counter()
        when = loop_grid_time(loop_now_s + self.interval_s / 2, round(self.interval_s * 1000))
        # The tick is due at `when` on the loop's clock; lateness is read on perf_counter, finer.
        self._expected = now + (when - loop_now_s)
        self._handle = loop.call_at(when, self._tick)

    def _tick(self) -> None:
        self.metrics.record_loop_lag(max(0.0, time.perf_counter() - self._expected) * 1000)
        self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class ProcessUsage:
    """CPU seconds and peak RSS of this process between `start` and `stop`."""

    def __init__(self) -> None:
        self._cpu_start = 0.0
        self.cpu_s = 0.0
        self.max_rss_mb = 0.0

    @staticmethod
    def _cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def start(self) -> None:
        self._cpu_start = self._cpu()

    def stop(self) -> None:
        self.cpu_s = round(self._cpu() - self._cpu_start, 3)
        self.max_rss_mb = peak_rss_mb()


def peak_rss_mb() -> float:
    """This process's peak resident set size, from /proc's VmHWM on Linux.

    Not `getrusage`'s ``ru_maxrss``: Linux carries it across exec, so a generator started from a big
    process (a test runner of 250 MB, a notebook) reported its parent's peak, not its own.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def current_rss_mb() -> float:
    """Resident set size of this process now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return round(pages * resource.getpagesize() / (1024 * 1024), 2)


def raise_fd_limit() -> int:
    """Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far, from /proc (None elsewhere, or once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rpartition(")")[2].split()
    except OSError:
        return None
    ticks_per_s = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return (int(fields[11]) + int(fields[12])) / ticks_per_s


def udp_receive_buffer_errors() -> int | None:
    """Datagrams this machine's kernel dropped because a UDP socket's receive buffer was full (/proc/net/snmp)."""
    try:
        with open("/proc/net/snmp") as handle:
            lines = [line.split() for line in handle if line.startswith("Udp:")]
    except OSError:
        return None
    if len(lines) < 2 or "RcvbufErrors" not in lines[0]:
        return None
    return int(lines[1][lines[0].index("RcvbufErrors")])
