"""The ``capacity`` section of an ``lkswarm.report/1`` report: what crosses from the search to the report.

Other tools read these keys (`value`, `interval`, `limiting`, `levels`, `model`, `plan`); keep them.
Times are seconds since the search started; rates are per second over a level's hold window.
"""

from __future__ import annotations

from typing import Literal, TypedDict

Verdict = Literal["PASS", "FAIL", "INCONCLUSIVE"]
# A level's overall outcome: the SLO verdicts combined, or why none could be given.
LevelVerdict = Literal["PASS", "FAIL", "INCONCLUSIVE", "GENERATOR_BOUND", "ABORTED"]


class SloSpec(TypedDict):
    key: str  # e.g. "join_response.p95", "ping_rtt.p99", "failed_ratio", "media.loss_ratio"
    limit: float  # ms for latency keys, a ratio (0..1) for *_ratio keys
    text: str  # as given, e.g. "join_response.p95<1s"


class SloResult(TypedDict):
    verdict: Verdict
    observed: float | None  # the point estimate over the hold window (ms or ratio); None without samples
    limit: float
    samples: int  # values (or trials, for a ratio) in the hold window
    exceeding: int  # of those, how many exceed the limit (or failed / were lost)
    allowed_ratio: float  # the share allowed to exceed: 1 - q for a percentile, the limit for a ratio
    bound_low: float  # one-sided confidence bounds on the exceeding share
    bound_high: float
    confidence: float  # e.g. 0.95
    subwindows: int  # sub-windows of the hold with data
    subwindows_breached: int  # of those, how many breached on their own (persistence)
    headroom: float | None  # limit / observed - 1 (latency) or 1 - observed / limit (ratio); None without data


class LatencySummary(TypedDict):
    count: int
    p50: float
    p95: float
    p99: float


class ClientFigures(TypedDict):
    join_response: LatencySummary  # joins whose intended start fell in the hold window (probe churn)
    ping_rtt: LatencySummary
    joined: int  # joins that completed in the hold window
    failed: int  # participants that failed during the hold window
    attempted: int  # joins attempted (intended start) in the hold window, plus participants alive at its start
    alive: int  # at the end of the hold
    active: int  # alive with a connected PeerConnection, at the end of the hold
    packets_received: int  # media, hold window
    packets_expected: int
    packets_lost: int
    loss_ratio: float


class GeneratorFigures(TypedDict):
    cpu_percent: float  # this process, mean over the hold
    lateness_p99_ms: float
    loop_lag_p99_ms: float
    bound: bool  # the generator saturated in this level: its verdicts describe us, not the server
    reason: str


class ServerFigures(TypedDict):
    cores: float | None  # rate of process_cpu_seconds_total (or /proc of the embedded server's pid)
    cpu_source: str  # "prometheus", "proc" or "" when unknown
    rss_mb: float | None
    participants: float | None  # livekit_participant_total at the end of the hold
    packets_in_per_s: float | None
    packets_out_per_s: float | None
    bytes_out_per_s: float | None
    bytes_in_per_s: float | None
    retransmit_share: float | None  # retransmitted / outgoing packets
    nacks_per_s: float | None
    plis_per_s: float | None
    join_funnel: dict[str, float]  # livekit_participant_join_total{state} increase over the hold


class Level(TypedDict):
    index: int  # 0, 1, 2 ... in the order measured
    participants: int  # the level's population (all rooms together)
    rooms: int
    publishers: int  # per room
    subscribers: int  # per room (participants per room - publishers)
    phase: Literal["bracket", "bisect", "confirm"]
    fresh: bool  # ramped from an empty server (after a teardown), not grown from the previous level
    ramp_s: tuple[float, float]  # [start, end] of the ramp, seconds since the search started
    settle_s: tuple[float, float]
    hold_s: tuple[float, float]
    verdict: LevelVerdict
    reason: str  # for FAIL / INCONCLUSIVE / GENERATOR_BOUND / ABORTED: why, in words
    slos: dict[str, SloResult]  # by SloSpec.key
    client: ClientFigures
    generator: GeneratorFigures
    server: ServerFigures | None  # None when the server's metrics could not be read


class Fit(TypedDict, total=False):
    kind: str  # "ols", "usl", "kneedle"
    ok: bool
    reason: str  # why a fit was not made or is not trusted
    coefficients: dict[str, float]
    r2: float
    n: int
    x: str  # what x and y are, e.g. "server egress packets/s", "server cores"
    y: str


class CapacitySection(TypedDict):
    grow: Literal["subscribers", "rooms", "publishers"]
    shape: dict[str, object]  # rooms, participants per room, publishers, audio/video, ... at the start
    slos: list[SloSpec]
    confidence: float
    value: int | None  # the last passing level, in participants; None when no level passed
    interval: tuple[int | None, int | None]  # [L, U]; U None when --max passed
    limiting: str | None  # SLO key or guard that failed first at U: "failed_ratio", "generator", ...
    bound: Literal["exact", "lower", "none"]  # "lower": censored at --max or generator-bound
    levels: list[Level]
    headroom: dict[str, float | None]  # at the capacity: each SLO's and resource's headroom
    model: dict[str, Fit]  # "knee_latency", "knee_cpu", "cores_vs_egress", "usl"
    plan: dict[str, object]  # per_core, projected, limit_num_tracks, limit_bytes_per_sec, notes
    server_limit: dict[str, object]  # {"cpus": 0.5, "method": "cgroup v1 cpu.cfs_quota_us"} or {}
    search: dict[str, object]  # start, max, growth/step, width, hold_s, settle_s, probes, wall_s, stopped
    summary: str  # the one-paragraph verdict printed on the console
