"""Engine macro-benchmarks against the fast local frame source (bench/frame_source.py).

- join rate: the highest arrival rate whose scheduler lateness p99 stays at or under 5 ms;
- RSS per idle signal participant: (max RSS with N participants - max RSS with 1) / (N - 1).

Each run is a separate `lkswarm run` process, so CPU and RSS belong to the generator alone.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@contextlib.contextmanager
def frame_source() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [PYTHON, str(ROOT / "bench" / "frame_source.py"), str(port)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    process.stdout.readline()  # "ready"
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait()


def run_engine(url: str, participants: int, rate: float, duration: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "r.json"
        cmd = [
            PYTHON, "-m", "lkswarm", "run", "--url", url, "--rooms", "1", "--participants", str(participants),
            "--rate", str(rate), "--duration", duration, "--no-verify-rooms", "--quiet", "--json", str(report_path),
            "--signal-only",
        ]  # fmt: skip
        subprocess.run(cmd, check=False, timeout=300, capture_output=True)
        report: dict[str, Any] = json.loads(report_path.read_text())
        return report


def join_rate(url: str, rates: list[float], seconds: float = 3.0) -> dict[str, Any]:
    rows = []
    best = 0.0
    for rate in rates:
        n = int(rate * seconds)
        report = run_engine(url, n, rate, f"{seconds + 2}s")
        g = report["generator"]
        row = {
            "rate": rate,
            "participants": n,
            "joined": report["participants"]["joined"],
            "lateness_p99_ms": g["lateness_ms"]["p99"],
            "loop_lag_p99_ms": g["loop_lag_ms"]["p99"],
            "join_response_p99_ms": report["latency_ms"]["join_response"]["p99"],
            "cpu_s": g["cpu_s"],
        }
        rows.append(row)
        if row["lateness_p99_ms"] <= 5.0 and row["joined"] == n:
            best = max(best, rate)
    return {"max_rate_with_lateness_p99_le_5ms": best, "runs": rows, "goal_joins_per_s": 1000}


def idle_rss(url: str, participants: int = 2000) -> dict[str, Any]:
    """Resident memory added per connected, idle participant (VmRSS before arrivals vs. at the end)."""
    report = run_engine(url, participants, 1000, "8s")
    g = report["generator"]
    alive = report["participants"]["alive_at_end"]
    per_kib = (g["rss_end_mb"] - g["rss_start_mb"]) * 1024 / max(1, alive)
    return {
        "participants": participants,
        "alive_at_end": alive,
        "rss_start_mb": g["rss_start_mb"],
        "rss_end_mb": g["rss_end_mb"],
        "kib_per_participant": round(per_kib, 2),
        "goal_kib": 20,
    }


def main() -> dict[str, Any]:
    with frame_source() as url:
        started = time.time()
        result: dict[str, Any] = {
            "join_rate": join_rate(url, [250, 500, 1000, 1500, 2000]),
            "idle_rss": idle_rss(url),
        }
        result["wall_s"] = round(time.time() - started, 1)
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
