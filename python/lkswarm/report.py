"""The run report (``lkswarm.report/1``): a public contract, written as JSON by ``--json``."""

from __future__ import annotations

import collections
from datetime import datetime
from typing import TYPE_CHECKING, Any

from lkswarm import __version__
from lkswarm.media import MediaTotals
from lkswarm.metrics import (
    MAX_LATENESS_P99_MS,
    MAX_LOOP_LAG_P99_MS,
    MAX_MEDIA_LAG_P99_MS,
    ProcessUsage,
    percentile,
    summarize,
)

if TYPE_CHECKING:
    from lkswarm.engine import Engine

SCHEMA = "lkswarm.report/1"

EVICTION_NOTE = (
    "{count} participant(s) were removed by the server with reason JOIN_FAILURE. livekit-server evicts any "
    "participant whose primary PeerConnection has not connected (ICE + DTLS) within 60 s of joining, "
    "whatever it sends over signaling. Signal-only participants therefore live at most about 60 s; this is "
    "the server's documented behaviour, not a generator error. Use the media tier for longer runs."
)


def _outcome_counts(engine: Engine) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    outcomes = {"completed": 0, "left": 0, "failed": 0, "not_started": 0}
    failures: dict[str, int] = {}
    left: dict[str, int] = {}
    for outcome, count in engine.outcomes.items():
        kind, _, reason = outcome.partition(":")
        if kind == "completed":
            outcomes["completed"] += count
        elif kind == "left":
            outcomes["left"] += count
            left[reason] = left.get(reason, 0) + count
        else:
            outcomes["failed"] += count
            failures[reason] = failures.get(reason, 0) + count
    outcomes["not_started"] = len(engine.plan) - len(engine.drivers)
    return outcomes, failures, left


def empty_room_row(name: str) -> dict[str, Any]:
    """A room's row of the report's ``rooms`` table before anyone is counted in it."""
    return {"room": name, "scheduled": 0, "joined": 0, "active_at_end": 0, "completed": 0, "left": 0, "failed": 0}


def room_table(engine: Engine) -> list[dict[str, Any]]:
    """One row per room: participants, outcomes and join latency."""
    rows: dict[str, dict[str, Any]] = {}
    joins: dict[str, list[float]] = collections.defaultdict(list)
    for arrival in engine.plan:
        name = engine.config.room_name(arrival.room_index)
        row = rows.setdefault(name, empty_room_row(name))
        row["scheduled"] += 1
    for driver in engine.drivers:
        row = rows[driver.room]
        if driver.joined_at is not None:
            row["joined"] += 1
            joins[driver.room].append((driver.joined_at - driver.intended_start) * 1000)
        kind = driver.outcome.partition(":")[0]
        if kind in ("completed", "left", "failed"):
            row[kind] += 1
    for name, row in rows.items():
        row["active_at_end"] = engine.active_at_end_by_room[name]
        values = sorted(joins[name])
        row["join_p50_ms"] = round(percentile(values, 50), 3)
        row["join_p99_ms"] = round(percentile(values, 99), 3)
    return list(rows.values())


def _encoded_histograms(engine: Engine) -> dict[str, str]:
    """Every histogram a report summarizes, encoded, so that `lkswarm merge` merges them exactly."""
    out = engine.metrics.encoded()
    media = engine.media_totals
    if media is not None:
        named = [("media_lag", media.timer_lag), ("jitter", media.jitter_ms)]
        named += [(f"track_subscribed.{kind}", h) for kind, h in media.track_subscribed_ms.items()]
        for name, histogram in named:
            if histogram.get_total_count():
                out[name] = histogram.encode().decode("ascii")
    return out


def build_report(
    engine: Engine,
    *,
    started_at: datetime,
    duration_s: float,
    usage: ProcessUsage,
    fd_limit: int,
    room_check: dict[str, Any],
    alive_at_end: int,
) -> dict[str, Any]:
    config = engine.config
    outcomes, failures, left = _outcome_counts(engine)
    latency = engine.metrics.latency_report()
    lateness = summarize(engine.metrics.lateness)
    loop_lag = summarize(engine.metrics.loop_lag)
    warnings: list[str] = []
    notes: list[str] = []
    valid = True
    if lateness["p99"] > MAX_LATENESS_P99_MS:
        valid = False
        warnings.append(
            f"scheduler lateness p99 {lateness['p99']:.1f} ms > {MAX_LATENESS_P99_MS:.0f} ms: the generator was "
            "saturated; latencies include its own queueing. Lower --rate or spread the load over more processes."
        )
    if loop_lag["p99"] > MAX_LOOP_LAG_P99_MS:
        valid = False
        warnings.append(
            f"event-loop lag p99 {loop_lag['p99']:.1f} ms > {MAX_LOOP_LAG_P99_MS:.0f} ms: the generator was "
            "saturated; its latency figures are not trustworthy."
        )
    media_lag = summarize(engine.media_totals.timer_lag) if engine.media_totals is not None else None
    if media_lag is not None and media_lag["p99"] > MAX_MEDIA_LAG_P99_MS:
        valid = False
        warnings.append(
            f"media thread lag p99 {media_lag['p99']:.1f} ms > {MAX_MEDIA_LAG_P99_MS:.0f} ms: the generator's "
            "media tier was saturated; media was sent and received late, so jitter and loss figures include "
            "the generator's own delay. Spread the load over more generator processes."
        )
    fds_needed = len(engine.plan) * (1 if config.signal_only else 3) + 64
    if fds_needed > fd_limit:
        warnings.append(
            f"the open-file limit ({fd_limit}) is below what {len(engine.plan)} participants need "
            f"(about {fds_needed}); raise `ulimit -n` (hard limit) or failures will show as connect_failed."
        )
    if left.get("JOIN_FAILURE"):
        notes.append(EVICTION_NOTE.format(count=left["JOIN_FAILURE"]))
    if room_check.get("mismatched"):
        warnings.append(
            f"{room_check['mismatched']} participant(s) saw a room different from ListParticipants at the end"
        )
    if engine.media_totals is not None:
        warnings.extend(engine.media_totals.warnings())
    probe_totals = engine.probe_totals
    probe_cpu_s = probe_totals.cpu_s if probe_totals is not None else 0.0
    if probe_totals is not None:
        warnings.extend(probe_totals.warnings())
    counters = engine.counters
    messages: collections.Counter[str] = collections.Counter()
    for driver in engine.drivers:
        if driver.session is not None:
            messages.update(driver.session.messages_received)
    return {
        "schema": SCHEMA,
        "version": __version__,
        "config": config.model_dump(mode="json"),
        "started_at": started_at.isoformat(),
        "duration_s": round(duration_s, 3),
        "participants": {
            "scheduled": len(engine.plan),
            "started": len(engine.drivers),
            "joined": engine.joined,
            "active": counters["active"],
            "active_at_end": counters["active_at_end"],
            "alive_at_end": alive_at_end,
            "outcomes": outcomes,
            "failures": failures,
            "left_reasons": left,
            "failure_details": engine.failure_details,
            "ping_rtt_participants": len(engine.pinged),
            "departed": engine.departed,
        },
        "latency_ms": latency,
        "media": (engine.media_totals or MediaTotals()).report(),
        "probes": probe_totals.report() if probe_totals is not None else {},
        "signal": {
            "server_version": engine.server_version,
            "messages_received": dict(sorted(messages.items())),
            "resumes_attempted": counters["resumes_attempted"],
            "resumes_succeeded": counters["resumes_succeeded"],
            "reconnects": counters["reconnects"],
            "rejoins_succeeded": counters["rejoins_succeeded"],
            "storm_dropped": counters["storm_dropped"],
            "track_settings": counters["track_settings"],
            "speaker_updates": messages.get("speakers_changed", 0),
            "leave_requests": {k[len("leave_") :]: v for k, v in counters.items() if k.startswith("leave_")},
        },
        "room_check": room_check,
        "generator": {
            "cpu_s": round(usage.cpu_s - probe_cpu_s, 3),  # the probe tier's own CPU is under probes.cpu_s
            "max_rss_mb": usage.max_rss_mb,
            "rss_start_mb": engine.rss_start_mb,
            "rss_ready_mb": engine.rss_ready_mb,
            "rss_end_mb": engine.rss_end_mb,
            "loop_lag_ms": loop_lag,
            **({"media_lag_ms": media_lag} if media_lag is not None else {}),
            "lateness_ms": lateness,
            "late_starts": engine.late_starts,
            "valid": valid,
            "fd_limit": fd_limit,
        },
        "warnings": warnings,
        "notes": notes,
        "histograms": _encoded_histograms(engine),
        "timeline": engine.sampler.report(),
        "rooms": room_table(engine),
        "failed_participants": engine.failed_rows,
        "thresholds": [],
        "passed": True,
    }
