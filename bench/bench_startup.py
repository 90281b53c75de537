"""What a generator process pays before its first participant, and a tiny run's whole cost (issue #24).

Every run, every ``--workers`` child and every Ray actor is a Python process, and its start-up is CPU spent on
nothing else: about 0.2-0.3 CPU-s, a tenth of a one-minute vs-lk video run's. Measured in one run, interleaved,
as CPU (``getrusage`` of the children) and as a ratio over the bare interpreter (``python -c pass``), the floor
no Python tool goes below:

- ``imports``: the modules of a run (``lkswarm.cli.commands`` and ``lkswarm.app.runner``);
- ``worker``: ``python -m lkswarm worker JOB`` (how ``--workers`` starts each child) with a job that is not one:
  its imports and a one-line refusal;
- ``tiny run``: ``lkswarm run`` of 1 participant for 1 s against one embedded livekit-server (started once):
  start-up, one join with its PeerConnections, the report.

``--ab PYTHONPATH`` measures the same for another checkout (its ``python/`` first on ``PYTHONPATH``, with its own
built ``_core``), interleaved with this tree: the before and after of a change. ``--record NAME`` writes
``bench/results/<date>-NAME.json``. Usage: ``python bench/bench_startup.py [--rounds 7] [--ab PATH] [--record NAME]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
sys.path.insert(0, str(ROOT / "python"))

IMPORTS = "import lkswarm.cli.commands, lkswarm.app.runner"


def _cpu_s(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), done.returncode


def commands(url: str, tmp: Path) -> dict[str, tuple[list[str], int]]:
    """Each measured command and the exit status that makes its run valid."""
    job = tmp / "not-a-job.json"
    job.write_text("{}")
    run = [
        PYTHON, "-m", "lkswarm", "run", "--url", url, "--rooms", "1", "--participants", "1", "--rate", "10",
        "--duration", "1s", "--quiet", "--no-verify-rooms", "--json", str(tmp / "report.json"),
    ]  # fmt: skip
    return {
        "interpreter": ([PYTHON, "-c", "pass"], 0),
        "imports": ([PYTHON, "-c", IMPORTS], 0),
        "worker": ([PYTHON, "-m", "lkswarm", "worker", str(job)], 2),
        "tiny_run": (run, 0),
    }


def measure(rounds: int, other: str | None) -> dict[str, Any]:
    from lkswarm.app.server import LocalServer
    from lkswarm.auth import Credentials

    credentials = Credentials("bench", secrets.token_urlsafe(32))
    base = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_") and k != "PYTHONPATH"}
    base.update(LIVEKIT_API_KEY=credentials.api_key, LIVEKIT_API_SECRET=credentials.api_secret)
    sides = {"this_tree": base} | ({"other": base | {"PYTHONPATH": other}} if other else {})
    # Bytecode first, as an installed copy has it (PYTHONDONTWRITEBYTECODE may be set here).
    for tree in [str(ROOT / "python" / "lkswarm"), *(other.split(os.pathsep) if other else [])]:
        subprocess.run([PYTHON, "-m", "compileall", "-q", tree], check=True)
    cpu: dict[str, dict[str, list[float]]] = {side: {} for side in sides}
    failed: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, LocalServer(credentials) as server:
        measured = commands(server.url, Path(tmp))
        for k in range(rounds):
            for side in sides if k % 2 == 0 else reversed(list(sides)):
                for name, (command, expected) in measured.items():
                    seconds, code = _cpu_s(command, sides[side])
                    if code != expected:
                        failed.append(f"{side} {name}: exit {code}")
                        continue
                    cpu[side].setdefault(name, []).append(seconds)
    result: dict[str, Any] = {"rounds": rounds, "failed_runs": failed}
    for side, runs in cpu.items():
        median_ms = {name: round(statistics.median(v) * 1000, 1) for name, v in runs.items()}
        floor = median_ms.get("interpreter") or 1.0
        result[side] = {
            "cpu_ms": median_ms,
            "over_interpreter": {name: round(v / floor, 2) for name, v in median_ms.items() if name != "interpreter"},
            "spread_ms": {name: [round(min(v) * 1000, 1), round(max(v) * 1000, 1)] for name, v in runs.items()},
        }
    if other:
        result["other_pythonpath"] = other
        result["this_over_other"] = {
            name: round(result["this_tree"]["cpu_ms"][name] / result["other"]["cpu_ms"][name], 3)
            for name in result["this_tree"]["cpu_ms"]
            if result["other"]["cpu_ms"].get(name)
        }
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ab", metavar="PYTHONPATH", help="another checkout's python/ (and what it needs first)")
    parser.add_argument("--record", metavar="NAME", help="write bench/results/<date>-NAME.json")
    parser.add_argument("--note", default="", help="with --record: what was compared")
    args = parser.parse_args(argv)
    result = measure(args.rounds, args.ab)
    if args.note:
        result["note"] = args.note
    print(json.dumps(result, indent=2))
    if args.record:
        import datetime

        from run_all import write_result

        command = "python bench/bench_startup.py " + " ".join(argv)
        path = write_result(args.record, result, datetime.date.today().isoformat(), command)
        print(f"-> {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
