"""`lkswarm capacity`'s usage errors: exit 2, one line, no traceback, at once and before any server starts.

Each case runs twice: as a subprocess, as `test_usage_errors.py` runs `run` (the real exit code and
stderr), and in-process, where the socket guard of ``conftest.py`` makes starting a server or opening
a socket an error of its own, and where the time to refuse excludes the interpreter's start.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from typer.testing import CliRunner

from helpers import LKSWARM
from lkswarm.capacity.slo import DEFAULT_SLOS
from lkswarm.cli import app

REFUSED_WITHIN_S = 1.0

CASES: list[tuple[list[str], str]] = [
    (["--slo", "join_response.p95>1s"], "operator '>' is not supported"),
    (["--slo", "nosuch.p95<1s"], "unknown phase 'nosuch'"),
    (["--slo", "ping_rtt.p99<250ms", "--slo", "failed_ratio<"], "--slo 'failed_ratio<'"),
    # Judged once: two limits on one key made two identical columns, headed by the second limit.
    (["--slo", "join_response.p95<1s", "--slo", "join_response.p95<500ms"], "join_response.p95 is judged once"),
    (["--width", "0"], "--width: '0' must lie strictly between 0 and 100 %"),
    (["--width", "five"], "--width: 'five' is not a ratio"),
    (["--grow", "bogus"], "--grow must be subscribers, rooms or publishers, not 'bogus'"),
    (["--start", "50", "--max", "10"], "--start 50 and --max 10 must satisfy"),
    (["--hold", "60s", "--max-hold", "30s"], "--max-hold must be at least --hold"),
    (["--hold", "0s"], "--hold must be longer than 0 s"),  # a hold of 0 spun forever, deaf to signals
    (["--timeout", "0s"], "--timeout must be longer than 0 s"),
    (["--require", "-1"], "--require -1 must be at least 1 participant"),
    (["--probe-churn", "-1"], "--probe-churn must be at least 0 joins/s"),
    # A search grows to --max: against LiveKit Cloud that needs permission, as a run of as many does.
    (["--url", "wss://example.livekit.cloud", "--max", "100"], "refusing to run 100 participants against"),
    (["--server-config", "{bad"], "--server-config is not JSON"),
    (["--server-config", "[1, 2]"], "--server-config must be a JSON object"),
    (["--server-cpus", "abc"], "--server-cpus: 'abc' is not a number of cores"),
    (["--server-cpus", "0.5,0"], "--server-cpus: 0 is outside 0.01 .. 4096 cores"),
    (["--url", "ws://127.0.0.1:1", "--server-cpus", "0.5"], "--server-cpus limits the embedded server"),
]
IDS = [" ".join(args) for args, _ in CASES]


def environment() -> dict[str, str]:
    """This environment without a LiveKit server or credentials of its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}


@pytest.mark.parametrize(("args", "fragment"), CASES, ids=IDS)
def test_a_usage_error_exits_2_in_one_line(args: list[str], fragment: str) -> None:
    out = subprocess.run([*LKSWARM, "capacity", *args], capture_output=True, text=True, timeout=60, env=environment())
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("error: ")
    assert fragment in out.stderr
    assert "started embedded livekit-server" not in out.stderr + out.stdout
    assert out.stdout == ""


@pytest.mark.parametrize(("args", "fragment"), CASES, ids=IDS)
def test_a_usage_error_is_refused_at_once_before_any_server_starts(args: list[str], fragment: str) -> None:
    env: dict[str, str | None] = {key: None for key in os.environ if key.startswith("LIVEKIT_")}
    CliRunner().invoke(app, ["capacity", *args], env=env)  # warm: the command's modules imported once
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["capacity", *args], env=env)
    elapsed = time.perf_counter() - started
    # The socket guard raises AssertionError when a server would start or a socket open: not a SystemExit.
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.stderr
    assert fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert elapsed < REFUSED_WITHIN_S


def test_help_states_the_slo_option_and_its_defaults() -> None:
    out = subprocess.run([*LKSWARM, "capacity", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # Fold rich's panel: drop its borders and join the wrapped lines.
    text = " ".join(out.stdout.replace("│", " ").split())
    assert "--slo" in text
    for default in DEFAULT_SLOS:
        assert default in text
    assert "Default: those four" in text
