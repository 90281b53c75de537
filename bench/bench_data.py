"""Data messages: the generator's CPU per delivered message against the server's per forwarded message.

One room of participants, some of them data publishers, on one local livekit-server. Each shape runs twice,
with data and without (the same participants, joins and PeerConnections), interleaved, so the difference
is what the data messages alone cost each side: the generator writes, receives and accounts them; the
server receives each once and writes it to every other participant (one SCTP + DTLS write each). A
message delivered to a receiver is one message forwarded by the server, so the two costs are compared
per delivered message. Goal (issue #21): the generator's at most 0.2 of the server's.

Usage: ``python bench/bench_data.py [--participants 20] [--publishers 5] [--rate 20] [--size 500]
[--seconds 30] [--rounds 2]``.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))

from lkswarm.app.server import LocalServer  # noqa: E402
from lkswarm.auth import Credentials  # noqa: E402
from lkswarm.metrics import process_cpu_s  # noqa: E402

GOAL_RATIO = 0.2


def one_run(server: LocalServer, env: dict[str, str], args: list[str], tmp: Path) -> dict[str, Any]:
    """One ``lkswarm run``: the generator's and the server's CPU seconds, and the report's data figures."""
    assert server.pid is not None
    report_path = tmp / f"run-{time.monotonic_ns()}.json"
    cmd = [sys.executable, "-m", "lkswarm", "run", "--url", server.url, *args, "--quiet", "--json", str(report_path)]
    server_before_s = process_cpu_s(server.pid) or 0.0
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    server_cpu_s = (process_cpu_s(server.pid) or 0.0) - server_before_s
    report = json.loads(report_path.read_text())
    data = report.get("data") or {}
    return {
        "exit_code": done.returncode,
        "generator_cpu_s": report["generator"]["cpu_s"],
        "server_cpu_s": round(server_cpu_s, 3),
        "messages_sent": data.get("messages_sent", 0),
        "messages_received": data.get("messages_received", 0),
        "delivery_ratio": data.get("delivery_ratio"),
        "data_e2e_p99_ms": report["latency_ms"]["data_e2e"]["p99"],
        "active_at_end": report["participants"]["active_at_end"],
    }


def main(
    participants: int = 20, publishers: int = 5, rate: float = 20, size: int = 500, seconds: int = 30, rounds: int = 2
) -> dict[str, Any]:
    credentials = Credentials("lkswarm-bench", "lkswarm-bench-secret-0123456789abcdef")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env.update(LIVEKIT_API_KEY=credentials.api_key, LIVEKIT_API_SECRET=credentials.api_secret)
    shape = ["--rooms", "1", "--participants", str(participants), "--rate", "20", "--duration", f"{seconds}s"]
    data = ["--data-publishers", str(publishers), "--data-rate", str(rate), "--data-size", str(size)]
    runs: dict[str, list[dict[str, Any]]] = {"with_data": [], "without": []}
    with LocalServer(credentials) as server, tempfile.TemporaryDirectory() as tmp:
        for k in range(rounds):
            order = ("with_data", "without") if k % 2 == 0 else ("without", "with_data")
            for kind in order:
                args = [*shape, *data] if kind == "with_data" else shape
                runs[kind].append(one_run(server, env, args, Path(tmp)))
                time.sleep(3.0)
    pairs = list(zip(runs["with_data"], runs["without"], strict=True))
    generator_us = [(w["generator_cpu_s"] - b["generator_cpu_s"]) / w["messages_received"] * 1e6 for w, b in pairs]
    server_us = [(w["server_cpu_s"] - b["server_cpu_s"]) / w["messages_received"] * 1e6 for w, b in pairs]
    generator_med, server_med = statistics.median(generator_us), statistics.median(server_us)
    return {
        "shape": {"participants": participants, "publishers": publishers, "rate": rate, "size": size},
        "seconds": seconds,
        "generator_cpu_us_per_delivered_message": round(generator_med, 2),
        "server_cpu_us_per_forwarded_message": round(server_med, 2),
        "ratio_generator_over_server": round(generator_med / server_med, 3) if server_med > 0 else None,
        "goal_ratio": GOAL_RATIO,
        "runs": runs,
        "per_round_us": {"generator": [round(x, 2) for x in generator_us], "server": [round(x, 2) for x in server_us]},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--participants", type=int, default=20)
    parser.add_argument("--publishers", type=int, default=5)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--size", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    result = main(args.participants, args.publishers, args.rate, args.size, args.seconds, args.rounds)
    print(json.dumps(result, indent=2))
