"""Usage errors are refused before the run, in one line, with exit 2 (README: "usage errors exit 2")."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from helpers import LKSWARM


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LKSWARM, "run", *args], capture_output=True, text=True, timeout=60)


def assert_usage_error(out: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, out.stderr
    for fragment in fragments:
        assert fragment in out.stderr


def test_a_scenario_that_is_not_utf8_is_a_one_line_error(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_bytes(b'rooms = 2\nname = "\xff\xfe"\n')
    assert_usage_error(run(str(scenario)), "is not UTF-8 text")


def test_a_bad_url_is_a_usage_error() -> None:
    assert_usage_error(run("--url", "ht!tp://::bad", "--duration", "1s"), "not a LiveKit URL")


@pytest.mark.parametrize("url", ["ws://127.0.0.1:99999", "ws://127.0.0.1:port", "ws://127.0.0.1:0"])
def test_a_url_with_a_bad_port_is_a_usage_error(url: str) -> None:
    """urllib's own ValueError for a port out of range used to end the command in a traceback."""
    assert_usage_error(run("--url", url, "--duration", "1s"), "not a LiveKit URL", url)


def test_a_negative_seed_is_a_usage_error() -> None:
    """It used to reach the media hub as a u64 and kill every participant, reported as the server's fault."""
    out = run("--url", "ws://127.0.0.1:1", "--seed", "-1", "--duration", "1s")
    assert_usage_error(out, "--seed: must be at least 0")  # named as given: the flag, not the config key


def test_more_publishers_than_participants_is_refused() -> None:
    out = run("--url", "ws://127.0.0.1:1", "--participants", "2", "--audio-publishers", "3", "--duration", "1s")
    assert_usage_error(out, "3 publishers per room", "only 2 participants")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--data-publishers", "1", "--data-size", "64001"], ("--data-size", "64000")),
        (["--data-publishers", "1", "--data-to", "some"], ("data_to must be all or a number",)),
        (["--data-publishers", "1", "--signal-only"], ("data channels", "drop --signal-only")),
        (["--data-publishers", "1", "--data-channel", "unreliable"], ("--data-channel",)),
        (["--data-to", "3"], ("data_to chooses the data publishers' destinations",)),
        (["--signal-path", "v2"], ("signal path 'v2'",)),
        (["--data-tracks", "1", "--data-track-size", "15001"], ("--data-track-size", "15000")),
        (["--data-tracks", "1", "--signal-only"], ("data tracks", "drop --signal-only")),
        (["--rpc-echo", "--signal-only"], ("RPC calls", "drop --signal-only or --rpc-echo")),
    ],
)
def test_bad_data_and_signal_path_options_are_one_line_usage_errors(args: list[str], fragments: tuple[str]) -> None:
    assert_usage_error(run("--url", "ws://127.0.0.1:1", "--duration", "1s", *args), *fragments)


def test_run_help_states_the_real_default_room_count() -> None:
    out = subprocess.run([*LKSWARM, "run", "--help"], capture_output=True, text=True, timeout=60)
    assert "Number of rooms. (default 1)" in " ".join(out.stdout.split())


@pytest.mark.integration  # it holds a port to show that a taken one is refused
def test_a_prometheus_port_already_taken_is_a_usage_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = run("--url", "ws://127.0.0.1:1", "--prometheus", f"127.0.0.1:{port}", "--duration", "1s")
    assert_usage_error(out, "cannot listen there")


@pytest.mark.parametrize("args", [["--port", "70000"], ["--udp-port", "-5"], ["--port", "0"]])
def test_a_server_port_out_of_range_is_a_usage_error_naming_the_command(args: list[str]) -> None:
    """A traceback (bind's OverflowError) or, for 0, a 30 s wait for a server that could not start; the hint
    read 'see lkswarm -m lkswarm server --help' under python -m."""
    out = subprocess.run([*LKSWARM, "server", *args], capture_output=True, text=True, timeout=60)
    assert_usage_error(out, "is not in the range 1<=x<=65535", "(see lkswarm server --help)")


def test_the_ray_option_s_help_names_the_extra() -> None:
    out = subprocess.run([*LKSWARM, "run", "--help"], capture_output=True, text=True, timeout=60)
    assert "'lkswarm[ray]'" in " ".join(out.stdout.split()).replace("│", "").replace("  ", " ")
