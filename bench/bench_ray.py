"""The overhead of Ray against ``--workers`` on one machine: ``lkswarm run --ray local`` vs ``--workers N``.

Both runs split the same plan over the same number of generator processes against one local livekit-server,
interleaved workers, ray, ray, workers (...) so the machine's drift hits both alike. Per mode (medians over its
runs) it records the set-up time (from the command's launch to the run's time origin, the report's
``started_at``: process or Ray start, imports, the actors' set-up and the barrier) and the generator's CPU per
participant-second (the merged report's ``generator.cpu_s`` over participants x seconds), and ray over workers
as ratios. The goal is within 10 %.

Usage: ``python bench/bench_ray.py [--workers 2] [--rooms 4] [--participants 25] [--seconds 30] [--rounds 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))

from lkswarm.app.server import LocalServer  # noqa: E402
from lkswarm.auth import Credentials  # noqa: E402

GOAL_RATIO = 1.10


def one_run(server: LocalServer, env: dict[str, str], mode: str, shape: dict[str, int], tmp: Path) -> dict[str, Any]:
    """One ``lkswarm run`` with ``--workers N`` or ``--ray local --workers N``: its set-up time and CPU."""
    report_path = tmp / f"{mode}-{time.monotonic_ns()}.json"
    spread = (
        ["--workers", str(shape["workers"])]
        if mode == "workers"
        else ["--ray", "local", "--workers", str(shape["workers"])]
    )
    cmd = [
        sys.executable, "-m", "lkswarm", "run", "--url", server.url, *spread, "--signal-only",
        "--rooms", str(shape["rooms"]), "--participants", str(shape["participants"]),
        "--duration", f"{shape['seconds']}s", "--quiet", "--json", str(report_path),
    ]  # fmt: skip
    launched = time.time()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=shape["seconds"] + 180)
    wall_s = time.time() - launched
    if out.returncode != 0:
        raise SystemExit(f"{mode} run failed ({out.returncode}): {out.stderr[-2000:]}")
    report = json.loads(report_path.read_text())
    p = report["participants"]
    origin = datetime.fromisoformat(report["started_at"]).timestamp()
    generator_cpu_s = sum(w["cpu_s"] or 0.0 for w in report["workers"])
    participant_s = p["scheduled"] * shape["seconds"]
    return {
        "joined": p["joined"],
        "scheduled": p["scheduled"],
        "setup_s": round(origin - launched, 3),
        "wall_s": round(wall_s, 3),
        "generator_cpu_s": round(generator_cpu_s, 3),
        "cpu_ms_per_participant_s": round(1000 * generator_cpu_s / participant_s, 4),
        "process_cpu_s": [w.get("process_cpu_s") for w in report["workers"]] if mode == "ray" else None,
    }


def main(
    workers: int = 2, rooms: int = 4, participants: int = 25, seconds: int = 30, rounds: int = 1
) -> dict[str, Any]:
    shape = {"workers": workers, "rooms": rooms, "participants": participants, "seconds": seconds}
    credentials = Credentials("lkswarm-bench", "lkswarm-bench-secret-0123456789abcdef")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env.update(LIVEKIT_API_KEY=credentials.api_key, LIVEKIT_API_SECRET=credentials.api_secret)
    runs: dict[str, list[dict[str, Any]]] = {"workers": [], "ray": []}
    server = LocalServer(credentials)
    server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="lkswarm-bench-ray-") as tmp_dir:
            for _ in range(rounds):
                for mode in ("workers", "ray", "ray", "workers"):
                    run = one_run(server, env, mode, shape, Path(tmp_dir))
                    print(mode, run, flush=True)
                    runs[mode].append(run)
    finally:
        server.stop()
    median = {
        mode: {key: statistics.median(r[key] for r in rs) for key in ("setup_s", "cpu_ms_per_participant_s", "joined")}
        for mode, rs in runs.items()
    }
    ratio = {
        key: round(median["ray"][key] / median["workers"][key], 3) for key in ("setup_s", "cpu_ms_per_participant_s")
    }
    return {
        "shape": shape,
        "runs": runs,
        "median": median,
        "ratio_ray_over_workers": ratio,
        "goal": f"ratio <= {GOAL_RATIO}",
        "met": {key: value <= GOAL_RATIO for key, value in ratio.items()},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--participants", type=int, default=25)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(main(args.workers, args.rooms, args.participants, args.seconds, args.rounds), indent=2))
