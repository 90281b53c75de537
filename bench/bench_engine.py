"""Engine macro-benchmarks against the fast local frame source (bench/frame_source.py).

- join rate: the highest arrival rate whose scheduler lateness p99 stays at or under 5 ms;
- RSS per idle signal participant: (max RSS with N participants - max RSS with 1) / (N - 1).

Each run is a separate `lkswarm run` process, so CPU and RSS belong to the generator alone.

``--ab TREE`` compares this tree with another checkout of lkswarm (its ``python/`` directory, with its
own extension built in place), run by run and interleaved (A, B, B, A, ...), so the machine's drift
hits both alike: ``python bench/bench_engine.py --ab /tmp/old/python --label-b fad0167``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
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


def run_engine(
    url: str, participants: int, rate: float, duration: str, python_path: str | None = None
) -> dict[str, Any]:
    """One `lkswarm run` process; ``python_path`` runs another checkout's package instead of this one."""
    env = dict(os.environ, PYTHONPATH=python_path) if python_path else None
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "r.json"
        cmd = [
            PYTHON, "-m", "lkswarm", "run", "--url", url, "--rooms", "1", "--participants", str(participants),
            "--rate", str(rate), "--duration", duration, "--no-verify-rooms", "--quiet", "--json", str(report_path),
            "--signal-only",
        ]  # fmt: skip
        subprocess.run(cmd, check=False, timeout=300, capture_output=True, env=env)
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


def _join_row(report: dict[str, Any]) -> dict[str, Any]:
    g = report["generator"]
    return {
        "joined": report["participants"]["joined"],
        "lateness_p99_ms": g["lateness_ms"]["p99"],
        "loop_lag_p99_ms": g["loop_lag_ms"]["p99"],
        "cpu_s": g["cpu_s"],
    }


def ab(other: str, label_b: str, rates: list[float], rounds: int, seconds: float = 3.0) -> dict[str, Any]:
    """This tree (A) against ``other`` (B): per rate, ``rounds`` runs each, interleaved A,B,B,A,..."""
    sides = {"A": None, "B": other}
    joins: dict[str, dict[float, list[dict[str, Any]]]] = {side: {rate: [] for rate in rates} for side in sides}
    rss: dict[str, list[float]] = {side: [] for side in sides}
    with frame_source() as url:
        for k in range(rounds):
            order = ["A", "B"] if k % 2 == 0 else ["B", "A"]
            for rate in rates:
                for side in order:
                    n = int(rate * seconds)
                    joins[side][rate].append(_join_row(run_engine(url, n, rate, f"{seconds + 2}s", sides[side])))
            for side in order:
                report = run_engine(url, 2000, 1000, "8s", sides[side])
                g, alive = report["generator"], report["participants"]["alive_at_end"]
                rss[side].append(round((g["rss_end_mb"] - g["rss_start_mb"]) * 1024 / max(1, alive), 2))

    def best_rate(side: str) -> float:
        """The highest rate at which every run of the side kept lateness p99 <= 5 ms and joined everyone."""
        passing = [
            rate
            for rate in rates
            if all(r["lateness_p99_ms"] <= 5.0 and r["joined"] == int(rate * seconds) for r in joins[side][rate])
        ]
        return max(passing, default=0.0)

    summary: dict[str, dict[str, Any]] = {
        side: {
            "max_rate_with_lateness_p99_le_5ms": best_rate(side),
            "lateness_p99_ms_median": {
                str(rate): statistics.median(r["lateness_p99_ms"] for r in joins[side][rate]) for rate in rates
            },
            "cpu_s_median": {str(rate): statistics.median(r["cpu_s"] for r in joins[side][rate]) for rate in rates},
            "idle_rss_kib_per_participant_median": statistics.median(rss[side]),
        }
        for side in sides
    }
    return {
        "a": "this tree",
        "b": label_b,
        "rounds": rounds,
        "summary": summary,
        "cpu_ratio_a_over_b": {
            str(rate): round(summary["A"]["cpu_s_median"][str(rate)] / summary["B"]["cpu_s_median"][str(rate)], 3)
            for rate in rates
        },
        "rss_ratio_a_over_b": round(
            summary["A"]["idle_rss_kib_per_participant_median"] / summary["B"]["idle_rss_kib_per_participant_median"], 3
        ),
        "runs": {side: {str(rate): rows for rate, rows in joins[side].items()} for side in sides},
        "idle_rss_kib_runs": rss,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ab", metavar="TREE", help="another checkout's python/ directory to compare with")
    parser.add_argument("--label-b", default="baseline", help="what the other checkout is (e.g. its commit)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.ab:
        print(json.dumps(ab(args.ab, args.label_b, [1000, 1500, 2000], args.rounds), indent=2))
    else:
        print(json.dumps(main(), indent=2))
