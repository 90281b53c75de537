"""lkswarm's children die with it, even on SIGKILL, and the API secret is never left on disk
(lkswarm.app.server: PR_SET_PDEATHSIG and the config in the environment; lkswarm.app.workers: the
workers' parent-death signal and their lifeline, the stdin pipe)."""

from __future__ import annotations

import secrets
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from helpers import LKSWARM, alive_after, descendants_when, lkswarm_env, lkswarm_files_holding
from lkswarm.app.server import free_port, sweep_stale_workdirs
from lkswarm.auth import Credentials

pytestmark = pytest.mark.integration  # the real livekit-server throughout

GONE_WITHIN_S = 5.0


def own_credentials() -> Credentials:
    """A secret of this test alone: other runs on this machine (older builds too) may leave the shared test
    secret in the temporary directory."""
    return Credentials("lkswarm-test", "lkswarm-lifetime-" + secrets.token_hex(16))


def start(args: list[str], credentials: Credentials, tmp_path: Path) -> subprocess.Popen[bytes]:
    """``lkswarm ARGS`` with a temporary directory of its own (``tmp_path/tmp``), its stderr in a file."""
    (tmp_path / "tmp").mkdir()
    with (tmp_path / "stderr").open("wb") as stderr:
        return subprocess.Popen(
            [*LKSWARM, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=lkswarm_env(credentials, TMPDIR=str(tmp_path / "tmp")),
        )


def names(processes: list[Any]) -> list[str]:
    result = []
    for process in processes:
        try:
            result.append(" ".join(process.cmdline()[:5]))
        except psutil.Error:  # gone meanwhile
            result.append(f"pid {process.pid}")
    return result


def kill_all(processes: list[Any]) -> None:
    for process in processes:
        try:
            process.kill()
        except psutil.Error:  # already gone
            continue


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_to_run_takes_the_server_and_the_workers_along(workers: int, tmp_path: Path) -> None:
    credentials = own_credentials()
    args = ["run", "--rooms", "2", "--participants", "3", "--audio-publishers", "1", "--duration", "60s"]
    process = start([*args, "--workers", str(workers), "--quiet"], credentials, tmp_path)
    expected = 1 if workers == 1 else 1 + workers  # the embedded server, and each worker

    def everyone_is_there(found: list[Any]) -> bool:
        return len(found) >= expected and any("livekit-server" in name for name in names(found))

    children: list[Any] = []
    try:
        children = descendants_when(process.pid, everyone_is_there, timeout_s=60)
        assert everyone_is_there(children), (names(children), (tmp_path / "stderr").read_text())
        time.sleep(4.0)  # the run under way: participants joined, media flowing
        children = descendants_when(process.pid, lambda _: True, timeout_s=1)
        assert len(children) >= expected, names(children)
        # The run's server holds its work dir (its owner file's lock): a sweep now leaves it alone.
        assert sweep_stale_workdirs(tmp_path / "tmp") == [] and list((tmp_path / "tmp").glob("lkswarm-server-*"))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=5)
        survivors = alive_after(children, GONE_WITHIN_S)
        assert survivors == [], f"alive {GONE_WITHIN_S:g} s after the SIGKILL: {names(survivors)}"
    finally:
        if process.poll() is None:
            process.kill()
        kill_all(children)
    temp_dirs = [tmp_path / "tmp", Path(tempfile.gettempdir())]
    assert lkswarm_files_holding(credentials.api_secret, temp_dirs) == []
    left = list((tmp_path / "tmp").glob("lkswarm-server-*"))
    assert [workdir / "livekit-server.log" for workdir in left if (workdir / "livekit-server.log").exists()], left
    # ... until the next server's start sweeps it away: its launcher and its server are both gone.
    assert sweep_stale_workdirs(tmp_path / "tmp") == left
    assert list((tmp_path / "tmp").glob("lkswarm-server-*")) == []
    # The orphaned workers removed their job files, and the last one their directory.
    assert list((tmp_path / "tmp").glob("lkswarm-workers-*")) == []


def test_sigkill_to_the_server_command_takes_livekit_server_along(tmp_path: Path) -> None:
    credentials = own_credentials()
    port = free_port()
    process = start(["server", "--port", str(port), "--udp-port", str(free_port())], credentials, tmp_path)
    children: list[Any] = []
    try:
        children = descendants_when(process.pid, lambda found: len(found) >= 1, timeout_s=30)
        assert names(children) and "livekit-server" in names(children)[0], names(children)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # up and serving before the kill
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        command_line = " ".join(children[0].cmdline())
        assert credentials.api_secret not in command_line and "--config" not in command_line  # what ps shows
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=5)
        survivors = alive_after(children, GONE_WITHIN_S)
        assert survivors == [], f"alive {GONE_WITHIN_S:g} s after the SIGKILL: {names(survivors)}"
    finally:
        if process.poll() is None:
            process.kill()
        kill_all(children)
    assert lkswarm_files_holding(credentials.api_secret, [tmp_path / "tmp", Path(tempfile.gettempdir())]) == []
