"""The command line as a user runs it: real processes, real server, no tracebacks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lkswarm import __version__
from lkswarm.app.server import LocalServer, free_port
from lkswarm.auth import Credentials
from report_samples import synthetic_report

LKSWARM = [sys.executable, "-m", "lkswarm"]
ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env.update(extra)
    return env


def test_version() -> None:
    out = subprocess.run([*LKSWARM, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"lkswarm {__version__}"


def test_help_lists_commands() -> None:
    out = subprocess.run([*LKSWARM, "--help"], capture_output=True, text=True, check=True)
    assert "server" in out.stdout and "run" in out.stdout


@pytest.mark.integration
def test_server_command_prints_url_and_key_not_secret_and_stops_on_ctrl_c() -> None:
    env = clean_env(LIVEKIT_API_KEY="clikey", LIVEKIT_API_SECRET="cli-secret-0123456789-0123456789")
    for _attempt in range(3):  # the ports are the test's choice, free when asked: another test may take one first
        port, udp_port = free_port(), free_port(socket.SOCK_DGRAM)
        process = subprocess.Popen(
            [*LKSWARM, "server", "--port", str(port), "--udp-port", str(udp_port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert process.stdout is not None
        lines = []
        try:
            for line in process.stdout:
                lines.append(line)
                if "Ctrl-C" in line:
                    break
            process.send_signal(signal.SIGINT)
            rest, err = process.communicate(timeout=30)
        finally:
            process.kill()
        if not ("in use" in err and not lines):
            break
    output = "".join(lines) + rest
    assert f"ws://127.0.0.1:{port}" in output, (output, err, process.returncode)
    assert "clikey" in output
    assert "cli-secret" not in output + err
    assert process.returncode == 0, err
    assert "Traceback" not in err


@pytest.mark.integration
def test_server_command_on_busy_port_names_it_without_traceback() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out = subprocess.run(
            [*LKSWARM, "server", "--port", str(port), "--udp-port", str(free_port(socket.SOCK_DGRAM))],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=60,
        )
    assert out.returncode == 2  # the user's choice of port: a usage error, as every other one
    assert str(port) in out.stderr and "in use" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_run_against_url_writes_real_latencies(
    livekit_server: LocalServer, credentials: Credentials, tmp_path: Path
) -> None:
    report = tmp_path / "summary.json"
    out = subprocess.run(
        [
            *LKSWARM,
            "run",
            "--participants",
            "3",
            "--rooms",
            "2",
            "--duration",
            "3s",
            "--url",
            livekit_server.url,
            "--json",
            str(report),
        ],
        capture_output=True,
        text=True,
        env=clean_env(LIVEKIT_API_KEY=credentials.api_key, LIVEKIT_API_SECRET=credentials.api_secret),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(report.read_text())
    assert summary["schema"] == "lkswarm.report/1"
    assert summary["participants"]["joined"] == 6
    assert summary["participants"]["outcomes"]["completed"] == 6
    assert summary["latency_ms"]["join_response"]["count"] == 6
    assert 0 < summary["latency_ms"]["join_response"]["p50"] < 5000
    assert summary["signal"]["server_version"] == "1.13.5"
    assert credentials.api_secret not in out.stdout + out.stderr + report.read_text()


@pytest.mark.integration
def test_run_without_url_uses_embedded_server(tmp_path: Path) -> None:
    report = tmp_path / "summary.json"
    out = subprocess.run(
        [*LKSWARM, "run", "--rooms", "1", "--participants", "3", "--duration", "3", "--json", str(report), "--quiet"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(report.read_text())["participants"]["joined"] == 3


@pytest.mark.integration
def test_run_against_dead_server_fails_cleanly(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    out = subprocess.run(
        [
            *LKSWARM,
            "run",
            "--rooms",
            "1",
            "--participants",
            "2",
            "--url",
            f"ws://127.0.0.1:{port}",
            "--json",
            str(tmp_path / "r.json"),
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["participants"]["failures"] == {"connect_failed": 2}
    assert report["participants"]["outcomes"]["failed"] == 2


def test_missing_go_toolchain_fails_build_clearly(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [
            str(ROOT / ".ci" / "install-go-tool"),
            "livekit-server",
            "github.com/livekit/livekit-server/cmd/server@v0.0.0-test",
            "server",
            str(tmp_path / "bin" / "livekit-server"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 1
    assert "Go toolchain" in out.stderr
    assert "Traceback" not in out.stderr


def test_credentials_fixture_secret_is_long(credentials: Credentials) -> None:
    assert isinstance(credentials, Credentials) and len(credentials.api_secret) >= 32


def test_bad_options_are_one_line_errors_with_exit_2() -> None:
    bad_storm = ["--reconnect-storm-at", "5s", "--reconnect-storm-mode", "restart"]
    for args in (["--duration", "soon"], ["--duration", "-5s"], ["--arrival", "bursty"], bad_storm):
        out = subprocess.run([*LKSWARM, "run", *args], capture_output=True, text=True, env=clean_env(), timeout=60)
        assert out.returncode == 2, (args, out.stderr)
        assert "Traceback" not in out.stderr
        assert out.stderr.strip().count("\n") == 0, out.stderr


def test_quiet_still_says_in_one_line_why_a_run_failed() -> None:
    """--quiet is 'errors only': a run in which nobody joined printed nothing and exited 1."""
    out = subprocess.run(
        [*LKSWARM, "run", "--url", "ws://127.0.0.1:1", "--participants", "2", "--duration", "1s", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
    )
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 2 of 2 participants failed, 0 not started; connect_failed 2")
    assert out.stdout == ""


def test_the_quiet_error_line_names_failed_thresholds_and_nothing_for_a_clean_run() -> None:
    from lkswarm.cli.output import failure_line

    report = synthetic_report(1)
    report["thresholds"] = [
        {"expr": "join_response.p95<1ms", "key": "latency_ms.join_response.p95", "actual": 12.5, "passed": False},
        {"expr": "failed==0", "actual": 0, "passed": True},
    ]
    assert failure_line(report, 99) == "1 threshold(s) failed: join_response.p95<1ms (actual 12.5 ms)"
    assert failure_line(report, 0) is None


def test_a_thresholds_actual_value_carries_its_unit() -> None:
    """`✓ threshold join_response.p99<2s (actual 47.551)`: ms against a limit written in s."""
    from lkswarm.cli.output import threshold_actual

    def actual(key: str, value: float | None) -> str:
        return threshold_actual({"key": key, "actual": value})

    assert actual("latency_ms.join_response.p99", 47.551) == "47.551 ms"
    assert actual("latency_ms.join_response.count", 12) == "12"
    assert actual("generator.media_lag_ms.p99", 3.5) == "3.5 ms"
    assert actual("media.loss_ratio", 0.0123) == "0.0123 = 1.23 %"
    assert actual("participants.outcomes.failed", 0) == "0"
    assert actual("media.loss_ratio", None) == "no data"


def test_the_summary_has_a_data_tracks_line_and_no_empty_messages_line() -> None:
    """A data-track run printed 'data: sent 0, received 0 of 0 expected' and nothing of its 4,896 frames."""
    from lkswarm.cli.output import data_lines

    latency = {"count": 4896, "p50": 0.415, "p99": 1.439}
    tracks = {"tracks_published": 2, "frames_sent": 992, "frames_received": 4896, "frames_expected": 4896}
    tracks.update(delivery_ratio=1.0, latency_ms=latency, publish_failures=0, send_blocked=3)
    nothing_sent = {"publishers": 0, "messages_received": 0, "foreign_messages": 0, "rpc": {"requests": 0}}
    assert data_lines({**nothing_sent, "tracks": tracks}) == [
        "data tracks: 2 published, sent 992 frames, received 4,896 of 4,896 expected (delivery 100.00 %), "
        "e2e p50 0.4 / p99 1.4 ms, 3 not sent (buffer full)"
    ]
    messages = {"publishers": 2, "messages_sent": 10, "messages_received": 20, "messages_expected": 20}
    messages.update(delivery_ratio=1.0, duplicates=0, out_of_order=0, latency_ms={"count": 0})
    rpc = {"requests": 12, "answered": 11, "refused": 1, "no_channel": 0}
    lines = data_lines({**messages, "tracks": {"tracks_published": 0, "frames_received": 0}, "rpc": rpc})
    assert lines == [
        "data: sent 10, received 20 of 20 expected (delivery 100.00 %), 0 duplicates, 0 out of order",
        "rpc: 12 requests to our participants (answered 11, refused 1)",
    ]
    assert data_lines(nothing_sent) == []


def test_the_summary_says_what_the_server_counted() -> None:
    """The report had the server's CPU, loss, RTT and quality; the printed summary showed none of it."""
    from lkswarm.cli.output import server_line

    server = {"available": True, "cpu_s": 12.3, "cores": 0.41, "loss_in_ratio": 0.0, "loss_out_ratio": 0.0125}
    server.update(rtt_out_ms_mean=1.25, quality_score_mean=4.41)
    line = server_line({"server": server})
    assert line == (
        "server (its own metrics): cpu 12.3 s (0.41 cores), loss in 0.00 %, out 1.25 %, rtt to subscribers 1.2 ms, "
        "quality score 4.41 (MOS, best 4.5)"
    )
    assert server_line({"server": {"available": False, "reason": "refused"}}) is None
    assert server_line({}) is None
