"""`lkswarm run --workers N` under faults: a stop signal to the parent still gives the merged report, a second
Ctrl-C leaves at once, and a hung worker is found from its missing samples (lkswarm.app.workers)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from helpers import LKSWARM, alive_after, assert_outcomes_reconcile, descendants_when, lkswarm_env
from lkswarm.app import workers as workers_module
from lkswarm.app.server import LocalServer
from lkswarm.app.workers import HUNG_AFTER_S, run_workers
from lkswarm.auth import Credentials
from lkswarm.config import RunConfig

# Stand-ins for a worker process, for the socket-free tests: one that never gets ready, and one that starts,
# says it is alive twice, then falls silent for good (as a stopped or blocked worker does).
NEVER_READY = "import time; time.sleep(60)"
FALLS_SILENT = (
    "import os, sys, time\n"
    "os.write(1, b'ready\\n')\n"
    "sys.stdin.buffer.readline()\n"
    "for _ in range(2):\n"
    "    time.sleep(1); os.write(1, b'alive\\n')\n"
    "time.sleep(60)\n"
)


def start_run(args: list[str], credentials: Credentials, tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*LKSWARM, "run", *args, "--json", str(tmp_path / "r.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=lkswarm_env(credentials),
    )


def worker_processes(parent: subprocess.Popen[str], count: int) -> list[Any]:
    """The parent's worker processes (psutil), by index, once all ``count`` are there."""

    def workers_of(found: list[Any]) -> list[Any]:
        named = []
        for process in found:
            try:
                if "worker" in process.cmdline()[3:4]:
                    named.append(process)
            except psutil.Error:
                continue
        return sorted(named, key=lambda p: p.cmdline()[-1])  # .../worker-0.job.json, .../worker-1.job.json

    found = workers_of(descendants_when(parent.pid, lambda found: len(workers_of(found)) >= count, timeout_s=60))
    assert len(found) == count, found
    return found


def sleep_while_running(process: subprocess.Popen[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)


@pytest.mark.integration
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_stop_signal_to_the_parent_stops_every_worker_and_the_report_is_merged(
    signum: signal.Signals, code: int, credentials: Credentials, tmp_path: Path
) -> None:
    args = ["--workers", "2", "--rooms", "2", "--participants", "5", "--duration", "30s"]  # the embedded server
    started_at = time.monotonic()
    process = start_run(args, credentials, tmp_path)
    children: list[Any] = []
    try:
        children = worker_processes(process, 2)
        sleep_while_running(process, 8.0)
        children = descendants_when(process.pid, lambda _: True, timeout_s=1)  # the server too
        sent_at = time.monotonic()
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=30)
        took_s = time.monotonic() - sent_at
    finally:
        if process.poll() is None:
            process.kill()
    assert took_s < 10.0, f"{took_s:.1f} s from {signum.name} to exit"
    assert "Traceback" not in stderr, stderr
    assert process.returncode == code, stderr
    report: dict[str, Any] = json.loads((tmp_path / "r.json").read_text())
    # `at_s` counts from the engine's start, after the CLI's and the workers' start-up: after it, and
    # before the process ended.
    lived_s = time.monotonic() - started_at
    assert report["interrupted"]["signal"] == signum.name and 0.0 < report["interrupted"]["at_s"] < lived_s
    assert_outcomes_reconcile(report)  # every participant in exactly one outcome
    p = report["participants"]
    assert p["scheduled"] == 10 and p["outcomes"]["completed"] > 0, p["outcomes"]
    assert set(p["failures"]) <= {"interrupted"}, p["failure_details"]
    assert not any(w["crashed"] for w in report["workers"]), report["workers"]
    assert f"stopped by {signum.name}" in stdout
    assert alive_after(children, 1.0) == []  # workers and server, all gone with the run


@pytest.mark.integration
def test_a_second_ctrl_c_leaves_at_once_and_still_merges(
    livekit_server: LocalServer, credentials: Credentials, tmp_path: Path
) -> None:
    args = ["--url", livekit_server.url, "--workers", "2", "--rooms", "2", "--participants", "4"]
    process = start_run([*args, "--video-publishers", "1", "--duration", "30s", "--quiet"], credentials, tmp_path)
    try:
        worker_processes(process, 2)
        sleep_while_running(process, 6.0)
        sent_at = time.monotonic()
        process.send_signal(signal.SIGINT)
        time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
        took_s = time.monotonic() - sent_at
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert took_s < 6.0, f"{took_s:.1f} s from the second SIGINT to exit"
    assert "again: the workers leave at once" in stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert_outcomes_reconcile(report)
    assert report["interrupted"]["signal"] == "SIGINT"


@pytest.mark.integration
def test_a_stopped_worker_is_found_hung_and_its_participants_counted(
    livekit_server: LocalServer, credentials: Credentials, tmp_path: Path
) -> None:
    args = ["--url", livekit_server.url, "--workers", "2", "--rooms", "2", "--participants", "3"]
    started_at = time.monotonic()
    process = start_run([*args, "--duration", "15s", "--quiet"], credentials, tmp_path)
    victim: Any = None
    try:
        victim = worker_processes(process, 2)[1]
        sleep_while_running(process, 4.0)
        victim.suspend()  # SIGSTOP
        stopped_at = time.monotonic()
        _, stderr = process.communicate(timeout=60)
        took_s = time.monotonic() - stopped_at
    finally:
        if process.poll() is None:
            process.kill()
        if victim is not None and alive_after([victim], 0):
            victim.kill()
    assert took_s < 15.0 + 10.0, f"the run went on {took_s:.0f} s after a worker stopped"
    report = json.loads((tmp_path / "r.json").read_text())
    assert_outcomes_reconcile(report)
    p = report["participants"]
    assert p["failures"] == {"worker_crashed": 3}, (p["failure_details"], stderr)  # worker 1 has room 1
    assert p["outcomes"]["completed"] == 3
    detail = p["failure_details"]["failed:worker_crashed"]
    assert f"worker 1 (pid {victim.pid}) hung: no sample for" in detail, detail
    assert [w["crashed"] for w in report["workers"]] == [False, True]
    # Each of its participants is listed, by identity and room, with the reason, about when it was found hung.
    tag = report["config"]["run_tag"]
    crashed = [row for row in report["failed_participants"] if row["outcome"] == "failed:worker_crashed"]
    assert sorted(row["room"] for row in crashed) == [f"lkswarm-{tag}-1"] * 3, report["failed_participants"]
    assert len({row["identity"] for row in crashed}) == 3 and all(row["detail"] == detail for row in crashed)
    # Found hung within HUNG_AFTER_S (and a sample's slack) of the stop. `at_s` counts from the engine's
    # start, which follows the CLI's start-up, so the stop's own time bounds it from above.
    latest_s = stopped_at - started_at + HUNG_AFTER_S + 5.0
    assert all(4.0 < row["at_s"] < latest_s for row in crashed), (crashed, latest_s)


# -- socket-free: stand-in workers, no server ------------------------------------------------------------


def test_a_worker_that_falls_silent_is_killed_as_hung_within_seconds(
    credentials: Credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers_module, "worker_command", lambda _job: [sys.executable, "-c", FALLS_SILENT])
    config = RunConfig(url="ws://127.0.0.1:1", rooms=2, participants=2, duration_s=60)
    began = time.monotonic()
    report = run_workers(config, credentials, 2).report
    took_s = time.monotonic() - began
    # Silent from about 2 s after "go": killed HUNG_AFTER_S later, long before the 60 s duration.
    assert took_s < 2.0 + HUNG_AFTER_S + 3.0, took_s
    assert_outcomes_reconcile(report)
    p = report["participants"]
    assert p["failures"] == {"worker_crashed": 4}
    detail = p["failure_details"]["failed:worker_crashed"]
    assert re.fullmatch(r"worker 0 \(pid \d+\) hung: no sample for \d+ s", detail), detail
    assert [w["crashed"] for w in report["workers"]] == [True, True]
    rows, tagged = report["failed_participants"], RunConfig(**report["config"])  # with the run's run_tag
    assert sorted(row["identity"] for row in rows) == sorted(tagged.identity(i) for i in range(4)), rows
    assert {row["room"] for row in rows} == {tagged.room_name(0), tagged.room_name(1)}
    assert all(re.fullmatch(r"worker \d \(pid \d+\) hung: no sample for \d+ s", row["detail"]) for row in rows)
    assert all(2.0 + HUNG_AFTER_S - 1.0 < row["at_s"] < took_s for row in rows), rows
    assert all("hung" in warning for warning in report["warnings"]), report["warnings"]


def test_a_stop_signal_before_the_start_cancels_it(credentials: Credentials, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers_module, "worker_command", lambda _job: [sys.executable, "-c", NEVER_READY])
    config = RunConfig(url="ws://127.0.0.1:1", rooms=2, participants=3, duration_s=60)
    previous = signal.getsignal(signal.SIGTERM)
    # run_workers runs in the main thread, as in the CLI: its handler takes the signal.
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        began = time.monotonic()
        report = run_workers(config, credentials, 2).report
        took_s = time.monotonic() - began
    finally:
        timer.cancel()
    assert took_s < 5.0, took_s
    assert signal.getsignal(signal.SIGTERM) is previous, "the handlers it replaced are back"
    assert report["interrupted"] == {"signal": "SIGTERM", "at_s": 0.0}
    assert report["notes"] == ["the run was stopped by SIGTERM before its start: no participant was started"]
    assert_outcomes_reconcile(report)
    p = report["participants"]
    assert p["scheduled"] == 6 and p["outcomes"]["not_started"] == 6 and p["failures"] == {}
    assert [w["crashed"] for w in report["workers"]] == [False, False]
    assert all(w["exit_code"] == -signal.SIGKILL for w in report["workers"])  # set-up cut short
