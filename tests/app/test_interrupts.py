"""A stopped run keeps its report: a first SIGINT/SIGTERM/SIGHUP ends it as its duration would, a second
Ctrl-C skips the grace periods, and outcomes are decided at the run's end, never after it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import LKSWARM, assert_outcomes_reconcile
from lkswarm.app.server import LocalServer
from lkswarm.auth import Credentials

pytestmark = pytest.mark.integration  # the real livekit-server throughout


def start_run(args: list[str], credentials: Credentials, tmp_path: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env.update(LIVEKIT_API_KEY=credentials.api_key, LIVEKIT_API_SECRET=credentials.api_secret)
    outputs = ["--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "csv"), "--html", str(tmp_path / "r.html")]
    return subprocess.Popen(
        [*LKSWARM, "run", *args, *outputs], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def wait_until_joined(tmp_path: Path, process: subprocess.Popen[str], seconds: float) -> None:
    """Lets the run get going (participants joined, media flowing) before the signal."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_signal_ends_the_run_and_every_output_is_written(
    signum: signal.Signals, code: int, livekit_server: LocalServer, credentials: Credentials, tmp_path: Path
) -> None:
    args = ["--url", livekit_server.url, "--rooms", "2", "--participants", "15", "--audio-publishers", "1"]
    started_at = time.monotonic()
    process = start_run([*args, "--rate", "5", "--duration", "30s"], credentials, tmp_path)
    wait_until_joined(tmp_path, process, 4.0)  # 30 arrivals at 5/s: some still to come when the signal lands
    sent_at = time.monotonic()
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=20)
    took_s = time.monotonic() - sent_at
    assert process.returncode == code, stderr
    assert took_s < 8.0, f"{took_s:.1f} s from {signum.name} to exit"
    report: dict[str, Any] = json.loads((tmp_path / "r.json").read_text())
    # `at_s` counts from the engine's start, which follows the CLI's start-up (a second or more on a
    # loaded machine): after it, and before the process ended.
    lived_s = time.monotonic() - started_at
    assert report["interrupted"]["signal"] == signum.name and 0.0 < report["interrupted"]["at_s"] < lived_s
    assert_outcomes_reconcile(report)
    p = report["participants"]
    assert p["outcomes"]["not_started"] > 0 and p["outcomes"]["completed"] > 0, p["outcomes"]
    assert set(p["failures"]) <= {"interrupted"}, p["failure_details"]
    assert (tmp_path / "r.html").stat().st_size > 0 and (tmp_path / "csv" / "phases.csv").exists()
    assert "outcomes: completed" in stdout and f"stopped by {signum.name}" in stdout


def test_a_second_ctrl_c_leaves_at_once_with_the_report(
    livekit_server: LocalServer, credentials: Credentials, tmp_path: Path
) -> None:
    args = ["--url", livekit_server.url, "--rooms", "1", "--participants", "6", "--video-publishers", "1"]
    process = start_run([*args, "--duration", "30s"], credentials, tmp_path)
    wait_until_joined(tmp_path, process, 3.0)
    sent_at = time.monotonic()
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 130, stderr
    assert time.monotonic() - sent_at < 5.0
    assert "again: leaving at once" in stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert_outcomes_reconcile(report)
    assert report["interrupted"]["signal"] == "SIGINT"


def test_outcomes_are_decided_at_the_duration_not_after_it(credentials: Credentials, tmp_path: Path) -> None:
    """A server that stops answering just before the end must not fail the participants alive then: the room
    check that follows fails, and says so, but every outcome was decided at the duration."""
    server = LocalServer(credentials)
    server.start()
    try:
        args = ["--url", server.url, "--rooms", "2", "--participants", "5", "--signal-only", "--duration", "8s"]
        process = start_run(args, credentials, tmp_path)
        wait_until_joined(tmp_path, process, 7.0)
        assert server.pid is not None
        os.kill(server.pid, signal.SIGSTOP)  # the server hangs 1 s before the end
        try:
            _, stderr = process.communicate(timeout=60)
        finally:
            os.kill(server.pid, signal.SIGCONT)
    finally:
        server.stop()
    report = json.loads((tmp_path / "r.json").read_text())
    p = report["participants"]
    assert p["outcomes"]["completed"] == 10 and p["outcomes"]["failed"] == 0, (p["failure_details"], stderr)
    assert report["failed_participants"] == []
    assert report["room_check"].get("error") or report["room_check"].get("mismatched"), report["room_check"]
