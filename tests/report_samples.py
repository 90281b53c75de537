"""Synthetic lkswarm.report/1 reports (no server): real HdrHistograms, a timeline, rooms and failures."""

from __future__ import annotations

import random
from typing import Any

from hdrh.histogram import HdrHistogram

from lkswarm.engine.timeline import TIMELINE_FIELDS
from lkswarm.metrics import PHASES, new_histogram, record_ms, summarize
from lkswarm.report.build import SCHEMA

TIMELINE_SERIES = TIMELINE_FIELDS[1:]  # every series but t_s


def histogram_of(values_ms: list[float]) -> HdrHistogram:
    histogram = new_histogram()
    for value in values_ms:
        record_ms(histogram, value)
    return histogram


def synthetic_report(
    seed: int, participants: int = 40, seconds: int = 12, timeline: bool = True, started_at: str = ""
) -> dict[str, Any]:
    """A report shaped like `lkswarm run --json` writes, with random but plausible figures."""
    rng = random.Random(seed)
    samples = {phase: [rng.lognormvariate(3, 0.6) for _ in range(participants)] for phase in PHASES[:4]}
    loop_lag = histogram_of([rng.expovariate(1.0) for _ in range(200)])
    media_lag = histogram_of([rng.expovariate(2.0) for _ in range(300)])
    # Run 1 saw video tracks only, others audio as well: merge must take the union of kinds.
    kinds = ("video",) if seed == 1 else ("audio", "video")
    subscribed = {kind: histogram_of([rng.uniform(100, 900) for _ in range(10)]) for kind in kinds}
    histograms = {phase: histogram_of(values) for phase, values in samples.items()}
    failed = 2
    completed = participants - failed
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "version": "0.0.0-test",
        "config": {"url": None, "rooms": 2, "participants": participants // 2, "rate": 20.0, "run_tag": f"t{seed}"},
        "started_at": started_at or f"2025-01-01T00:00:0{seed % 10}+00:00",
        "duration_s": float(seconds),
        "participants": {
            "scheduled": participants,
            "started": participants,
            "joined": participants - 1,
            "active": completed,
            "active_at_end": completed,
            "alive_at_end": completed,
            "outcomes": {"completed": completed, "left": 0, "failed": failed, "not_started": 0},
            "failures": {"join_timeout": 1, "ice_timeout": 1},
            "left_reasons": {},
            "failure_details": {"failed:join_timeout": "no JoinResponse in 15 s <b>", "failed:ice_timeout": "30 s"},
            "ping_rtt_participants": 0,
        },
        "latency_ms": {phase: summarize(histograms.get(phase, new_histogram())) for phase in PHASES},
        "media": {
            "packets_sent": 1000 * seed,
            "bytes_sent": 100_000,
            "frames_sent": 500,
            "frames_skipped": seed,
            "packets_received": 9000,
            "bytes_received": 900_000,
            "packets_expected": 9000 + seed,
            "packets_lost": seed,
            "loss_ratio": round(seed / (9000 + seed), 6),
            "jitter_ms": summarize(histogram_of([rng.uniform(0.5, 3) for _ in range(20)])),
            "tracks_received": 20,
            "tracks_missing": 0,
            "foreign_datagrams": 0,
            "datagrams_truncated": 0,
            "keyframe_requests": 1,
            "track_subscribed_ms": {kind: summarize(h) for kind, h in subscribed.items()},
        },
        "probes": {},
        "signal": {"server_version": "1.13.5", "messages_received": {"join": participants}, "reconnects": 0},
        "room_check": {"matched": completed, "mismatched": 0},
        "generator": {
            "cpu_s": 1.5,
            "max_rss_mb": 120.0,
            "rss_start_mb": 80.0,
            "rss_ready_mb": 85.0,
            "rss_end_mb": 110.0,
            "loop_lag_ms": summarize(loop_lag),
            "media_lag_ms": summarize(media_lag),
            "lateness_ms": summarize(histogram_of([0.2, 0.4])),
            "late_starts": 0,
            "valid": True,
            "fd_limit": 1024 * (seed + 1),
        },
        "warnings": [f"warning of run {seed}"],
        "notes": ["a shared note"],
        "histograms": {
            **{phase: h.encode().decode("ascii") for phase, h in histograms.items()},
            "loop_lag": loop_lag.encode().decode("ascii"),
            "media_lag": media_lag.encode().decode("ascii"),
            **{f"track_subscribed.{kind}": h.encode().decode("ascii") for kind, h in subscribed.items()},
        },
        "rooms": [
            {
                "room": f"lkswarm-t{seed}-{i}",
                "scheduled": participants // 2,
                "joined": participants // 2 - i,
                "active_at_end": completed // 2,
                "completed": completed // 2,
                "left": 0,
                "failed": 1,
                "join_p50_ms": 20.0,
                "join_p99_ms": 60.0,
            }
            for i in range(2)
        ],
        "failed_participants": [
            {"identity": f"p3-t{seed}", "room": f"lkswarm-t{seed}-1", "outcome": "failed:join_timeout",
             "detail": "<script>alert(1)</script>", "at_s": 15.2},
            {"identity": f"p7-t{seed}", "room": f"lkswarm-t{seed}-0", "outcome": "failed:ice_timeout",
             "detail": "30 s", "at_s": 31.0},
        ],
        "thresholds": [
            {"expr": "join_response.p99<500ms", "key": "join_response.p99", "op": "<", "limit": 500.0,
             "actual": 60.0, "passed": True},
            {"expr": "failed==0", "key": "failed", "op": "==", "limit": 0, "actual": 2, "passed": False},
        ],
        "passed": False,
        "target": {"url": "wss://user:pw@example.test:7880/rtc?access_token=SECRET", "embedded_server": False},
    }  # fmt: skip
    if timeline:
        report["timeline"] = synthetic_timeline(rng, participants, seconds)
    return report


def synthetic_timeline(rng: random.Random, participants: int, seconds: int) -> dict[str, Any]:
    series: dict[str, list[Any]] = {name: [] for name in TIMELINE_SERIES}
    for second in range(1, seconds + 1):
        started = min(participants, second * 5)
        joined = max(0, started - 1)
        series["started"].append(started)
        series["joined"].append(joined)
        series["active"].append(max(0, joined - 2))
        series["failed"].append(2 if second > 6 else 0)
        series["alive"].append(max(0, joined - 1))
        series["join_count"].append(5 if started < participants else 0)  # joins within the interval
        series["join_p50_ms"].append(round(rng.uniform(15, 25), 3))
        series["join_p99_ms"].append(round(rng.uniform(40, 80), 3))
        series["media_packets_per_s"].append(round(rng.uniform(800, 1000), 1))
        series["media_loss_ratio"].append(round(rng.uniform(0, 0.01), 6))
        series["cpu_percent"].append(round(rng.uniform(10, 40), 1))
        series["loop_lag_p99_ms"].append(round(rng.uniform(0.5, 3), 3))
        series["rss_mb"].append(round(80 + second, 1))
    # Samples land a little off the second, as a real sampler's do.
    t_s = [round(s - 0.05 + rng.uniform(0, 0.004), 3) for s in range(1, seconds + 1)]
    return {"interval_s": 1.0, "t_s": t_s, **series}
