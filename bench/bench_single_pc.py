"""Single PeerConnection (``/rtc/v1``) against dual (``/rtc``), side by side on one local livekit-server.

The same shape runs on each path, interleaved v0, v1, v1, v0 (...) so the machine's drift hits both alike.
Per path (medians over its runs) it records joins, ``join_response`` and ``active`` p50/p99, the generator's
CPU per participant, the server's CPU per participant (from /proc around each run), the generator's UDP
sockets per participant (counted while the run holds), loss and missing tracks, and v1 over v0 as ratios.

Usage: ``python bench/bench_single_pc.py [--rooms 2] [--participants 50] [--seconds 40] [--rounds 2]``.
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
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))

from lkswarm.app.server import LocalServer  # noqa: E402
from lkswarm.auth import Credentials  # noqa: E402
from lkswarm.metrics import process_cpu_s  # noqa: E402


def udp_sockets(pid: int) -> int:
    try:
        return len(psutil.Process(pid).net_connections(kind="udp"))
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0


def one_run(server: LocalServer, env: dict[str, str], path: str, shape: dict[str, int], tmp: Path) -> dict[str, Any]:
    """One ``lkswarm run`` on ``path``: its report's figures, the server's CPU and our peak UDP sockets."""
    assert server.pid is not None
    report_path = tmp / f"{path}-{time.monotonic_ns()}.json"
    cmd = [
        sys.executable, "-m", "lkswarm", "run", "--url", server.url, "--signal-path", path,
        "--rooms", str(shape["rooms"]), "--participants", str(shape["participants"]),
        "--audio-publishers", str(shape["audio_publishers"]), "--video-publishers", str(shape["video_publishers"]),
        "--rate", "20", "--duration", f"{shape['seconds']}s", "--quiet", "--json", str(report_path),
    ]  # fmt: skip
    server_before_s = process_cpu_s(server.pid) or 0.0
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_sockets = 0
    while process.poll() is None:
        peak_sockets = max(peak_sockets, udp_sockets(process.pid))
        time.sleep(1.0)
    stderr = process.stderr.read() if process.stderr is not None else ""
    server_cpu_s = (process_cpu_s(server.pid) or 0.0) - server_before_s
    report = json.loads(report_path.read_text())
    p = report["participants"]
    latency = report["latency_ms"]
    scheduled = max(1, p["scheduled"])
    return {
        "exit_code": process.returncode,
        "stderr_tail": stderr.strip().splitlines()[-1:] if process.returncode else [],
        "joined": p["joined"],
        "active_at_end": p["active_at_end"],
        "completed": p["outcomes"]["completed"],
        "join_response_p50_ms": latency["join_response"]["p50"],
        "join_response_p99_ms": latency["join_response"]["p99"],
        "active_p50_ms": latency["active"]["p50"],
        "active_p99_ms": latency["active"]["p99"],
        "offer_answer_p50_ms": latency["offer_answer"]["p50"],
        "generator_cpu_s_per_participant": round(report["generator"]["cpu_s"] / scheduled, 5),
        "server_cpu_s_per_participant": round(server_cpu_s / scheduled, 5),
        "udp_sockets_per_participant": round(peak_sockets / scheduled, 3),
        "offers_sent": report["signal"]["paths"][path]["offers_sent"],
        "loss_ratio": report["media"]["loss_ratio"],
        "tracks_missing": report["media"]["tracks_missing"],
    }


def main(rooms: int = 2, participants: int = 50, seconds: float = 40, rounds: int = 2) -> dict[str, Any]:
    credentials = Credentials("lkswarm-bench", "lkswarm-bench-secret-0123456789abcdef")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env.update(LIVEKIT_API_KEY=credentials.api_key, LIVEKIT_API_SECRET=credentials.api_secret)
    shape = {"rooms": rooms, "participants": participants, "audio_publishers": 2, "video_publishers": 1}
    runs: dict[str, list[dict[str, Any]]] = {"v0": [], "v1": []}
    order = [path for k in range(rounds) for path in (("v0", "v1") if k % 2 == 0 else ("v1", "v0"))]
    with LocalServer(credentials) as server, tempfile.TemporaryDirectory() as tmp:
        for path in order:
            runs[path].append(one_run(server, env, path, {**shape, "seconds": int(seconds)}, Path(tmp)))
            time.sleep(3.0)  # let the server drop the previous run's rooms
    numeric = [k for k, v in runs["v0"][0].items() if isinstance(v, int | float)]
    medians = {
        path: {key: round(statistics.median(run[key] for run in path_runs), 5) for key in numeric}
        for path, path_runs in runs.items()
    }
    ratio_keys = (
        "generator_cpu_s_per_participant",
        "server_cpu_s_per_participant",
        "udp_sockets_per_participant",
        "join_response_p50_ms",
        "active_p50_ms",
    )
    return {
        "shape": {**shape, "seconds": seconds, "rounds": rounds, "order": order},
        "median": medians,
        "ratio_v1_over_v0": {
            key: round(medians["v1"][key] / medians["v0"][key], 3) if medians["v0"][key] else None for key in ratio_keys
        },
        "runs": runs,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rooms", type=int, default=2)
    parser.add_argument("--participants", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(main(args.rooms, args.participants, args.seconds, args.rounds), indent=2))
