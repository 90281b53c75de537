"""`--ray` against the real livekit-server: one machine (``--ray local``) and a 2-node local Ray cluster.

Each test is bounded (well under 90 s) and small: the machine may have 2 cores. Ray's logs go to a
temporary directory of the test's own (RAY_TMPDIR), which is searched for the API secret afterwards.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import LKSWARM, alive_after, descendants_when, lkswarm_env, run_cli
from lkswarm.app.ray_engine import run_on_ray
from lkswarm.app.server import LocalServer
from lkswarm.auth import Credentials
from lkswarm.config import RunConfig

ray = pytest.importorskip("ray", reason="the ray extra (make build installs it)")

pytestmark = [
    pytest.mark.integration,
    # Ray's in-process node start (ray.init, cluster_utils) leaves its log files to the garbage collector.
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture
def ray_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short temporary directory for Ray's sessions (its socket paths must stay under 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="lkr", dir="/tmp"))
    monkeypatch.setenv("RAY_TMPDIR", str(path))
    try:
        yield path
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(path, ignore_errors=True)


def files_holding(secret: str, root: Path) -> list[Path]:
    needle = secret.encode()
    found = []
    for path in root.rglob("*"):
        try:
            if path.is_file() and not path.is_socket() and needle in path.read_bytes():
                found.append(path)
        except OSError:
            continue
    return found


def actor_processes(pid: int, count: int, timeout_s: float) -> list[Any]:
    def actors(found: list[Any]) -> list[Any]:
        out = []
        for p in found:
            try:
                if "GeneratorActor" in " ".join(p.cmdline()):
                    out.append(p)
            except Exception:
                continue
        return out

    return actors(descendants_when(pid, lambda found: len(actors(found)) >= count, timeout_s))


def test_run_ray_local_splits_the_plan_over_two_actors_and_no_log_holds_the_secret(
    credentials: Credentials, tmp_path: Path, ray_tmp: Path
) -> None:
    code, report, stderr = run_cli(
        [
            "--ray",
            "local",
            "--workers",
            "2",
            "--signal-only",
            "--rooms",
            "4",
            "--participants",
            "25",
            "--duration",
            "20",
        ],
        credentials,
        tmp_path,
        timeout_s=85,
    )
    assert code == 0, stderr
    participants = report["participants"]
    assert (participants["scheduled"], participants["joined"], participants["outcomes"]["failed"]) == (100, 100, 0)
    workers = report["workers"]
    assert [w["index"] for w in workers] == [0, 1] and [w["participants"] for w in workers] == [50, 50]
    for worker in workers:
        assert worker["node"] and worker["host"] and worker["pid"] > 0 and worker["cpu_s"] > 0
        assert not worker["crashed"]
    assert report["target"]["embedded_server"] is True
    # The driver owns the embedded server: its counters and CPU are in the report, as a one-process run's are.
    server, machine = report["server"], report["machine"]
    assert server["available"] is True and server["cpu_s"] > 0 and server["wall_s"] >= 20, server
    assert machine["embedded_server_cpu_s"] > 0 and machine["generator_cpu_s"] > 0, machine
    assert list(ray_tmp.rglob("*.log")), "Ray wrote its session logs where RAY_TMPDIR says"
    assert files_holding(credentials.api_secret, ray_tmp) == []


def test_two_node_cluster_with_media_counts_every_participant_once(
    credentials: Credentials, livekit_server: LocalServer, ray_tmp: Path
) -> None:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False)
        # Audio publishers held past 60 s: the server drops a participant whose PeerConnection has not
        # connected within 60 s, so everyone still ACTIVE at the end has a working media path.
        config = RunConfig(url=livekit_server.url, rooms=2, participants=3, audio_publishers=1, duration_s=64)
        result = run_on_ray(config, credentials, address="auto", workers=2)
    finally:
        ray.shutdown()
        cluster.shutdown()
    report = result.report
    workers = report["workers"]
    assert len({w["node"] for w in workers}) == 2, "SPREAD put one actor on each node"
    assert sum(w["participants"] for w in workers) == 6 and not any(w["crashed"] for w in workers)
    participants = report["participants"]
    assert (participants["scheduled"], participants["joined"], participants["outcomes"]["failed"]) == (6, 6, 0)
    assert participants["active_at_end"] == 6, participants
    assert report["media"], "the audio publishers' media was measured"
    # Against a URL without --server-metrics: the server section says why it is empty, as one process's does.
    assert report["server"] == {"available": False, "reason": "no --server-metrics URL"}, report.get("server")
    assert report["machine"]["generator_cpu_s"] == round(report["generator"]["cpu_s"], 3), report["machine"]
    assert files_holding(credentials.api_secret, ray_tmp) == []


def test_an_actor_killed_mid_run_leaves_a_complete_report(credentials: Credentials, ray_tmp: Path) -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    killed: list[int] = []

    def kill_one() -> None:
        actors = actor_processes(os.getpid(), 2, timeout_s=60)
        time.sleep(8.0)  # set up, started, some participants joined
        if actors:
            killed.append(actors[0].pid)
            os.kill(actors[0].pid, signal.SIGKILL)

    threading.Thread(target=kill_one, daemon=True).start()
    config = RunConfig(rooms=4, participants=10, signal_only=True, duration_s=16)
    report = run_on_ray(config, credentials, address="local", workers=2).report
    assert killed
    workers = report["workers"]
    (dead,) = [w for w in workers if w["crashed"]]
    assert (dead["pid"] == killed[0] and dead["node"] in dead["detail"][:200]) or dead["node"][:16] in dead["detail"]
    participants = report["participants"]
    assert participants["scheduled"] == 40
    assert participants["failures"] == {"worker_crashed": 20}, participants
    assert participants["outcomes"]["completed"] == 20
    assert any("worker_crashed" in w for w in report["warnings"])


def test_ctrl_c_stops_every_actor_and_still_writes_the_report(credentials: Credentials, tmp_path: Path) -> None:
    path = Path(tempfile.mkdtemp(prefix="lkr", dir="/tmp"))
    report_path = tmp_path / "report.json"
    args = ["run", "--ray", "local", "--workers", "2", "--signal-only", "--rooms", "2", "--participants", "10"]
    process = subprocess.Popen(
        [*LKSWARM, *args, "--duration", "60", "--json", str(report_path), "--quiet"],
        env=lkswarm_env(credentials, RAY_TMPDIR=str(path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        actors = actor_processes(process.pid, 2, timeout_s=60)
        assert len(actors) == 2
        time.sleep(8.0)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        shutil.rmtree(path, ignore_errors=True)
    assert process.returncode == 130, stderr
    import json

    report = json.loads(report_path.read_text())
    assert report["interrupted"]["signal"] == "SIGINT"
    assert report["participants"]["scheduled"] == 20 and not any(w["crashed"] for w in report["workers"])
    assert alive_after(actors, timeout_s=15) == []


def test_too_few_cluster_cpus_are_refused_in_one_line(credentials: Credentials, tmp_path: Path) -> None:
    path = Path(tempfile.mkdtemp(prefix="lkr", dir="/tmp"))
    try:
        out = subprocess.run(
            [*LKSWARM, "run", "--ray", "local", "--workers", "512", "--rooms", "512", "--signal-only", "--quiet"],
            env=lkswarm_env(credentials, RAY_TMPDIR=str(path)),
            capture_output=True,
            text=True,
            timeout=80,
        )
    finally:
        shutil.rmtree(path, ignore_errors=True)
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--workers 512: the Ray cluster has" in lines[0], out.stderr
    assert sys.executable  # the same interpreter ran it


def test_capacity_ray_local_spreads_the_search_over_two_actors(
    credentials: Credentials, tmp_path: Path, ray_tmp: Path
) -> None:
    """A room limit of 6 in 2 rooms: the search over 2 actors finds 12, as one process does (about 60 s)."""
    report_path, csv_dir = tmp_path / "capacity.json", tmp_path / "csv"
    out = subprocess.run(
        [
            *LKSWARM,
            "capacity",
            *("--ray", "local", "--workers", "2", "--signal-only", "--rooms", "2", "--participants", "2"),
            *("--growth", "2", "--max", "16", "--hold", "4s", "--settle", "2s", "--max-hold", "8s"),
            *("--slo", "failed_ratio<1%", "--slo", "join_response.p50<1s"),
            *("--server-config", '{"room": {"max_participants": 6}}'),
            *("--json", str(report_path), "--csv", str(csv_dir), "--quiet"),
        ],
        capture_output=True,
        text=True,
        env=lkswarm_env(credentials),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(report_path.read_text())
    section = report["capacity"]
    assert (section["value"], section["interval"]) == (12, [12, 14])
    assert [level["verdict"] for level in section["levels"]][:3] == ["PASS", "PASS", "FAIL"]
    workers = report["workers"]
    assert [w["index"] for w in workers] == [0, 1]
    for worker in workers:
        assert worker["node"] and worker["pid"] > 0 and worker["participants"] > 0 and not worker["crashed"]
    assert report["participants"]["scheduled"] == sum(w["participants"] for w in workers)
    assert report["target"]["embedded_server"] is True
    assert len(list(csv.DictReader((csv_dir / "levels.csv").open()))) == len(section["levels"])
    assert credentials.api_secret not in out.stdout + out.stderr + report_path.read_text()
    assert files_holding(credentials.api_secret, ray_tmp) == []
