"""`lkswarm run --workers N`: several generator processes, one merged report (lkswarm.app.workers)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import re
import sys
import threading
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from helpers import assert_outcomes_reconcile, run_cli
from lkswarm.app import workers as workers_module
from lkswarm.app.runner import build_engine
from lkswarm.app.server import LocalServer, free_port
from lkswarm.app.worker_job import run_worker_job
from lkswarm.app.workers import check_workers, crashed_report, parse_workers, run_workers, unstarted_report
from lkswarm.auth import Credentials
from lkswarm.config import RunConfig
from lkswarm.engine.plan import build_plan, worker_plan
from lkswarm.engine.record import MAX_FAILED_ROWS
from lkswarm.engine.timeline import Snapshot, combine_snapshots, snapshot_from_dict
from lkswarm.errors import ConfigError
from lkswarm.metrics import PhaseMetrics
from lkswarm.observe.prometheus import (
    Exposition,
    combine_expositions,
    exposition_from_dict,
    exposition_to_dict,
    phase_buckets,
    render_metrics,
)
from lkswarm.report.csv_tables import write_csv_tables
from lkswarm.report.merge import merge_reports


def test_worker_slices_are_the_single_process_plan_split_by_room(credentials: Credentials) -> None:
    config = RunConfig(rooms=5, participants=7, rate=50, churn_rate=2, duration_s=20, seed=3)
    whole = build_plan(config)
    slices = [build_engine(config, credentials, "ws://127.0.0.1:1", worker=(k, 3)).plan for k in range(3)]
    assert sorted((a for s in slices for a in s), key=lambda a: a.index) == whole
    for k, part in enumerate(slices):
        assert part and {a.room_index % 3 for a in part} == {k}, "a room never spans two workers"


def test_a_run_left_to_chance_is_pinned_so_every_process_builds_one_plan() -> None:
    """Without --seed each worker drew its own Poisson plan (199, 200, 200 arrivals from one configuration)."""
    config = RunConfig(rooms=4, participants=50, rate=20, arrival="poisson", churn_rate=1, duration_s=20)
    pinned = config.pinned()
    assert pinned.seed is not None and pinned.run_tag and pinned.pinned() is pinned
    assert build_plan(pinned) == build_plan(pinned)  # the parent's, a worker's, the probes'
    given = config.replace(seed=7, run_tag="abc")
    assert given.pinned() is given, "a seed and tag given are kept"


def test_workers_option_is_checked_before_anything_starts() -> None:
    assert parse_workers(None, 4) == 1 and parse_workers("3", 4) == 3
    assert 1 <= parse_workers("auto", 2) <= 2
    with pytest.raises(ConfigError, match="number or 'auto'"):
        parse_workers("many", 4)
    with pytest.raises(ConfigError, match="at least as many rooms"):
        check_workers(RunConfig(rooms=2), 3)
    with pytest.raises(ConfigError, match="at least 1"):
        check_workers(RunConfig(rooms=2), 0)
    with pytest.raises(ConfigError, match="single generator process"):
        check_workers(RunConfig(rooms=2, probes=1, probe_impair="loss=1%"), 2)
    check_workers(RunConfig(rooms=2, probes=1, probe_impair="loss=1%"), 1)  # one process: impairment is fine


def test_the_live_view_combines_the_workers_latest_samples() -> None:
    a = Snapshot(t_s=3.0, planned=10, started=8, joined=7, active=6, alive=7, failed=1, join_count=4)
    a.join_p50_ms, a.join_p99_ms, a.loop_lag_p99_ms, a.cpu_percent = 10.0, 40.0, 2.0, 30.0
    a.rolling_ms, a.failures = {"join_response": (4, 10.0, 40.0)}, {"join_timeout": 1}
    b = Snapshot(t_s=3.1, planned=5, started=5, joined=5, active=5, alive=5, join_count=1, invalid_reason="lag")
    b.join_p50_ms, b.join_p99_ms, b.loop_lag_p99_ms, b.cpu_percent = 20.0, 20.0, 9.0, 25.0
    b.rolling_ms, b.failures = {"join_response": (1, 20.0, 20.0), "active": (1, 5.0, 5.0)}, {"join_timeout": 2}
    both = combine_snapshots([a, b])
    assert (both.planned, both.started, both.joined, both.active, both.failed) == (15, 13, 12, 11, 1)
    assert both.t_s == 3.1 and both.cpu_percent == 55.0 and both.loop_lag_p99_ms == 9.0
    assert both.join_p50_ms == 12.0 and both.join_p99_ms == 40.0  # weighted p50, worst p99
    assert both.rolling_ms == {"join_response": (5, 12.0, 40.0), "active": (1, 5.0, 5.0)}
    assert both.failures == {"join_timeout": 3} and both.invalid_reason == "lag"
    assert combine_snapshots([]) == Snapshot()
    # A sample survives the trip through a worker's stdout as JSON.
    assert snapshot_from_dict({**json.loads(json.dumps(dataclasses.asdict(a))), "future_key": 1}) == a


def test_the_internal_worker_command_rejects_a_bad_job_in_one_line(tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text('{"worker": [0, 1], "config": {"rooms": -1}}')
    assert run_worker_job(job) == 2
    assert run_worker_job(tmp_path / "missing.json") == 2


def test_a_crashed_workers_participants_are_each_counted_as_failed(tmp_path: Path) -> None:
    config = RunConfig(rooms=3, participants=4, duration_s=10, run_tag="t")
    detail = "worker 1 (pid 42) crashed (exit status -9): boom"
    report = crashed_report(config, 1, 2, detail, datetime.now(UTC), at_s=4.25)
    merged = merge_reports([report])
    assert_outcomes_reconcile(merged)
    p = merged["participants"]
    assert p["scheduled"] == 4 and p["outcomes"]["failed"] == 4  # worker 1 of 2 has room 1 only
    assert p["failure_details"] == {"failed:worker_crashed": detail}
    assert [row["room"] for row in merged["rooms"]] == ["lkswarm-t-1"]
    assert "worker 1 of 2 ended without a report" in merged["warnings"][0]
    # Each is listed by name, as the plan gave them to worker 1, and so in failures.csv.
    owned = sorted(config.identity(a.index) for a in worker_plan(config, (1, 2)))
    rows = merged["failed_participants"]
    assert sorted(row["identity"] for row in rows) == owned and len(owned) == 4
    assert all(row["room"] == "lkswarm-t-1" and row["outcome"] == "failed:worker_crashed" for row in rows)
    assert all(row["detail"] == detail and row["at_s"] == 4.25 for row in rows)
    write_csv_tables(merged, tmp_path)
    with (tmp_path / "failures.csv").open(newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert sorted(row["identity"] for row in csv_rows) == owned
    assert {(row["room"], row["detail"], row["count"]) for row in csv_rows} == {("lkswarm-t-1", detail, "1")}


def test_a_crashed_workers_listed_participants_are_capped_as_a_workers_own() -> None:
    config = RunConfig(rooms=1, participants=MAX_FAILED_ROWS + 5, duration_s=10, rate=1000, run_tag="t")
    report = crashed_report(config, 0, 1, "worker 0 (pid 1) hung: no sample for 6 s", datetime.now(UTC))
    assert report["participants"]["outcomes"]["failed"] == MAX_FAILED_ROWS + 5
    assert len(report["failed_participants"]) == MAX_FAILED_ROWS
    assert report["failed_participants"][0]["at_s"] == 0.0


def test_an_unstarted_workers_participants_are_not_listed_as_failed() -> None:
    config = RunConfig(rooms=2, participants=2, duration_s=10, run_tag="t")
    report = unstarted_report(config, 0, 2, datetime.now(UTC))
    assert report["failed_participants"] == [] and report["participants"]["outcomes"]["not_started"] == 2


def test_workers_run_as_one_report_against_the_real_server(
    livekit_server: LocalServer, credentials: Credentials, tmp_path: Path
) -> None:
    args = ["--url", livekit_server.url, "--workers", "2", "--rooms", "3", "--participants", "4"]
    args += ["--audio-publishers", "1", "--video-publishers", "1", "--duration", "12s", "--rate", "20"]
    args += ["--threshold", "failed==0", "--threshold", "active_at_end==12"]
    code, report, stderr = run_cli(args, credentials, tmp_path, timeout_s=180)
    p = report["participants"]
    assert code == 0, (stderr, p, report["warnings"])
    assert_outcomes_reconcile(report)
    assert (p["scheduled"], p["outcomes"]["completed"], p["active_at_end"]) == (12, 12, 12)
    assert report["passed"] and len(report["thresholds"]) == 2
    summaries = report["workers"]
    assert [w["index"] for w in summaries] == [0, 1] and len({w["pid"] for w in summaries}) == 2
    assert [w["scheduled"] for w in summaries] == [8, 4]  # rooms 0 and 2, room 1
    assert not any(w["crashed"] for w in summaries)
    assert len(report["rooms"]) == 3 and report["room_check"]["matched"] == 12
    media = report["media"]
    assert media["tracks_received"] == 3 * (4 * 2 - 2) and media["tracks_missing"] == 0
    # One time origin: both workers' samples add up, sample by sample, to everyone.
    timeline = report["timeline"]
    assert timeline["joined"][-1] == 12 and sum(timeline["join_count"]) == 12
    assert report["notes"] == [], "every histogram merges exactly"
    assert report["latency_ms"]["active"]["count"] == 12
    # Against --url without --server-metrics: the server section says why it is empty, as one process's does.
    assert report["server"] == {"available": False, "reason": "no --server-metrics URL"}, report.get("server")
    assert report["machine"]["generator_cpu_s"] == round(report["generator"]["cpu_s"], 3), report["machine"]


@pytest.mark.integration  # the embedded livekit-server (no fixture marks it)
def test_workers_against_the_embedded_server_report_its_metrics_and_cpu(
    credentials: Credentials, tmp_path: Path
) -> None:
    """The parent owns the embedded server: the workers' reports had no server or machine section, and the merged
    report had neither (no server line in the summary, no server-side loss, no busy share)."""
    args = ["--workers", "2", "--rooms", "2", "--participants", "3", "--audio-publishers", "1"]
    code, report, stderr = run_cli([*args, "--duration", "8s", "--rate", "20"], credentials, tmp_path)
    assert code == 0, (stderr, report["warnings"])
    server = report["server"]
    assert server["available"] is True and server["packets_in"] > 100 and server["packets_out"] > 200, server
    machine = report["machine"]
    assert machine["embedded_server_cpu_s"] > 0 and 0 < machine["busy_share"] <= 1.5, machine
    assert machine["generator_cpu_s"] == round(report["generator"]["cpu_s"], 3)


def test_a_worker_that_dies_is_reported_and_its_participants_counted(
    livekit_server: LocalServer, credentials: Credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_command = workers_module.worker_command

    def dying_second_worker(job_path: Path) -> list[str]:
        if job_path.name.startswith("worker-1."):
            # It even prints the secret it was given: the report must not.
            code = "import os,sys; sys.stderr.write('boom ' + os.environ['LIVEKIT_API_SECRET'] + '\\n'); sys.exit(3)"
            return [sys.executable, "-c", code]
        return real_command(job_path)

    monkeypatch.setattr(workers_module, "worker_command", dying_second_worker)
    config = RunConfig(url=livekit_server.url, rooms=2, participants=3, duration_s=6, rate=20, verify_rooms=False)
    samples: list[Snapshot] = []
    report = run_workers(config, credentials, 2, on_sample=samples.append).report
    # The live view went on with the surviving worker's samples.
    assert len(samples) >= 4 and samples[-1].planned == 3 and samples[-1].joined == 3
    assert "join_response" in samples[-1].rolling_ms
    assert_outcomes_reconcile(report)
    p = report["participants"]
    assert p["scheduled"] == 6 and p["outcomes"]["completed"] == 3
    assert p["failures"] == {"worker_crashed": 3}
    detail = p["failure_details"]["failed:worker_crashed"]
    assert re.match(r"worker 1 \(pid \d+\) never got ready: boom", detail), detail
    assert credentials.api_secret not in str(report)
    crashed = [row for row in report["failed_participants"] if row["outcome"] == "failed:worker_crashed"]
    tagged = RunConfig(**report["config"])  # with the run's run_tag
    owned = sorted(tagged.identity(a.index) for a in worker_plan(tagged, (1, 2)))
    assert sorted(row["identity"] for row in crashed) == owned, report["failed_participants"]
    assert all(row["room"] == tagged.room_name(1) and row["detail"] == detail for row in crashed)
    assert [w["crashed"] for w in report["workers"]] == [False, True]
    assert report["generator"]["valid"] is False
    # The stand-in is no input of its own: no note that the configurations differ or that a timeline is missing.
    assert not [n for n in report["notes"] if "configurations" in n or "timeline" in n], report["notes"]


def test_the_parent_serves_the_sum_of_the_workers_prometheus_figures() -> None:
    def worker(joined: int, outcomes: dict[str, int], join_ms: list[int]) -> Exposition:
        metrics = PhaseMetrics()
        for value_ms in join_ms:
            metrics.record("join_response", value_ms)
        snap = Snapshot(planned=joined, started=joined, joined=joined, alive=joined, cpu_percent=40.0)
        snap.loop_lag_p99_ms = 2.0 * joined
        exposition = Exposition(snap, outcomes, {"join_response": phase_buckets(metrics, "join_response")})
        # Each worker's figures travel to the parent on its sample line, as JSON.
        line = json.loads(json.dumps({**dataclasses.asdict(snap), "exposition": exposition_to_dict(exposition)}))
        return exposition_from_dict(snapshot_from_dict(line), line["exposition"])

    first, second = worker(3, {"completed": 1}, [2, 30, 700]), worker(2, {"completed": 1, "failed": 1}, [4])
    both = combine_expositions([first, second])
    body = render_metrics(both)
    for line in (
        "lkswarm_participants_joined_total 5",
        "lkswarm_generator_processes 2",
        "lkswarm_generator_cpu_percent 80",
        "lkswarm_loop_lag_p99_seconds 0.006",  # the worst process's
        'lkswarm_outcomes_total{outcome="completed"} 2',
        'lkswarm_outcomes_total{outcome="failed"} 1',
        'lkswarm_phase_latency_seconds_bucket{phase="join_response",le="0.0025"} 1',
        'lkswarm_phase_latency_seconds_bucket{phase="join_response",le="0.005"} 2',
        'lkswarm_phase_latency_seconds_bucket{phase="join_response",le="1.0"} 4',
        'lkswarm_phase_latency_seconds_bucket{phase="join_response",le="+Inf"} 4',
        'lkswarm_phase_latency_seconds_count{phase="join_response"} 4',
        'lkswarm_phase_latency_seconds_count{phase="active"} 0',  # a phase no worker has yet
    ):
        assert line in body.splitlines(), (line, body)
    assert render_metrics(combine_expositions([])).count("lkswarm_generator_processes 0") == 1
    with pytest.raises(ValueError, match="buckets"):
        exposition_from_dict(Snapshot(), {"outcomes": {}, "phases": {"active": [[1, 2], 2, 0.1]}})


def test_workers_serve_one_prometheus_endpoint_against_the_real_server(
    livekit_server: LocalServer, credentials: Credentials
) -> None:
    port = free_port()
    config = RunConfig(url=livekit_server.url, rooms=2, participants=3, duration_s=6, rate=20, verify_rooms=False)
    bodies: list[str] = []
    done = threading.Event()

    def scrape() -> None:
        while not done.is_set():
            url = f"http://127.0.0.1:{port}/metrics"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
                bodies.append(response.read().decode())
            done.wait(0.5)

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    try:
        report = run_workers(config, credentials, 2, prometheus=f"127.0.0.1:{port}").report
    finally:
        done.set()
        scraper.join(timeout=5)
    assert report["participants"]["outcomes"]["completed"] == 6
    whole = [b for b in bodies if "lkswarm_participants_joined_total 6" in b.splitlines()]
    assert whole, bodies[-1:] or "no scrape answered"
    assert "lkswarm_generator_processes 2" in whole[-1].splitlines()
    assert 'lkswarm_phase_latency_seconds_count{phase="join_response"} 6' in whole[-1].splitlines()
    assert credentials.api_secret not in "".join(bodies)
    with pytest.raises(OSError):  # served for the run only
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_a_share_that_ended_early_does_not_say_the_run_did() -> None:
    """A worker whose participants all ended at once (or that had none) wrote 'the run ended after 0.0 s', and the
    merge kept it for a run whose other workers held the full duration."""
    from lkswarm.app.shares import merged_result
    from lkswarm.report.build import ended_early_note
    from report_samples import synthetic_report

    config = RunConfig(url="ws://127.0.0.1:7880", rooms=2, participants=2, duration_s=12)
    early, full = synthetic_report(1, seconds=12), synthetic_report(2, seconds=12)
    early["started_at"] = full["started_at"]
    early["duration_s"], early["notes"] = 0.0, [ended_early_note(0.0, 12)]
    full["duration_s"] = 12.0
    report = merged_result(
        [early, full], config, summaries=[], target={}, interrupted=None, started=True, thresholds=None,
        track_rows=[], data_rows=[],
    ).report  # fmt: skip
    assert not [n for n in report["notes"] if n.startswith("the run ended after")], report["notes"]
    full["duration_s"], full["notes"] = 2.0, [ended_early_note(2.0, 12)]
    report = merged_result(
        [early, full], config, summaries=[], target={}, interrupted=None, started=True, thresholds=None,
        track_rows=[], data_rows=[],
    ).report  # fmt: skip
    assert [n for n in report["notes"] if n.startswith("the run ended after")] == [ended_early_note(2.0, 12)]
