"""Soak: 200 media participants with publishers for 30 minutes against a local livekit-server.

Checks what a long run must not do: grow (the generator's RSS after warm-up, from the report's
once-a-second timeline), drift (the generator's and the server's CPU per 5-minute window), or lose
anyone (every participant in exactly one outcome, all alive and ACTIVE at the end). The server is
started here, so its CPU is read from /proc around the same windows.

Usage: ``python bench/bench_soak.py [--minutes 30] [--rooms 10] [--participants 20] [--publishers 2]``.
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))

from lkswarm.app.server import LocalServer  # noqa: E402
from lkswarm.auth import Credentials  # noqa: E402
from lkswarm.metrics import process_cpu_s  # noqa: E402

WARM_UP_S = 120.0  # after the ramp: clips, buffers, allocator arenas settle
WINDOW_S = 300.0  # CPU is compared window by window
GOAL_RSS_GROWTH = 0.05


def sample_server(pid: int, stop: threading.Event, samples: list[tuple[float, float]]) -> None:
    """(monotonic time, server CPU seconds) every 10 s, until ``stop``."""
    while not stop.wait(10.0):
        cpu_s = process_cpu_s(pid)
        if cpu_s is not None:
            samples.append((time.monotonic(), cpu_s))


def windows(samples: list[tuple[float, float]], start: float, window_s: float) -> list[float]:
    """Cores used in each whole window from ``start``: CPU-s difference over wall time."""
    out: list[float] = []
    at = start
    while True:
        inside = [s for s in samples if at <= s[0] <= at + window_s]
        if len(inside) < 2 or inside[-1][0] - inside[0][0] < window_s * 0.8:
            return out
        out.append(round((inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]), 4))
        at += window_s


def main(
    minutes: float,
    rooms: int,
    participants: int,
    publishers: int,
    warm_up_s: float = WARM_UP_S,
    window_s: float = WINDOW_S,
) -> dict[str, Any]:
    credentials = Credentials("lkswarm-soak", "lkswarm-soak-secret-0123456789abcdef")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env.update(LIVEKIT_API_KEY=credentials.api_key, LIVEKIT_API_SECRET=credentials.api_secret)
    with LocalServer(credentials) as server, tempfile.TemporaryDirectory() as tmp:
        assert server.pid is not None
        stop = threading.Event()
        server_samples: list[tuple[float, float]] = []
        sampler = threading.Thread(target=sample_server, args=(server.pid, stop, server_samples), daemon=True)
        report_path = Path(tmp) / "soak.json"
        cmd = [
            sys.executable, "-m", "lkswarm", "run", "--url", server.url, "--rooms", str(rooms),
            "--participants", str(participants), "--audio-publishers", str(publishers), "--rate", "20",
            "--duration", f"{minutes * 60:g}s", "--quiet", "--json", str(report_path),
        ]  # fmt: skip
        started = time.monotonic()
        sampler.start()
        process = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=minutes * 60 + 300)
        stop.set()
        sampler.join()
        report = json.loads(report_path.read_text())
    timeline = report["timeline"]
    ramp_s = rooms * participants / 20
    t_s, rss, cpu = timeline["t_s"], timeline["rss_mb"], timeline["cpu_percent"]
    after = [(t, r) for t, r in zip(t_s, rss, strict=True) if t >= ramp_s + warm_up_s]
    rss_growth = (after[-1][1] - after[0][1]) / after[0][1] if after else None
    gen_windows = []
    for k in range(int((t_s[-1] - ramp_s - warm_up_s) // window_s)):
        lo = ramp_s + warm_up_s + k * window_s
        values = [c for t, c in zip(t_s, cpu, strict=True) if lo <= t < lo + window_s]
        gen_windows.append(round(statistics.mean(values) / 100, 4))
    server_windows = windows(server_samples, started + ramp_s + warm_up_s, window_s)
    p = report["participants"]

    def spread(values: list[float]) -> float | None:
        return round((max(values) - min(values)) / statistics.mean(values), 4) if len(values) > 1 else None

    return {
        "shape": {"rooms": rooms, "participants_per_room": participants, "audio_publishers_per_room": publishers},
        "minutes": minutes,
        "exit_code": process.returncode,
        "participants": {k: p[k] for k in ("scheduled", "joined", "active_at_end", "alive_at_end")},
        "outcomes": p["outcomes"],
        "every_participant_accounted": sum(p["outcomes"].values()) == p["scheduled"],
        "rss_mb_after_warm_up": {"first": after[0][1] if after else None, "last": after[-1][1] if after else None},
        "rss_growth_after_warm_up": round(rss_growth, 4) if rss_growth is not None else None,
        "goal_rss_growth": GOAL_RSS_GROWTH,
        "generator_cores_per_window": gen_windows,
        "server_cores_per_window": server_windows,
        "generator_cpu_spread": spread(gen_windows),
        "server_cpu_spread": spread(server_windows),
        "media": {k: report["media"][k] for k in ("packets_received", "loss_ratio", "tracks_missing")},
        "generator_valid": report["generator"]["valid"],
        "warnings": report["warnings"],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--participants", type=int, default=20)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--warm-up-s", type=float, default=WARM_UP_S)
    parser.add_argument("--window-s", type=float, default=WINDOW_S)
    args = parser.parse_args()
    result = main(args.minutes, args.rooms, args.participants, args.publishers, args.warm_up_s, args.window_s)
    print(json.dumps(result, indent=2))
