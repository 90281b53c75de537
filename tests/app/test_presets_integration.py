"""Presets, scenario files, thresholds, stages, churn, the reconnect storm and Prometheus, against a real server."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import LKSWARM, assert_outcomes_reconcile, run_cli
from lkswarm.app.server import LocalServer, free_port
from lkswarm.auth import Credentials

pytestmark = pytest.mark.integration

# Each preset at a small scale (the embedded server: no --url). Flags override the preset's keys.
PRESET_RUNS = {
    "audio-room": ["--participants", "6", "--audio-publishers", "2", "--duration", "8s"],
    "livestream": ["--participants", "4", "--duration", "8s"],
    "conference": ["--participants", "3", "--duration", "10s"],
    "multi-room": ["--rooms", "3", "--participants", "3", "--duration", "6s"],
    "churn": ["--participants", "4", "--churn-rate", "2", "--duration", "8s"],
    "reconnect-storm": ["--participants", "3", "--duration", "10s", "--reconnect-storm-at", "5s"],
    # The preset has 6 publishers a room. 16 s, as 12 s once saw no speaker update under a loaded CI gate. Every
    # speech level is -18 to -29 dBov (publish.rs), well above the server's active_level of -35, whatever the seed;
    # seed 0 keeps the talk spurts' draw the same from run to run.
    "speaker-sim": ["--participants", "6", "--duration", "16s", "--seed", "0"],
    "chat": ["--participants", "5", "--duration", "8s"],
    "telemetry": ["--participants", "6", "--duration", "8s"],
}


@pytest.mark.parametrize("preset", sorted(PRESET_RUNS))
def test_preset_runs_small_against_the_embedded_server(preset: str, credentials: Credentials, tmp_path: Path) -> None:
    code, report, err = run_cli(["--preset", preset, *PRESET_RUNS[preset]], credentials, tmp_path)
    assert code == 0, (err, report["thresholds"], report["participants"])
    assert report["target"]["embedded_server"] is True
    assert report["thresholds"] and report["passed"] is True
    assert_outcomes_reconcile(report)
    p = report["participants"]
    assert p["outcomes"]["failed"] == 0 and p["joined"] == p["scheduled"]
    assert len(report["timeline"]["t_s"]) >= 5
    assert sum(row["scheduled"] for row in report["rooms"]) == p["scheduled"]
    if preset == "churn":
        assert p["departed"] >= 8 and p["scheduled"] > 4
    elif preset == "reconnect-storm":
        signal = report["signal"]
        assert signal["storm_dropped"] == 6 and signal["resumes_succeeded"] == 6
        assert report["latency_ms"]["resume"]["count"] == 6
    elif preset == "chat":
        data = report["data"]
        assert data["publishers"] == 5 and data["delivery_ratio"] == 1.0 and data["messages_received"] > 0, data
    elif preset == "telemetry":
        tracks = report["data"]["tracks"]
        assert tracks["tracks_published"] == 3 and tracks["frames_received"] > 0 and tracks["loss_ratio"] < 0.01, tracks
    elif preset == "speaker-sim":
        assert report["signal"]["speaker_updates"] > 0
    elif preset == "conference":
        media = report["media"]
        # every remote video track a subscriber saw got a tile (grid:9 has room for all)
        assert report["signal"]["track_settings"] >= media["tracks_received"] >= 2
        assert media["tracks_missing"] == 0
    elif preset in ("audio-room", "livestream"):
        assert report["media"]["packets_received"] > 0 and report["media"]["loss_ratio"] < 0.01


def test_a_rejoin_storm_starts_everyone_over(credentials: Credentials, tmp_path: Path) -> None:
    """Every participant joins afresh at once: counted as joined once, a `rejoin` latency each, new
    PeerConnections ACTIVE again, and each room's publisher republished to everyone. The preset's
    own thresholds (failed==0, reconnect.p99<5s) hold in this mode too."""
    args = ["--preset", "reconnect-storm", "--rooms", "2", "--participants", "4", "--audio-publishers", "1"]
    args += ["--duration", "18s", "--reconnect-storm-at", "6s", "--reconnect-storm-mode", "rejoin"]
    code, report, err = run_cli([*args, "--threshold", "rejoin.p99<5s"], credentials, tmp_path)
    assert code == 0, (err, report["thresholds"], report["participants"])
    checks = {t["expr"]: t for t in report["thresholds"]}
    assert set(checks) == {"failed==0", "reconnect.p99<5s", "rejoin.p99<5s"} and report["passed"] is True
    assert checks["reconnect.p99<5s"]["actual"] == checks["rejoin.p99<5s"]["actual"] > 0
    assert_outcomes_reconcile(report)
    p = report["participants"]
    assert p["scheduled"] == p["joined"] == 8 and p["outcomes"]["completed"] == 8, p
    assert p["active"] == 8 and p["active_at_end"] == 8, p
    signal = report["signal"]
    assert signal["storm_dropped"] == signal["reconnects"] == signal["rejoins_succeeded"] == 8, signal
    assert signal["resumes_attempted"] == 0, signal
    latency = report["latency_ms"]
    assert latency["rejoin"]["count"] == 8 and latency["join_response"]["count"] == 8, latency
    assert latency["active"]["count"] == 8
    media = report["media"]
    assert media["tracks_missing"] == 0 and media["packets_received"] > 0 and media["loss_ratio"] < 0.01, media
    # each view holds every participant under its current sid: none is kept under a replaced one
    assert report["room_check"]["matched"] == 8, report["room_check"]


def test_a_failed_threshold_exits_99(credentials: Credentials, livekit_server: LocalServer, tmp_path: Path) -> None:
    args = ["--url", livekit_server.url, "--rooms", "1", "--participants", "2", "--duration", "3s", "--signal-only"]
    code, report, _ = run_cli(
        [*args, "--threshold", "join_response.p99<0.001ms", "--threshold", "failed==0"], credentials, tmp_path
    )
    assert code == 99
    assert [r["passed"] for r in report["thresholds"]] == [False, True]
    assert report["passed"] is False


def test_stages_ramp_up_hold_and_down(credentials: Credentials, livekit_server: LocalServer, tmp_path: Path) -> None:
    scenario = tmp_path / "ramp.toml"
    scenario.write_text(
        'name = "ramp"\ndescription = "up, hold, down"\nrooms = 2\nsignal_only = true\n'
        'thresholds = ["failed==0", "departed==4"]\n'
        '[[stages]]\nduration = "3s"\ntarget = 6\n'
        '[[stages]]\nduration = "3s"\ntarget = 6\n'
        '[[stages]]\nduration = "2s"\ntarget = 2\n'
    )
    code, report, err = run_cli([str(scenario), "--url", livekit_server.url], credentials, tmp_path)
    assert code == 0, err
    p = report["participants"]
    assert p["scheduled"] == 6 and p["departed"] == 4 and p["alive_at_end"] == 2
    assert p["outcomes"]["completed"] == 6
    alive = report["timeline"]["alive"]
    assert max(alive) == 6 and alive[-1] == 2


def test_prometheus_serves_live_metrics(credentials: Credentials, livekit_server: LocalServer, tmp_path: Path) -> None:
    port = free_port()
    env = {"LIVEKIT_API_KEY": credentials.api_key, "LIVEKIT_API_SECRET": credentials.api_secret, "PATH": "/usr/bin"}
    process = subprocess.Popen(
        [
            *LKSWARM,
            "run",
            "--url",
            livekit_server.url,
            "--rooms",
            "1",
            "--participants",
            "3",
            "--duration",
            "6s",
            "--prometheus",
            f"127.0.0.1:{port}",
            "--quiet",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    body = ""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                body = response.read().decode()
            if "lkswarm_participants_joined_total 3" in body:
                break
        except OSError:
            pass
        time.sleep(0.5)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "lkswarm_participants_joined_total 3" in body, body
    assert 'lkswarm_phase_latency_seconds_bucket{phase="join_response",le="+Inf"} 3' in body
    assert "# TYPE lkswarm_phase_latency_seconds histogram" in body
    assert credentials.api_secret not in body


def test_prometheus_shows_data_latency_while_the_run_goes_on(
    credentials: Credentials, livekit_server: LocalServer
) -> None:
    """The media thread keeps the data latencies: the scrape showed data_e2e and data_track_e2e empty until the end,
    so an alert on them could never fire."""
    port = free_port()
    env = {"LIVEKIT_API_KEY": credentials.api_key, "LIVEKIT_API_SECRET": credentials.api_secret, "PATH": "/usr/bin"}
    args = ["--url", livekit_server.url, "--rooms", "1", "--participants", "3", "--duration", "14s", "--quiet"]
    data = ["--data-publishers", "1", "--data-rate", "10", "--data-tracks", "1", "--data-track-rate", "20"]
    process = subprocess.Popen(
        [*LKSWARM, "run", *args, *data, "--prometheus", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    counts: dict[str, int] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None and not (counts and min(counts.values()) > 0):
        time.sleep(0.5)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                body = response.read().decode()
        except OSError:
            continue
        for phase in ("data_e2e", "data_track_e2e"):
            line = f'lkswarm_phase_latency_seconds_count{{phase="{phase}"}} '
            counts[phase] = next((int(float(x.split()[-1])) for x in body.splitlines() if x.startswith(line)), 0)
    still_running = process.poll() is None
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert still_running and counts["data_e2e"] > 0 and counts["data_track_e2e"] > 0, counts


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "wss://example.livekit.cloud", "--rooms", "3", "--participants", "20"], "--i-have-permission"),
        (["--threshold", "latency<5"], "unknown key"),
        (["--preset", "nope"], "unknown preset"),
        (["--layout", "mosaic"], "layout"),
        (["--rooms", "two"], "--rooms"),
        (["--no-such-flag"], "No such option"),
        (["--num-per-second", "5"], "that is lk's option: --rate is the join rate"),  # an lk user's habit, answered
    ],
)
def test_usage_errors_are_one_line_with_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    out = subprocess.run([*LKSWARM, "run", *args], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr


def test_bad_scenario_file_names_the_key(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text('rooms = 2\n[[stages]]\nduration = "soon"\ntarget = 4\n')
    out = subprocess.run([*LKSWARM, "run", str(scenario)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "bad.toml: stages.0.duration" in out.stderr and out.stderr.strip().count("\n") == 0
