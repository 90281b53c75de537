"""The engine against the real livekit-server: scale, eviction, resume counting and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import assert_outcomes_reconcile, run_cli
from lkswarm.app.server import LocalServer
from lkswarm.auth import Credentials
from lkswarm.net.twirp import RoomService
from lkswarm.report.csv_tables import TRACK_CSV_FIELDS

LKSWARM = [sys.executable, "-m", "lkswarm"]

pytestmark = pytest.mark.integration  # the real livekit-server (or the network) throughout


def test_400_signal_participants_in_4_rooms(
    livekit_server: LocalServer, credentials: Credentials, tmp_path: Path
) -> None:
    args = ["--url", livekit_server.url, "--rooms", "4", "--participants", "100", "--rate", "100", "--duration", "30s"]
    args.append("--signal-only")  # the media tier has its own scale test (test_media_integration.py)
    code, report, stderr = run_cli(args, credentials, tmp_path)
    assert code == 0, stderr
    assert_outcomes_reconcile(report)
    p = report["participants"]
    assert p["scheduled"] == 400 and p["joined"] == 400
    assert p["outcomes"]["completed"] == 400
    assert report["latency_ms"]["join_response"]["count"] == 400
    assert report["latency_ms"]["ws_connect"]["count"] == 400
    assert p["ping_rtt_participants"] == 400
    assert report["room_check"]["participants"] == 400
    assert report["room_check"]["matched"] == 400, report["room_check"]
    assert report["generator"]["cpu_s"] > 0 and report["generator"]["max_rss_mb"] > 0
    assert report["signal"]["messages_received"]["join"] == 400


def test_signal_only_past_60s_is_left_join_failure(
    livekit_server: LocalServer, credentials: Credentials, tmp_path: Path
) -> None:
    args = ["--url", livekit_server.url, "--rooms", "1", "--participants", "2", "--duration", "72s", "--signal-only"]
    code, report, stderr = run_cli(args, credentials, tmp_path)
    assert_outcomes_reconcile(report)
    p = report["participants"]
    assert p["outcomes"]["left"] == 2, report
    assert p["left_reasons"] == {"JOIN_FAILURE": 2}
    assert p["outcomes"]["failed"] == 0
    assert any("JOIN_FAILURE" in note and "60 s" in note for note in report["notes"])
    assert code == 0, stderr  # the server's eviction is not a generator error


def test_json_frames_mode(livekit_server: LocalServer, credentials: Credentials, tmp_path: Path) -> None:
    args = ["--url", livekit_server.url, "--rooms", "1", "--participants", "3", "--duration", "7s", "--json-frames"]
    args += ["--audio-publishers", "1", "--video-publishers", "1"]  # SDP and trickle travel as protojson too
    args += ["--csv", str(tmp_path / "csv")]
    code, report, stderr = run_cli(args, credentials, tmp_path)
    assert code == 0, stderr
    assert report["participants"]["joined"] == 3
    assert report["participants"]["active_at_end"] == 3
    assert report["media"]["tracks_received"] == 4 and report["media"]["packets_received"] > 0
    rows = (tmp_path / "csv" / "tracks.csv").read_text().strip().splitlines()
    assert rows[0] == ",".join(TRACK_CSV_FIELDS) and len(rows) == 1 + 4
    assert report["media"]["tracks_by_codec"] == {"audio/opus": 2, "video/VP8": 2}
    assert report["participants"]["ping_rtt_participants"] == 3
    assert report["room_check"]["matched"] == 3


def test_wrong_secret_fails_every_participant_with_401(
    livekit_server: LocalServer, credentials: Credentials, tmp_path: Path
) -> None:
    forged = Credentials(credentials.api_key, "wrong-secret-wrong-secret-wrong-secret")
    args = ["--url", livekit_server.url, "--rooms", "1", "--participants", "3", "--duration", "3s"]
    code, report, _ = run_cli(args, forged, tmp_path)
    assert code == 1
    assert_outcomes_reconcile(report)
    assert report["participants"]["failures"] == {"http_401": 3}
    assert "invalid token" in report["participants"]["failure_details"]["failed:http_401"]
    # The server's words do not say which credential: the warning names ours.
    [warning] = [w for w in report["warnings"] if "HTTP 401" in w]
    assert warning.startswith("joins were refused as unauthorised") and "LIVEKIT_API_SECRET" in warning
    assert forged.api_secret not in str(report)


def test_unreachable_url_fails_every_participant(credentials: Credentials, tmp_path: Path) -> None:
    args = ["--url", "ws://127.0.0.1:9", "--rooms", "2", "--participants", "2", "--duration", "5s"]
    started = time.monotonic()
    code, report, _ = run_cli(args, credentials, tmp_path)
    assert code == 1
    assert_outcomes_reconcile(report)
    assert report["participants"]["failures"] == {"connect_failed": 4}
    assert time.monotonic() - started < 30


def test_server_killed_mid_run(credentials: Credentials, tmp_path: Path) -> None:
    server = LocalServer(credentials)
    server.start()
    report_path = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env.update(LIVEKIT_API_KEY=credentials.api_key, LIVEKIT_API_SECRET=credentials.api_secret)
    args = ["--url", server.url, "--rooms", "1", "--participants", "6", "--rate", "2", "--duration", "10s"]
    process = subprocess.Popen(
        [*LKSWARM, "run", *args, "--json", str(report_path), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    rooms = RoomService(server.url, credentials)
    try:
        # Kill the server once some participants have joined and others have not yet started.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listed = [p for room in rooms.list_rooms() for p in rooms.list_participants(room["name"])]
            if len(listed) >= 2:
                break
            time.sleep(0.2)
        server.kill()
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
        server.stop()
    assert process.returncode == 1
    assert "Traceback" not in stdout + stderr
    report = json.loads(report_path.read_text())
    assert_outcomes_reconcile(report)
    failures = report["participants"]["failures"]
    assert failures.get("signal_closed", 0) >= 1, failures
    assert set(failures) <= {"signal_closed", "connect_failed"}
    assert report["participants"]["outcomes"]["completed"] == 0
