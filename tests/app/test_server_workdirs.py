"""A SIGKILLed run leaves its server's work dir (the log) behind; the next server's start removes it, and only
a dir whose launcher (the holder of its owner file's lock) and server are both gone
(lkswarm.app.server.sweep_stale_workdirs)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from lkswarm.app.server import OWNER_FILE, WORKDIR_PREFIX, WorkdirOwner, sweep_stale_workdirs


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def workdir(base: Path, name: str, owners: str | None) -> Path:
    path = base / (WORKDIR_PREFIX + name)
    path.mkdir()
    (path / "livekit-server.log").write_text("log\n")
    if owners is not None:
        (path / OWNER_FILE).write_text(owners)
    return path


def test_only_the_dirs_of_dead_launchers_and_servers_are_swept(tmp_path: Path) -> None:
    gone = dead_pid()
    stale = workdir(tmp_path, "stale", f"{gone} {dead_pid()}\n")
    live_launcher = workdir(tmp_path, "live", None)
    owner = WorkdirOwner(live_launcher)  # as LocalServer.start holds it, before and after its server starts
    owner.write(os.getpid(), gone)
    live_server = workdir(tmp_path, "orphaned-server", f"{gone} {os.getpid()}\n")
    being_set_up = workdir(tmp_path, "new", None)
    unreadable = workdir(tmp_path, "garbled", "not a pid\n")
    other = tmp_path / "lkswarm-workers-x"
    other.mkdir()
    (other / OWNER_FILE).write_text(f"{gone}\n")
    (tmp_path / (WORKDIR_PREFIX + "link")).symlink_to(stale)  # followed, its target would be counted twice

    assert sweep_stale_workdirs(tmp_path) == [stale]
    assert not stale.exists()
    for kept in (live_launcher, live_server, being_set_up, unreadable, other):
        assert kept.exists(), kept
    owner.release()  # the launcher stops (or dies): its dir is stale now
    assert sweep_stale_workdirs(tmp_path) == [live_launcher]


def test_a_lock_holder_in_another_pid_namespace_counts_as_alive(tmp_path: Path) -> None:
    """Two containers sharing /tmp: the other's launcher pid means nothing here, but its lock holds."""
    held = workdir(tmp_path, "elsewhere", None)
    owner = WorkdirOwner(held)
    owner.write(dead_pid(), dead_pid())  # pids of another namespace: none of them runs here
    try:
        assert sweep_stale_workdirs(tmp_path) == [] and held.exists()
    finally:
        owner.release()


def test_a_zombie_server_counts_as_gone(tmp_path: Path) -> None:
    """A killed run's server is reparented; a container's init may never reap it, and it stays a zombie."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child never exited"
            time.sleep(0.01)
        stale = workdir(tmp_path, "zombie", f"{dead_pid()} {child.pid}\n")
        assert sweep_stale_workdirs(tmp_path) == [stale]
    finally:
        child.wait()


def test_a_missing_temporary_directory_sweeps_nothing(tmp_path: Path) -> None:
    assert sweep_stale_workdirs(tmp_path / "absent") == []
