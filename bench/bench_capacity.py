"""Capacity search cost: levels and wall time a search needs to reach 5 % width on the audio shape.

The shape is one room of 2 audio publishers with subscribers growing; the embedded livekit-server is
held to ``--server-cpus`` (0.1 core by default) so the limit lies within what this machine's
generator can drive, and the answer is the server's, not ours. The result records how many levels
(bracket and bisect) and how many seconds the search took, the interval it found and what limited
it, next to the search's parameters: a search is a trade of hold time against confidence, and this
is the number to compare when that trade changes.

Usage: ``python bench/bench_capacity.py [--server-cpus 0.1] [--hold 10s] [--settle 3s] [--width 5%]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_search(server_cpus: str, hold: str, settle: str, width: str, html: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="lkswarm-bench-capacity-") as folder:
        report_path = Path(folder) / "capacity.json"
        command = [
            sys.executable, "-m", "lkswarm", "capacity",
            "--audio-publishers", "2", "--participants", "8", "--growth", "2", "--max", "2048",
            "--server-cpus", server_cpus, "--hold", hold, "--settle", settle, "--width", width,
            "--slo", "failed_ratio<1%", "--slo", "join_response.p50<300ms", "--slo", "media.loss_ratio<1%",
            "--json", str(report_path), "--quiet",
        ]  # fmt: skip
        if html is not None:
            command += ["--html", str(html)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
        started = time.monotonic()
        out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
        wall_s = time.monotonic() - started
        if not report_path.exists():
            raise SystemExit(f"the search wrote no report (exit {out.returncode}): {out.stderr[-2000:]}")
        report = json.loads(report_path.read_text())
    section = report["capacity"]
    lower, upper = section["interval"]
    return {
        "exit_code": out.returncode,
        "wall_s": round(wall_s, 1),
        "levels": len(section["levels"]),
        "levels_by_phase": {
            phase: sum(1 for level in section["levels"] if level["phase"] == phase) for phase in ("bracket", "bisect")
        },
        "interval": [lower, upper],
        "width_reached": round((upper - lower) / lower, 4) if lower and upper else None,
        "limiting": section["limiting"],
        "stopped": section["search"]["stopped"],
        "server_limit": section["server_limit"],
        "summary": section["summary"],
        "per_level": [
            {
                "participants": level["participants"],
                "phase": level["phase"],
                "verdict": level["verdict"],
                "server_cores": (level["server"] or {}).get("cores"),
                "join_p95_ms": level["client"]["join_response"]["p95"],
                "loss_ratio": level["client"]["loss_ratio"],
                "generator_cpu_percent": level["generator"]["cpu_percent"],
            }
            for level in section["levels"]
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server-cpus", default="0.1")
    parser.add_argument("--hold", default="10s")
    parser.add_argument("--settle", default="3s")
    parser.add_argument("--width", default="5%")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--html", type=Path, default=None, help="also keep the search's HTML report here")
    args = parser.parse_args()
    result = {
        "suite": "capacity",
        "date": datetime.date.today().isoformat(),
        "machine": {"cpus": os.cpu_count()},
        "shape": "1 room, 2 audio publishers, subscribers growing (x2 per bracket level)",
        "parameters": {"server_cpus": args.server_cpus, "hold": args.hold, "settle": args.settle, "width": args.width},
        "result": run_search(args.server_cpus, args.hold, args.settle, args.width, args.html),
    }
    out = args.out or ROOT / "bench" / "results" / f"{result['date']}-capacity.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["result"], indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
