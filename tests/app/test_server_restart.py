"""A server that restarts mid-run: participants come back (resume, then the fresh join the new server asks
for, with backoff), media flows again, and the time back is measured (latency_ms.recovery)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from helpers import LKSWARM, assert_outcomes_reconcile
from lkswarm.app.server import LocalServer
from lkswarm.auth import Credentials

pytestmark = pytest.mark.integration


def test_participants_come_back_after_a_server_restart(credentials: Credentials, tmp_path: Path) -> None:
    server = LocalServer(credentials)
    server.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env.update(LIVEKIT_API_KEY=credentials.api_key, LIVEKIT_API_SECRET=credentials.api_secret)
    args = ["--url", server.url, "--rooms", "2", "--participants", "10", "--audio-publishers", "1"]
    args += ["--rate", "20", "--duration", "30s", "--resume-on-disconnect", "--no-verify-rooms"]
    process = subprocess.Popen(
        [*LKSWARM, "run", *args, "--json", str(tmp_path / "r.json"), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    restarted: LocalServer | None = None
    try:
        time.sleep(12.0)
        server.kill()
        time.sleep(1.0)
        restarted = LocalServer(credentials, port=server.port, udp_port=server.udp_port)
        restarted.start()
        _, stderr = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
        server.stop()
        if restarted is not None:
            restarted.stop()
    report = json.loads((tmp_path / "r.json").read_text())
    assert_outcomes_reconcile(report)
    p, signal_ = report["participants"], report["signal"]
    assert p["alive_at_end"] >= 18 and p["active_at_end"] >= 18, (p["outcomes"], p["failure_details"], stderr)
    assert signal_["reconnect_episodes"] >= 20 and signal_["reconnects_recovered"] >= 18, signal_
    recovery = report["latency_ms"]["recovery"]
    assert recovery["count"] >= 18 and recovery["p50"] < 15_000, recovery
    assert report["media"]["packets_received"] > 0
