"""The overhead of Ray against ``--workers`` on one machine: ``--ray local`` and ``--ray auto`` vs ``--workers N``.

Three modes split the same plan over the same number of generator processes against one local livekit-server,
interleaved (workers, ray-local, ray-auto, then reversed, per round) so the machine's drift hits all alike:

- ``workers``: ``lkswarm run --workers N`` (N worker processes under the command);
- ``ray-local``: ``--ray local``, which starts a Ray instance for the run (GCS, raylet, agents) and stops it after;
- ``ray-auto``: ``--ray auto`` against a Ray head this bench started once beforehand (``ray.cluster_utils.Cluster``),
  as a user with a running cluster has it: Ray's own start is not paid per run.

Per run it records the set-up time (from the command's launch to the run's time origin, the report's
``started_at``) and **CPU measured the same way for every mode**: every process involved (the command and all
its descendants, plus, for ``ray-auto``, the cluster's daemons) is sampled twice a second from /proc, and each
process's CPU over the run is attributed to a component:

- ``driver``: the command's own process (the ``--workers`` parent, or the Ray driver with its core-worker threads);
- ``generators``: the worker processes, or the actor processes' threads that run the share (``lkswarm-run`` and
  the threads it starts: the engine's event loop, media);
- ``ray_in_actors``: the other threads of the actor processes (Ray's core worker: gRPC, the task executor,
  heartbeats, the object store client);
- ``ray_daemons``: GCS, raylet, dashboard agents, log monitor, idle prestarted workers.

The merged report's ``generator.cpu_s`` (the engine's own count) is recorded beside it. Medians per mode and
ratios to ``workers`` follow. The goal is within 10 %.

Usage: ``python bench/bench_ray.py [--workers 2] [--rooms 4] [--participants 25] [--seconds 30] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))

from lkswarm.app.server import LocalServer  # noqa: E402
from lkswarm.auth import Credentials  # noqa: E402

GOAL_RATIO = 1.10


TICKS = os.sysconf("SC_CLK_TCK")
RAY_DAEMONS = ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env", "agent", "ray::IDLE")


def _cpu_s(path: str) -> tuple[str, float] | None:
    """(comm, user + system CPU seconds) of /proc/PID/stat or /proc/PID/task/TID/stat."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return comm, (int(fields[11]) + int(fields[12])) / TICKS


class CpuSampler:
    """Samples the CPU of every process under ``root`` (and of ``extra`` pids) twice a second; per component.

    A process's CPU over the window is its last sample minus its first (0 for one born in the window). Actor
    processes are split per thread: threads named as the process (Python threads: the share's run, its loop)
    are ``generators``; natively named ones (Ray's core worker: gRPC, io service) are ``ray_in_actors``.
    """

    def __init__(self, root: int, extra: list[int]) -> None:
        self.root, self.extra = root, extra
        self.started = time.time()
        self.first: dict[tuple[int, int], float] = {}
        self.last: dict[tuple[int, int], tuple[str, float]] = {}
        self.component: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> CpuSampler:
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        totals: dict[str, float] = {}
        threads: dict[str, float] = {}
        for key, (name, cpu) in self.last.items():
            pid = key[0]
            component = self.component.get(pid, "ray_daemons")
            if component == "actor":
                main = self.last.get((pid, pid), ("", 0.0))[0]
                component = "generators" if name == main else "ray_in_actors"
                threads[name] = threads.get(name, 0.0) + cpu - self.first.get(key, 0.0)
            totals[component] = totals.get(component, 0.0) + cpu - self.first.get(key, 0.0)
        top = dict(sorted(((k, round(v, 2)) for k, v in threads.items()), key=lambda kv: -kv[1])[:8])
        return {"cpu_s": {k: round(v, 3) for k, v in sorted(totals.items())}, "actor_threads_cpu_s": top}

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()

    def _classify(self, proc: psutil.Process) -> str:
        if proc.pid == self.root:
            return "driver"
        try:
            line = " ".join(proc.cmdline())
        except psutil.Error:
            return "ray_daemons"
        if "GeneratorActor" in line or "CapacityActor" in line:
            return "actor"
        if "lkswarm" in line and "worker" in line:
            return "generators"
        return "ray_daemons" if any(d in line for d in RAY_DAEMONS) or "ray" in line else "other"

    def _sample(self) -> None:
        try:
            procs = [psutil.Process(self.root), *psutil.Process(self.root).children(recursive=True)]
        except psutil.Error:
            procs = []
        for pid in self.extra:  # a running cluster's daemons, and the workers (actors) its raylet starts
            try:
                procs += [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
            except psutil.Error:
                continue
        procs = list({proc.pid: proc for proc in procs}.values())
        for proc in procs:
            try:
                born = proc.create_time()
            except psutil.Error:
                continue
            component = self._classify(proc)
            if component == "actor" or self.component.get(proc.pid) == "actor":
                self.component[proc.pid] = "actor"  # its title changes with its task; once an actor, always
            elif proc.pid not in self.component or self.component[proc.pid] == "ray_daemons":
                self.component[proc.pid] = component
            tids = [proc.pid]
            if self.component[proc.pid] == "actor":
                try:
                    tids = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task")]
                except OSError:
                    continue
            for tid in tids:
                path = (
                    f"/proc/{proc.pid}/stat"
                    if tid == proc.pid and len(tids) == 1
                    else f"/proc/{proc.pid}/task/{tid}/stat"
                )
                sample = _cpu_s(path)
                if sample is None:
                    continue
                key = (proc.pid, tid)
                if key not in self.first:
                    self.first[key] = 0.0 if born >= self.started - 0.5 else sample[1]
                self.last[key] = sample


def one_run(
    server: LocalServer, env: dict[str, str], mode: str, shape: dict[str, int], tmp: Path, cluster_pids: list[int]
) -> dict[str, Any]:
    """One ``lkswarm run`` in ``mode``: its set-up time and the CPU of every process involved, per component."""
    report_path = tmp / f"{mode}-{time.monotonic_ns()}.json"
    workers = ["--workers", str(shape["workers"])]
    spread = {"workers": workers, "ray-local": ["--ray", "local", *workers], "ray-auto": ["--ray", "auto", *workers]}
    cmd = [
        sys.executable, "-m", "lkswarm", "run", "--url", server.url, *spread[mode], "--signal-only",
        "--rooms", str(shape["rooms"]), "--participants", str(shape["participants"]),
        "--duration", f"{shape['seconds']}s", "--quiet", "--json", str(report_path),
    ]  # fmt: skip
    launched = time.time()
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = CpuSampler(process.pid, cluster_pids if mode == "ray-auto" else []).start()
    _, stderr = process.communicate(timeout=shape["seconds"] + 180)
    cpu = sampler.stop()
    wall_s = time.time() - launched
    if process.returncode != 0:
        raise SystemExit(f"{mode} run failed ({process.returncode}): {stderr[-2000:]}")
    report = json.loads(report_path.read_text())
    p = report["participants"]
    origin = datetime.fromisoformat(report["started_at"]).timestamp()
    participant_s = p["scheduled"] * shape["seconds"]
    total = sum(cpu["cpu_s"].values())
    ours = cpu["cpu_s"].get("driver", 0.0) + cpu["cpu_s"].get("generators", 0.0)
    engine_cpu_s = sum(w["cpu_s"] or 0.0 for w in report["workers"])
    return {
        "joined": p["joined"],
        "scheduled": p["scheduled"],
        "setup_s": round(origin - launched, 3),
        "wall_s": round(wall_s, 3),
        **cpu,
        "total_cpu_ms_per_participant_s": round(1000 * total / participant_s, 4),
        "ours_cpu_ms_per_participant_s": round(1000 * ours / participant_s, 4),
        "generators_cpu_ms_per_participant_s": round(1000 * cpu["cpu_s"].get("generators", 0.0) / participant_s, 4),
        "engine_cpu_ms_per_participant_s": round(1000 * engine_cpu_s / participant_s, 4),
    }


KEYS = (
    "setup_s",
    "total_cpu_ms_per_participant_s",
    "ours_cpu_ms_per_participant_s",
    "generators_cpu_ms_per_participant_s",
    "engine_cpu_ms_per_participant_s",
)


def main(
    workers: int = 2, rooms: int = 4, participants: int = 25, seconds: int = 30, rounds: int = 2
) -> dict[str, Any]:
    from ray.cluster_utils import Cluster

    shape = {"workers": workers, "rooms": rooms, "participants": participants, "seconds": seconds}
    credentials = Credentials("lkswarm-bench", "lkswarm-bench-secret-0123456789abcdef")
    modes = ("workers", "ray-local", "ray-auto")
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    server = LocalServer(credentials)
    server.start()
    ray_tmp = tempfile.mkdtemp(prefix="lkb", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "RAY_ADDRESS"))}
    env.update(LIVEKIT_API_KEY=credentials.api_key, LIVEKIT_API_SECRET=credentials.api_secret, RAY_TMPDIR=ray_tmp)
    os.environ["RAY_TMPDIR"] = ray_tmp
    own = {server.pid} if server.pid else set()
    head_started = time.monotonic()
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": os.cpu_count() or 2, "include_dashboard": False}
    )
    head_start_s = round(time.monotonic() - head_started, 3)
    cluster_pids = [p.pid for p in psutil.Process().children(recursive=True) if p.pid not in own]
    try:
        with tempfile.TemporaryDirectory(prefix="lkswarm-bench-ray-") as tmp_dir:
            for round_index in range(rounds):
                order = modes if round_index % 2 == 0 else tuple(reversed(modes))
                for mode in order:
                    auto_env = {**env, "RAY_ADDRESS": cluster.address} if mode == "ray-auto" else env
                    run = one_run(server, auto_env, mode, shape, Path(tmp_dir), cluster_pids)
                    print(mode, run, flush=True)
                    runs[mode].append(run)
    finally:
        cluster.shutdown()
        server.stop()
    median = {
        mode: {key: round(statistics.median(r[key] for r in rs), 4) for key in (*KEYS, "joined")}
        for mode, rs in runs.items()
    }
    components = {
        mode: {c: round(statistics.median(r["cpu_s"].get(c, 0.0) for r in rs), 3) for c in _components(rs)}
        for mode, rs in runs.items()
    }
    ratio = {
        mode: {key: round(median[mode][key] / median["workers"][key], 3) for key in KEYS if median["workers"][key]}
        for mode in modes[1:]
    }
    return {
        "shape": shape,
        "runs": runs,
        "median": median,
        "median_cpu_s_by_component": components,
        "ray_head_start_s": head_start_s,
        "ratio_over_workers": ratio,
        "goal": f"ratio <= {GOAL_RATIO}",
        "met": {mode: {key: value <= GOAL_RATIO for key, value in r.items()} for mode, r in ratio.items()},
    }


def _components(runs: list[dict[str, Any]]) -> list[str]:
    return sorted({c for r in runs for c in r["cpu_s"]})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--participants", type=int, default=25)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(main(args.workers, args.rooms, args.participants, args.seconds, args.rounds), indent=2))
