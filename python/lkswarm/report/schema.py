"""The run report's wire format (``lkswarm.report/1``): the public contract other tools read.

Theory of operation
-------------------

``lkswarm run --json`` (and ``lkswarm merge``, and the HTML, CSV and threshold
outputs, which read the JSON back) speak one document: a JSON object whose
``schema`` is `SCHEMA`. Tools outside this repository parse it by key, so its
wire format is frozen: the TypedDicts below describe it exactly as it is written
today, and a change to them that renames, removes or retypes a key breaks those
readers. New information goes into new keys; a changed meaning needs a new
``schema`` string.

Who writes a report:

- `lkswarm.report.build.build_report`: one generator process's run, from its `RunRecord`;
- `lkswarm.app.workers.crashed_report`: the stand-in for a worker process that died without
  one, in which each of its planned participants failed with ``failed:worker_crashed``;
- `lkswarm.report.merge.merge_reports`: several reports as one, with ``merged_from`` and ``target``;
- the runner (`lkswarm.app`) then adds ``target`` (and ``workers`` for ``--workers``), and
  `lkswarm.report.thresholds.evaluate` fills in ``thresholds`` and ``passed``.

The first two build the document with `assemble_report` and `participants_section`,
the one place that lists the top-level keys and the participants section's keys, in
their order on the wire (the JSON is written in dict order, so the order is part of
what stays the same). A crashed worker's report leaves its tier and signal sections
empty, its ``generator`` section only ``{"valid": false}`` and has no ``timeline``;
hence the `NotRequired` keys there.

Sections whose content a tier owns (``media``, ``probes``) and the free-form ones
(``config``, ``latency_ms``, ``timeline``, ``room_check``) stay ``dict[str, Any]``:
their owners (`lkswarm.media.totals`, `lkswarm.probe.totals`, `lkswarm.config`,
`lkswarm.metrics`, `lkswarm.engine.timeline`) define them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NotRequired, TypedDict, cast

from lkswarm import __version__
from lkswarm.config import RunConfig
from lkswarm.engine.outcome import OutcomeKind

SCHEMA = "lkswarm.report/1"

Summary = dict[str, Any]  # `lkswarm.metrics.summarize`: count, min, p50, p90, p99, p999, max, mean (ms)


class Outcomes(TypedDict):
    """How many participants ended each way; they add up to ``participants.scheduled``."""

    completed: int
    left: int  # the server removed them (reasons under ``left_reasons``)
    failed: int  # reasons under ``failures``
    not_started: int  # scheduled but never started (the run ended first)


class Participants(TypedDict):
    scheduled: int
    started: int
    joined: int
    active: int
    active_at_end: int
    alive_at_end: int
    outcomes: Outcomes
    failures: dict[str, int]  # failure reason (``connect_failed``) -> count
    left_reasons: dict[str, int]  # DisconnectReason -> count
    failure_details: dict[str, str]  # outcome text (``failed:REASON``) -> the first detail seen
    ping_rtt_participants: int
    departed: int


class SignalPathFigures(TypedDict):
    """One signaling path's participants (each counted under the path it ended on) and connections."""

    participants: int
    outcomes: dict[str, int]  # completed / left / failed
    connects: int  # WebSocket connections opened on this path (joins, resumes, retries)
    resumes: int  # resumes the server took on this path
    offers_sent: int  # our offers: dual-PC publisher offers, or the single PC's join offer and re-offers


class SignalPaths(TypedDict):
    """``--signal-path``: what each path carried, and how often ``auto`` fell back from v1 to v0 (a 404)."""

    fallbacks: int
    media_sections_requirements: int  # single PC: the server asked for more receive sections (or a re-offer)
    reoffers_deferred: int  # of those, asked before our ICE connected: the re-offer waited for it
    v1: SignalPathFigures
    v0: SignalPathFigures


class ConnectionQualityFigures(TypedDict):
    """What livekit-server told each participant about its own connection (``connection_quality`` updates).

    The server scores every track every 5 s, a subscriber's down tracks from its RTCP receiver reports (loss,
    RTT, jitter), and rates a participant by its worst track. It sends an update when someone new becomes
    ACTIVE or someone's quality changes, so a participant hears of its own connection at least once and then
    of every change. A participant is counted once in ``worst`` (the worst quality it was told) and once in
    ``last``; quality names are ``excellent``, ``good``, ``poor`` and ``lost``.
    """

    participants: int  # participants told their own quality at least once
    reports: int  # updates about their own connection, all participants
    worst: dict[str, int]  # quality name -> participants
    last: dict[str, int]  # quality name -> participants
    # Each participant's lowest score (MOS, 1.0 to 4.5) in the bins of the server's ``livekit_quality_score``:
    # "4.25-4.5" counts scores above 4.25 and at most 4.5. EXCELLENT is a MOS above about 4.02.
    worst_score_bins: dict[str, int]
    min_score: float | None  # the lowest score any participant was told; None when none was told any


class Signal(TypedDict, total=False):
    """Signaling figures; empty (``{}``) in a crashed worker's report."""

    server_version: str
    messages_received: dict[str, int]  # by message name, sorted
    resumes_attempted: int
    resumes_succeeded: int
    reconnects: int
    rejoins_succeeded: int
    storm_dropped: int
    reconnect_episodes: int  # lost connections a participant tried to come back from (lkswarm.engine.reconnect)
    reconnects_recovered: int  # of those, the ones where media flowed again
    reconnect_attempts_failed: int  # attempts that failed and were retried after a backoff
    track_settings: int
    speaker_updates: int
    leave_requests: dict[str, int]  # by leave action
    subscription_errors: dict[str, int]  # the server's failed subscriptions, by SubscriptionError name
    request_responses: dict[str, int]  # the server's non-OK answers to our requests, "request:REASON" (mute:NOT_FOUND)
    room_moves: int  # participants the server moved to another room (MoveParticipant): counted in the new one
    offers_resent: int  # single PC: offers pending at a resume, sent again before the ICE restart
    stale_answers: int  # single PC: answers to an offer that was not the pending one (dropped)
    stale_connects: int  # an abandoned join's PeerConnection connecting after a fresh join began (ignored)
    # The server's mutes of our tracks (an admin's MutePublishedTrack) and its unpublishes of them, by what the
    # publishers did: "honoured" (stopped or resumed sending, the mute acknowledged), "not_honoured" (a probe's
    # aiortc keeps sending), "unknown_track" (a sid we were never told), "unpublishes_honoured" and
    # "unpublishes_not_honoured"; "kept_on_rejoin": tracks a fresh join republished muted, and silent, since the
    # server had muted them (as an SDK does).
    server_mutes: dict[str, int]
    paths: SignalPaths  # by signaling path (lkswarm.signal.paths)
    connection_quality: ConnectionQualityFigures  # the server's estimate of each participant's own connection


class Generator(TypedDict):
    """The generator process itself; a crashed worker's report has ``valid`` (false) only."""

    cpu_s: NotRequired[float]  # less the tiers' own threads
    max_rss_mb: NotRequired[float]
    rss_start_mb: NotRequired[float]
    rss_ready_mb: NotRequired[float]
    rss_end_mb: NotRequired[float]
    loop_lag_ms: NotRequired[Summary]
    media_lag_ms: NotRequired[Summary]  # with the media tier only
    lateness_ms: NotRequired[Summary]
    late_starts: NotRequired[int]
    valid: bool  # false: the generator was saturated, its latency figures are not trustworthy
    fd_limit: NotRequired[int]


class RoomRow(TypedDict):
    """One row of ``rooms``; a crashed worker's rows have no join percentiles."""

    room: str
    scheduled: int
    joined: int
    active_at_end: int
    completed: int
    left: int
    failed: int
    join_p50_ms: NotRequired[float]
    join_p99_ms: NotRequired[float]


class FailedRow(TypedDict):
    """One failed participant (`lkswarm.engine.record.FailedRow.to_dict`), at most ``MAX_FAILED_ROWS``."""

    identity: str
    room: str
    outcome: str  # ``failed:REASON``
    detail: str
    at_s: float  # seconds since the run's start


class Target(TypedDict):
    url: str
    embedded_server: bool
    urls: NotRequired[list[str]]  # a merge of runs against several servers


class WorkerSummary(TypedDict):
    """One worker process of a ``--workers`` run, or one actor of a ``--ray`` run (pid 0: never started)."""

    index: int
    pid: int
    exit_code: int | None  # None for an actor
    crashed: bool
    scheduled: int
    cpu_s: float | None
    valid: bool | None
    # A ``--ray`` run's actors add where they ran and what they did:
    node: NotRequired[str | None]  # the Ray node id
    host: NotRequired[str | None]
    ip: NotRequired[str | None]  # the node's address
    media_bind_ip: NotRequired[str | None]
    participants: NotRequired[int]  # its share of the plan (as scheduled)
    joined: NotRequired[int]
    process_cpu_s: NotRequired[float | None]  # its whole process (Ray's threads too), set-up included
    detail: NotRequired[str | None]  # how a crashed actor ended


class MergedFrom(TypedDict):
    """One input of ``lkswarm merge``."""

    started_at: str | None
    duration_s: float | None
    version: str | None
    target: Target | None
    passed: bool


class Machine(TypedDict):
    """The cores of the machine the generator ran on, and who used them."""

    cores: int
    generator_cpu_s: float
    embedded_server_cpu_s: NotRequired[float]  # only when the embedded server (our child) ran
    embedded_server_cores: NotRequired[float]
    busy_share: NotRequired[float]  # (server + generator CPU) / (wall time x cores)
    udp_rcvbuf_errors: NotRequired[int]  # datagrams the kernel dropped for full socket buffers during the run


class Interrupted(TypedDict):
    """A run that a signal ended early: which signal, and when (seconds since the run's start)."""

    signal: str  # "SIGINT", "SIGTERM" or "SIGHUP"
    at_s: float


class Report(TypedDict):
    schema: str  # SCHEMA
    version: str  # of lkswarm
    config: dict[str, Any]  # `RunConfig` as JSON
    started_at: str  # ISO 8601: the timeline's zero, the first arrival's instant (after the set-up)
    duration_s: float
    participants: Participants
    latency_ms: dict[str, Any]  # phase -> Summary
    media: dict[str, Any]  # `MediaTotals.report`; ``{}`` in a crashed worker's report
    data: NotRequired[dict[str, Any]]  # `lkswarm.media.data.DataTotals.report`: runs with data publishers or data
    probes: dict[str, Any]  # `ProbeTotals.report`; ``{}`` without probes
    signal: Signal
    room_check: dict[str, Any]
    generator: Generator
    warnings: list[str]
    notes: list[str]
    histograms: dict[str, str]  # name -> encoded HdrHistogram, for exact merges
    timeline: NotRequired[dict[str, Any]]  # absent from a crashed worker's report
    rooms: list[RoomRow]
    failed_participants: list[FailedRow]
    thresholds: list[dict[str, Any]]  # `lkswarm.report.thresholds.evaluate` fills it in
    passed: bool
    target: NotRequired[Target]  # added by the runner and by merge
    workers: NotRequired[list[WorkerSummary]]  # added by a ``--workers`` run
    merged_from: NotRequired[list[MergedFrom]]  # added by merge
    interrupted: NotRequired[Interrupted]  # a stop signal ended the run before its duration
    machine: NotRequired[Machine]  # who used this machine's cores (the embedded server too)
    server: NotRequired[dict[str, Any]]  # the server's own counters (lkswarm.observe.server_metrics), or why not


def outcomes_section(by_kind: Mapping[OutcomeKind, int], not_started: int) -> Outcomes:
    """``participants.outcomes`` from the count of participants that ended each way."""
    return {
        "completed": by_kind.get(OutcomeKind.COMPLETED, 0),
        "left": by_kind.get(OutcomeKind.LEFT, 0),
        "failed": by_kind.get(OutcomeKind.FAILED, 0),
        "not_started": not_started,
    }


def participants_section(
    *,
    scheduled: int,
    started: int,
    joined: int,
    active: int,
    active_at_end: int,
    alive_at_end: int,
    outcomes: Outcomes,
    failures: dict[str, int],
    left_reasons: dict[str, int],
    failure_details: dict[str, str],
    ping_rtt_participants: int,
    departed: int,
) -> Participants:
    """The ``participants`` section, its keys in wire order."""
    return {
        "scheduled": scheduled,
        "started": started,
        "joined": joined,
        "active": active,
        "active_at_end": active_at_end,
        "alive_at_end": alive_at_end,
        "outcomes": outcomes,
        "failures": failures,
        "left_reasons": left_reasons,
        "failure_details": failure_details,
        "ping_rtt_participants": ping_rtt_participants,
        "departed": departed,
    }


def empty_room_row(name: str) -> RoomRow:
    """A room's row of the report's ``rooms`` table before anyone is counted in it."""
    return {"room": name, "scheduled": 0, "joined": 0, "active_at_end": 0, "completed": 0, "left": 0, "failed": 0}


def count_outcome(row: RoomRow, kind: OutcomeKind) -> None:
    """Counts one participant that ended as ``kind`` in its room's row."""
    match kind:
        case OutcomeKind.COMPLETED:
            row["completed"] += 1
        case OutcomeKind.LEFT:
            row["left"] += 1
        case OutcomeKind.FAILED:
            row["failed"] += 1


def assemble_report(
    *,
    config: RunConfig,
    started_at: datetime,
    duration_s: float,
    participants: Participants,
    latency_ms: dict[str, Any],
    media: dict[str, Any],
    probes: dict[str, Any],
    signal: Signal,
    room_check: dict[str, Any],
    generator: Generator,
    warnings: list[str],
    notes: list[str],
    histograms: dict[str, str],
    timeline: dict[str, Any] | None,
    rooms: list[RoomRow],
    failed_participants: list[FailedRow],
) -> Report:
    """A whole report, its top-level keys in wire order; ``timeline`` None leaves that key out.

    ``thresholds`` is empty and ``passed`` true until `lkswarm.report.thresholds.evaluate` runs.
    """
    report: Report = {
        "schema": SCHEMA,
        "version": __version__,
        "config": config.to_json(),
        "started_at": started_at.isoformat(),
        "duration_s": duration_s,
        "participants": participants,
        "latency_ms": latency_ms,
        "media": media,
        "probes": probes,
        "signal": signal,
        "room_check": room_check,
        "generator": generator,
        "warnings": warnings,
        "notes": notes,
        "histograms": histograms,
        "timeline": {} if timeline is None else timeline,
        "rooms": rooms,
        "failed_participants": failed_participants,
        "thresholds": [],
        "passed": True,
    }
    if timeline is None:
        del report["timeline"]  # deleting keeps the other keys' order
    return report


def as_json(report: Report) -> dict[str, Any]:
    """The report as the JSON object it becomes, for code that handles reports of any origin.

    A report read from disk, or from a worker, is untrusted JSON (`lkswarm.report.merge.check_schema`
    checks it); a built one is a `Report`. The code that treats both alike (thresholds, merge,
    the writers) takes the JSON view; this is the one place a built report becomes it.
    """
    return cast(dict[str, Any], report)
