"""The run report (``lkswarm.report/1``): a public contract, written as JSON by ``--json``."""

from __future__ import annotations

import bisect
import collections
import os
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, cast

from lkswarm.auth import safe_url
from lkswarm.config import RunConfig
from lkswarm.engine.outcome import OutcomeKind
from lkswarm.engine.plan import unstarted_note
from lkswarm.engine.record import ParticipantRow, RunRecord
from lkswarm.media.totals import MediaTotals
from lkswarm.metrics import (
    MAX_LATENESS_P99_MS,
    MAX_LOOP_LAG_P99_MS,
    MAX_LOOP_STALL_MS,
    MAX_MEDIA_LAG_P99_MS,
    MIN_LOOP_LAG_SAMPLES,
    percentile,
    summarize,
)
from lkswarm.probe.totals import ProbeTotals
from lkswarm.report.schema import (
    SCHEMA,
    ConnectionQualityFigures,
    FailedRow,
    Generator,
    Interrupted,
    Machine,
    Outcomes,
    Report,
    RoomRow,
    Signal,
    SignalPathFigures,
    SignalPaths,
    assemble_report,
    count_outcome,
    empty_room_row,
    outcomes_section,
    participants_section,
)
from lkswarm.signal.enums import QUALITY_BEST_FIRST, ConnectionQuality

__all__ = ["SCHEMA", "build_report", "empty_room_row", "room_table"]

EVICTION_NOTE = (
    "{count} participant(s) were removed by the server with reason JOIN_FAILURE. livekit-server evicts any "
    "participant whose primary PeerConnection has not connected (ICE + DTLS) within 60 s of joining, "
    "whatever it sends over signaling. Signal-only participants therefore live at most about 60 s; this is "
    "the server's documented behaviour, not a generator error. Use the media tier for longer runs."
)
IO_FALLBACK_NOTE = (
    "the media thread read and sent with epoll, recvmmsg and sendmmsg: io_uring was refused ({reason}). "
    "Docker's default seccomp profile refuses it, and kernels before 6.0 lack its multishot recvmsg; the run "
    "is complete either way."
)
INSECURE_WARNING = (
    "TLS verification is off (--insecure): the server's certificate and host name were not checked, so these "
    "results may come from a server other than the one named."
)


def _outcome_counts(record: RunRecord) -> tuple[Outcomes, dict[str, int], dict[str, int]]:
    by_kind: collections.Counter[OutcomeKind] = collections.Counter()
    failures: dict[str, int] = {}
    left: dict[str, int] = {}
    for outcome, count in record.tally.outcomes.items():
        by_kind[outcome.kind] += count
        if outcome.kind is OutcomeKind.LEFT:
            left[outcome.reason] = left.get(outcome.reason, 0) + count
        elif outcome.kind is OutcomeKind.FAILED:
            failures[outcome.reason] = failures.get(outcome.reason, 0) + count
    return outcomes_section(by_kind, record.scheduled - record.started), failures, left


def room_table(record: RunRecord) -> list[RoomRow]:
    """One row per room: participants, outcomes and join latency."""
    rows: dict[str, RoomRow] = {}
    joins: dict[str, list[float]] = collections.defaultdict(list)
    active_at_end: collections.Counter[str] = collections.Counter()
    for name in record.room_names:
        row = rows.setdefault(name, empty_room_row(name))
        row["scheduled"] += 1
    for participant in record.participants:
        row = rows[participant.room]
        if participant.join_ms is not None:
            row["joined"] += 1
            joins[participant.room].append(participant.join_ms)
        # None: alive when the run ended; the engine completes it after the rows are taken (ParticipantRow).
        count_outcome(row, participant.outcome.kind if participant.outcome is not None else OutcomeKind.COMPLETED)
        if participant.active_at_end:
            active_at_end[participant.room] += 1
    for name, row in rows.items():
        row["active_at_end"] = active_at_end[name]
        values = sorted(joins[name])
        if values:  # a room where nobody joined has no join percentiles (not a join time of 0 ms)
            row["join_p50_ms"] = round(percentile(values, 50), 3)
            row["join_p99_ms"] = round(percentile(values, 99), 3)
    return list(rows.values())


def _encoded_histograms(record: RunRecord, media: MediaTotals | None) -> dict[str, str]:
    """Every histogram a report summarizes, encoded, so that `lkswarm merge` merges them exactly."""
    out = record.metrics.encoded()
    if media is not None:
        named = [("media_lag", media.timer_lag), ("jitter", media.jitter_ms)]
        named += [(f"track_subscribed.{kind}", h) for kind, h in media.track_subscribed_ms.items()]
        for name, histogram in named:
            if histogram.get_total_count():
                out[name] = histogram.encode().decode("ascii")
    return out


# The upper bounds of livekit-server's own ``livekit_quality_score`` buckets (pkg/telemetry/prometheus/quality.go),
# so the report's bins read against the server's histogram.
QUALITY_SCORE_BOUNDS = (1.0, 2.0, 2.5, 3.0, 3.25, 3.5, 3.75, 4.0, 4.25, 4.5)
QUALITY_SCORE_BINS = tuple(
    f"{lo:g}-{hi:g}" for lo, hi in zip((0.0, *QUALITY_SCORE_BOUNDS), QUALITY_SCORE_BOUNDS, strict=False)
)


def _quality_name(quality: int) -> str:
    """``excellent``; ``quality_7`` for a value a newer server added."""
    try:
        return ConnectionQuality(quality).name.lower()
    except ValueError:
        return f"quality_{quality}"


def connection_quality_section(rows: Iterable[ParticipantRow]) -> ConnectionQualityFigures:
    """``signal.connection_quality``: participants by the last and the worst quality the server told them."""
    names = [_quality_name(q) for q in QUALITY_BEST_FIRST]
    worst = dict.fromkeys(names, 0)
    last = dict.fromkeys(names, 0)
    bins = dict.fromkeys(QUALITY_SCORE_BINS, 0)
    told = [row.quality for row in rows if row.quality is not None]
    for quality in told:
        worst_name, last_name = _quality_name(quality.worst), _quality_name(quality.last)
        worst[worst_name] = worst.get(worst_name, 0) + 1  # get: a quality a newer server added has no key yet
        last[last_name] = last.get(last_name, 0) + 1
        at = min(bisect.bisect_left(QUALITY_SCORE_BOUNDS, quality.worst_score), len(QUALITY_SCORE_BINS) - 1)
        bins[QUALITY_SCORE_BINS[at]] += 1
    return {
        "participants": len(told),
        "reports": sum(quality.reports for quality in told),
        "worst": worst,
        "last": last,
        "worst_score_bins": bins,
        "min_score": round(min(q.worst_score for q in told), 4) if told else None,
    }


def _signal(record: RunRecord) -> Signal:
    messages = record.messages_received
    counters = record.counters
    return {
        "server_version": record.tally.server_version,
        "messages_received": dict(sorted(messages.items())),
        "resumes_attempted": counters["resumes_attempted"],
        "resumes_succeeded": counters["resumes_succeeded"],
        "reconnects": counters["reconnects"],
        "rejoins_succeeded": counters["rejoins_succeeded"],
        "storm_dropped": counters["storm_dropped"],
        "reconnect_episodes": counters["reconnect_episodes"],
        "reconnects_recovered": counters["reconnects_recovered"],
        "reconnect_attempts_failed": counters["reconnect_attempts_failed"],
        "track_settings": counters["track_settings"],
        "speaker_updates": messages.get("speakers_changed", 0),
        "leave_requests": {k[len("leave_") :]: v for k, v in counters.items() if k.startswith("leave_")},
        "subscription_errors": _subscription_errors(counters),
        "request_responses": _request_responses(counters),
        "room_moves": counters["room_moves"],
        "offers_resent": counters["offers_resent"],
        "stale_answers": counters["stale_answers"],
        "stale_connects": counters["stale_connects"],
        "server_mutes": _server_mutes(counters),
        "paths": _signal_paths(counters),
        "connection_quality": connection_quality_section(record.participants),
    }


SERVER_MUTE_COUNTERS = {
    "honoured": "server_mutes_honoured",
    "not_honoured": "server_mutes_not_honoured",
    "unknown_track": "server_mutes_unknown_track",
    "unpublishes_honoured": "server_unpublishes_honoured",
    "unpublishes_not_honoured": "server_unpublishes_not_honoured",
    "kept_on_rejoin": "server_mutes_kept_on_rejoin",
}


def _server_mutes(counters: Mapping[str, int]) -> dict[str, int]:
    return {name: counters[counter] for name, counter in SERVER_MUTE_COUNTERS.items()}


def _honoured(counters: Mapping[str, int]) -> str:
    """The server's mutes and unpublishes by what our publishers did, for the warning (signal.server_mutes)."""
    shown = ", ".join(f"{name.replace('_', ' ')} {count}" for name, count in _server_mutes(counters).items() if count)
    return f"our publishers {shown or 'acted on none'} (signal.server_mutes)"


def _subscription_errors(counters: Mapping[str, int]) -> dict[str, int]:
    """The server's failed subscriptions by `SubscriptionError` name (``SE_CODEC_UNSUPPORTED``: 3)."""
    prefix = "subscription_failed:"
    return {k[len(prefix) :]: v for k, v in sorted(counters.items()) if k.startswith(prefix) and v}


def _request_responses(counters: Mapping[str, int]) -> dict[str, int]:
    """The server's non-OK answers to our requests, by request and `RequestResponse.Reason` (``mute:NOT_FOUND``)."""
    prefix = "request_response:"
    return {k[len(prefix) :]: v for k, v in sorted(counters.items()) if k.startswith(prefix) and v}


def _refused_requests(counters: Mapping[str, int]) -> dict[str, int]:
    """The answers that refused a request: not QUEUED (taken, later), and not a data track's publish, which the
    data-track warning reports with its own consequences."""
    return {
        key: count
        for key, count in _request_responses(counters).items()
        if not key.endswith(":QUEUED") and not key.startswith("publish_data_track:")
    }


def _signal_paths(counters: Mapping[str, int]) -> SignalPaths:
    def figures(path: str) -> SignalPathFigures:
        outcomes = {kind.value: counters[f"signal_path_outcome:{path}:{kind.value}"] for kind in OutcomeKind}
        return {
            "participants": sum(outcomes.values()),
            "outcomes": outcomes,
            "connects": counters[f"signal_path_connects:{path}"],
            "resumes": counters[f"signal_path_resumes:{path}"],
            "offers_sent": counters[f"offers_sent:{path}"],
        }

    return {
        "fallbacks": counters["signal_path_fallbacks"],
        "media_sections_requirements": counters["media_sections_requirements"],
        "reoffers_deferred": counters["reoffers_deferred"],
        "v1": figures("v1"),
        "v0": figures("v0"),
    }


def _generator(
    record: RunRecord, loop_lag: dict[str, Any], media_lag: dict[str, Any] | None, lateness: dict[str, Any], valid: bool
) -> Generator:
    tier_cpu_s = sum(totals.cpu_s for totals in record.tiers)  # the probe tier's own CPU is under probes.cpu_s
    generator: Generator = {
        "cpu_s": round(record.cpu_s - tier_cpu_s, 3),
        "max_rss_mb": record.max_rss_mb,
        "rss_start_mb": record.rss_start_mb,
        "rss_ready_mb": record.rss_ready_mb,
        "rss_end_mb": record.rss_end_mb,
        "loop_lag_ms": loop_lag,
        "media_lag_ms": {} if media_lag is None else media_lag,
        "lateness_ms": lateness,
        "late_starts": record.late_starts,
        "valid": valid,
        "fd_limit": record.fd_limit,
    }
    if media_lag is None:  # no media tier
        del generator["media_lag_ms"]  # deleting keeps the other keys' order
    return generator


class EmbeddedServerUse(NamedTuple):
    """What the embedded livekit-server (our child, on the same cores) used while the engine ran."""

    cpu_s: float
    wall_s: float


MACHINE_SATURATED_SHARE = 0.85  # of all cores busy (server + generator): the machine, not the generator, was the limit


def machine_section(record: RunRecord, server: EmbeddedServerUse | None) -> dict[str, Any]:
    """Who used the machine's cores: the generator and, when it is our child, the server."""
    return machine_figures(record.cpu_s, server)


def machine_figures(generator_cpu_s: float, server: EmbeddedServerUse | None) -> dict[str, Any]:
    """The ``machine`` section of a run whose generator (all its processes) used ``generator_cpu_s``."""
    cores = os.cpu_count() or 1
    section: dict[str, Any] = {"cores": cores, "generator_cpu_s": round(generator_cpu_s, 3)}
    if server is not None and server.wall_s > 0:
        busy = (server.cpu_s + generator_cpu_s) / server.wall_s
        section.update(
            embedded_server_cpu_s=round(server.cpu_s, 3),
            embedded_server_cores=round(server.cpu_s / server.wall_s, 3),
            busy_share=round(busy / cores, 3),
        )
    return section


def _machine_warning(machine: dict[str, Any]) -> str | None:
    """When the generator looked saturated but the machine was: say by what, and not "add generator processes"."""
    share = machine.get("busy_share")
    if share is None or share < MACHINE_SATURATED_SHARE:
        return None
    return (
        f"the machine was saturated, not the generator alone: its {machine['cores']} core(s) were "
        f"{share:.0%} busy, the embedded livekit-server using {machine['embedded_server_cores']:.2f} of them and "
        f"the generator {machine['generator_cpu_s']:.1f} CPU-s. The generator was starved of CPU by the server it "
        "loads: more generator processes on this machine will not help; run the server elsewhere (--url) or "
        "give the run more cores"
    )


LOSS_WORTH_NAMING = 0.01  # subscribers' loss above which the report says where it happened


def loss_at_server_warning(media: dict[str, Any], server: dict[str, Any], rcvbuf_errors: int | None) -> str | None:
    """Subscribers lost packets, our sockets dropped none and the publishers' packets reached the server intact:
    the server lost them on the way out. Said only when the server's metrics and the kernel's counters show it."""
    loss = media.get("loss_ratio") or 0.0  # None: nothing was expected
    if loss < LOSS_WORTH_NAMING or not server.get("available") or rcvbuf_errors is None or rcvbuf_errors > 0:
        return None
    if server.get("loss_in_ratio", 1.0) > LOSS_WORTH_NAMING / 10:
        return None
    return (
        f"subscribers lost {loss:.1%} of the packets the server sent them, while no datagram was dropped by this "
        f"machine's sockets (UDP receive-buffer errors 0) and the publishers' packets reached the server intact "
        f"(its incoming loss {server['loss_in_ratio']:.2%}): the loss happened at the server, on its way out; it "
        f"used {server.get('cores', 0):.2f} core(s) and sent {server.get('packets_out', 0):.0f} packets"
    )


ENDED_EARLY_PREFIX = "the run ended after "


def ended_early_note(duration_s: float, planned_s: float) -> str:
    """The note of a run that ended before its duration because everyone had ended (a merge says it once)."""
    return (
        f"{ENDED_EARLY_PREFIX}{duration_s:.1f} s of its {planned_s:g} s: every participant had ended and none was "
        "left to start"
    )


def _end_notes(record: RunRecord, config: RunConfig) -> list[str]:
    """How the run ended, where that was not at its duration with everyone's outcome decided then: failures after
    the end, an early end (everyone ended), a stop signal."""
    counters = record.counters
    notes: list[str] = []
    after_end = counters["failed_after_end"]
    if after_end:
        reasons = ", ".join(
            f"{key.partition(':')[2]} {count}"
            for key, count in sorted(counters.items())
            if key.startswith("failed_after_end:")
        )
        notes.append(
            f"{after_end} participant(s) alive at the end of the run failed afterwards, while the room was checked or "
            f"the participants left ({reasons}); their outcome was decided at the end: completed"
        )
    if counters["ended_early"] and record.interrupted is None:
        notes.append(ended_early_note(record.duration_s, config.duration_s))
    if record.interrupted is not None:
        notes.append(
            f"the run was stopped by {record.interrupted['signal']} at {record.interrupted['at_s']:.1f} s, before its "
            f"duration of {config.duration_s:g} s: participants alive then completed, joins in flight failed as "
            "interrupted, arrivals still planned were not started"
        )
    return notes


def _server_action_warnings(record: RunRecord, left: Mapping[str, int]) -> list[str]:
    """What the server did to the run that it did not plan: subscriptions it could not make, our tracks it muted
    or unpublished, participants it removed (but the signal-only eviction, which has its own note)."""
    warnings: list[str] = []
    if failed_subscriptions := _subscription_errors(record.counters):
        shown = ", ".join(f"{name} {count}" for name, count in failed_subscriptions.items())
        warnings.append(
            f"the server could not subscribe our participants to {sum(failed_subscriptions.values())} track(s) "
            f"({shown}; signal.subscription_errors): that load never reached them. SE_CODEC_UNSUPPORTED means a "
            "publisher's codec that our receivers do not take."
        )
    if refused := _refused_requests(record.counters):
        shown = ", ".join(f"{name} {count}" for name, count in refused.items())
        warnings.append(
            f"the server refused {sum(refused.values())} of our participants' requests ({shown}; "
            "signal.request_responses): what they asked for (a mute's new state, a track, a candidate) did not "
            "take effect on the server."
        )
    forced = {kind: record.messages_received.get(kind, 0) for kind in ("mute", "track_unpublished")}
    if any(forced.values()):
        warnings.append(
            f"the server muted or unmuted our published tracks {forced['mute']} time(s) and unpublished "
            f"{forced['track_unpublished']} of them (an admin's MutePublishedTrack, or publish permission revoked): "
            f"{_honoured(record.counters)}. As with the SDKs, a muted or unpublished track stops sending "
            "(media.frames_muted), so the server carried less media than planned."
        )
    removed = {reason: count for reason, count in left.items() if reason != "JOIN_FAILURE"}
    if removed:
        shown = ", ".join(f"{reason} {count}" for reason, count in sorted(removed.items(), key=lambda kv: -kv[1]))
        warnings.append(
            f"the server removed {sum(removed.values())} participant(s) ({shown}): they did not stay for the run, "
            "so it did not hold the load it planned. Gate on it with --threshold left==0."
        )
    return warnings


# The generator's saturation warnings begin with these, and end with advice for a run (a search, which has no
# --workers, restates it: lkswarm.app.capacity_run.search_wide).
GENERATOR_WARNING_PREFIXES = (
    "scheduler lateness p99",
    "event-loop lag p99",
    "the event loop stalled",
    "media thread lag p99",
)
LATENESS_ADVICE = " Lower --rate or spread the load over more processes."
SPREAD_ADVICE = " Spread the load over more generator processes."


def _access_warnings(config: RunConfig, failures: dict[str, int]) -> list[str]:
    """How we reached the server, where every reader of the report should see it."""
    warnings = [INSECURE_WARNING] if config.insecure else []  # an explicit choice, but one to show
    if failures.get("http_401"):
        # livekit-server's words ("token signature is invalid", "invalid API key") do not say which of ours.
        warnings.append(
            "joins were refused as unauthorised (HTTP 401, participants.failures.http_401): the API key and "
            "secret we signed tokens with (LIVEKIT_API_KEY / LIVEKIT_API_SECRET, or --api-key / --api-secret) "
            "are not the server's"
        )
    return warnings


def build_report(
    record: RunRecord,
    server: EmbeddedServerUse | None = None,
    *,
    server_metrics: dict[str, Any] | None = None,
    udp_rcvbuf_errors: int | None = None,
) -> Report:
    """The report of one generator process's run (``lkswarm.report/1``)."""
    config = record.config
    media_totals = next((t for t in record.tiers if isinstance(t, MediaTotals)), None)
    probe_totals = next((t for t in record.tiers if isinstance(t, ProbeTotals)), None)
    outcomes, failures, left = _outcome_counts(record)
    latency = record.metrics.latency_report()
    lateness = summarize(record.metrics.lateness)
    loop_lag = summarize(record.metrics.loop_lag)
    fd_limit = record.fd_limit
    room_check = record.room_check
    counters = record.counters
    warnings: list[str] = []
    notes: list[str] = []
    valid = True
    warnings.extend(_access_warnings(config, failures))
    if lateness["p99"] > MAX_LATENESS_P99_MS:
        valid = False
        warnings.append(
            f"scheduler lateness p99 {lateness['p99']:.1f} ms > {MAX_LATENESS_P99_MS:.0f} ms: the generator was "
            "saturated; latencies include its own queueing." + LATENESS_ADVICE
        )
    if loop_lag["p99"] > MAX_LOOP_LAG_P99_MS and loop_lag["count"] >= MIN_LOOP_LAG_SAMPLES:
        valid = False
        warnings.append(
            f"event-loop lag p99 {loop_lag['p99']:.1f} ms > {MAX_LOOP_LAG_P99_MS:.0f} ms: the generator was "
            "saturated; its latency figures are not trustworthy."
        )
    elif loop_lag["max"] >= MAX_LOOP_STALL_MS:
        valid = False
        warnings.append(
            f"the event loop stalled for {loop_lag['max'] / 1000:.1f} s once (> {MAX_LOOP_STALL_MS / 1000:.0f} s): "
            "the generator was paused or starved of CPU; participants that failed around then (ping_timeout) may "
            "have failed for its silence, not the server's."
        )
    media_lag = summarize(media_totals.timer_lag) if media_totals is not None else None
    if media_lag is not None and media_lag["p99"] > MAX_MEDIA_LAG_P99_MS:
        valid = False
        warnings.append(
            f"media thread lag p99 {media_lag['p99']:.1f} ms > {MAX_MEDIA_LAG_P99_MS:.0f} ms: the generator's "
            "media tier was saturated; media was sent and received late, so jitter and loss figures include "
            "the generator's own delay." + SPREAD_ADVICE
        )
    if not record.open_plan and (unstarted := unstarted_note(config)):  # a search's plan is not its config's
        warnings.append(unstarted)
    fds_needed = record.scheduled * (1 if config.signal_only else 3) + 64
    if fds_needed > fd_limit:
        warnings.append(
            f"the open-file limit ({fd_limit}) is below what {record.scheduled} participants need "
            f"(about {fds_needed}); raise `ulimit -n` (hard limit) or failures will show as connect_failed."
        )
    if left.get("JOIN_FAILURE"):
        notes.append(EVICTION_NOTE.format(count=left["JOIN_FAILURE"]))
    warnings += _server_action_warnings(record, left)
    if media_totals is not None and (unlisted := media_totals.all_rows_not_listed):
        notes.append(
            f"tracks.csv and data.csv list the rows of the first participants that left before the end; {unlisted} "
            "more rows of later leavers are counted in every total but not listed (media.rows_not_listed), so that "
            "a long run with churn keeps its memory bounded"
        )
    if media_totals is not None and media_totals.hub_io_fallback:
        notes.append(IO_FALLBACK_NOTE.format(reason=media_totals.hub_io_fallback))
    notes += _end_notes(record, config)
    if room_check.get("error"):
        warnings.append(f"the room check at the end could not run: {room_check['error']}")
    if room_check.get("mismatched"):
        warnings.append(
            f"{room_check['mismatched']} participant(s) saw a room different from ListParticipants at the end"
        )
    for totals in record.tiers:
        warnings.extend(totals.warnings())
    machine = machine_section(record, server)
    if udp_rcvbuf_errors is not None:
        machine["udp_rcvbuf_errors"] = udp_rcvbuf_errors
    if not valid and (warning := _machine_warning(machine)) is not None:
        warnings.append(warning)
    media_report = (media_totals or MediaTotals()).report()
    if valid and (warning := loss_at_server_warning(media_report, server_metrics or {}, udp_rcvbuf_errors)):
        warnings.append(warning)
    tally = record.tally
    report = assemble_report(
        config=config,
        started_at=record.started_at,
        duration_s=round(record.duration_s, 3),
        participants=participants_section(
            scheduled=record.scheduled,
            started=record.started,
            joined=tally.joined,
            active=counters["active"],
            active_at_end=counters["active_at_end"],
            alive_at_end=record.alive_at_end,
            outcomes=outcomes,
            failures=failures,
            left_reasons=left,
            failure_details={str(outcome): detail for outcome, detail in tally.failure_details.items()},
            ping_rtt_participants=len(tally.pinged),
            departed=record.departed,
        ),
        latency_ms=latency,
        media=media_report,
        probes=probe_totals.report() if probe_totals is not None else {},
        signal=_signal(record),
        room_check=room_check,
        generator=_generator(record, loop_lag, media_lag, lateness, valid),
        warnings=warnings,
        notes=notes,
        histograms=_encoded_histograms(record, media_totals),
        timeline=record.timeline,
        rooms=room_table(record),
        failed_participants=[cast(FailedRow, row.to_dict()) for row in tally.failed_rows],
    )
    if media_totals is not None and (
        config.data_publishers or config.data_tracks or media_totals.data.heard_anything()
    ):
        report["data"] = media_totals.data.report(latency["data_e2e"], latency["data_track_e2e"], dict(record.counters))
    report["machine"] = cast(Machine, machine)
    if server_metrics is not None:
        report["server"] = server_metrics
        if config.server_metrics and server_metrics.get("available") is False:
            shown = safe_url(config.server_metrics)
            reason = str(server_metrics.get("reason")).replace(config.server_metrics, shown)
            warnings.append(
                f"the server's metrics at {shown} could not be read ({reason}): the report has no server-side "
                "loss, RTT or quality"
            )
    if record.interrupted is not None:
        report["interrupted"] = Interrupted(signal=record.interrupted["signal"], at_s=record.interrupted["at_s"])
    return report
