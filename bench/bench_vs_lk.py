"""lkswarm vs `lk perf load-test` (v2.18.2) on the same workloads, against the same local livekit-server build.

Each (workload, tool) run gets a fresh embedded livekit-server, so its CPU belongs to that run alone. For
every run we record:

- the tool's CPU seconds, as `getrusage(RUSAGE_CHILDREN)` around it (its whole process tree, reaped), and
  its maximum RSS, the sum over its process tree sampled every 0.25 s from /proc;
- the server's CPU seconds over the same interval (/proc/<pid>/stat);
- a census taken from the *server* (RoomService.ListParticipants) 10 s before the end: participants in the
  room, how many ACTIVE, how many tracks published. It is the same judge for both tools, so a tool that
  burns less CPU by holding fewer participants shows it.

Workloads (issue #8): (a) 1 room, 2 audio publishers + 100 subscribers; (b) 1 simulcast video publisher +
50 subscribers; both at 10 joins/s, every participant held 60 s after the last has joined (lk's
``--duration``; lkswarm's run is longer by the ramp, `lkswarm_duration_s`). lkswarm runs each workload twice:
on its default signaling path and on lk's (`LKSWARM_RUNS`). Each tool runs each workload 3 times, interleaved;
the ratios are of each tool's median run. `scale` adds LiveKit's audio
benchmark shape: 10 audio publishers -> N subscribers at rising N, held 60 s, for both tools (lkswarm on
both paths), with the server's CPU per subscriber.

Usage: ``python bench/bench_vs_lk.py [head-to-head|scale] [--duration S] [--rounds N]`` (prints JSON); ``make bench``
records both. The API secret reaches the tools through the environment only, never their argv.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))

from lkswarm.app.server import LocalServer  # noqa: E402
from lkswarm.auth import Credentials  # noqa: E402
from lkswarm.net.twirp import RoomService  # noqa: E402

sys.path.insert(0, str(ROOT / "bench" / "tools"))
from lk_media import has_placeholder_media  # noqa: E402

PYTHON = sys.executable
LK_VERSION = "v2.18.2"
JOIN_RATE = 10  # participants started per second, both tools
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

WORKLOADS: dict[str, dict[str, int]] = {
    "audio_2_to_100": {"audio_publishers": 2, "video_publishers": 0, "subscribers": 100},
    "video_1_to_50": {"audio_publishers": 0, "video_publishers": 1, "subscribers": 50},
}


def lk_binary() -> Path | None:
    for candidate in (Path(sys.executable).parent / "lk", shutil.which("lk")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def lk_version(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False)
    return out.stdout.strip()


def lk_media(binary: Path) -> str:
    """What lk publishes: its module zip embeds Git LFS pointers, not media, unless it was built by
    bench/tools/lk_media.py, which writes real clips of the same names, codecs, sizes and bitrates."""
    if has_placeholder_media(binary):
        return "Git LFS pointers from the module zip: lk publishes no real media"
    return "real clips written by bench/tools/lk_media.py (same files, codecs, sizes, frame rates and bitrates)"


# -- /proc sampling --------------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def tree_rss_kib(root_pid: int) -> int:
    tree = _children()
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        with contextlib.suppress(OSError, IndexError, ValueError):  # the process just ended
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
        stack.extend(tree.get(pid, []))
    return total


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU-s so far of ``pid``'s threads by role: its main thread (lkswarm's event loop, all of its Python
    but helper threads), lkswarm's media thread (named ``lkswarm-media``) and the rest."""
    out = {"main": 0.0, "media": 0.0, "other": 0.0}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, IndexError, ValueError):  # the thread just ended
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                comm = stat[stat.index("(") + 1 : stat.rindex(")")]
                fields = stat.rsplit(")", 1)[1].split()
                role = "main" if int(tid) == pid else "media" if comm == "lkswarm-media" else "other"
                out[role] += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


class RssSampler(threading.Thread):
    """The peak RSS of a process tree; with ``threads``, also its root's CPU by thread role over time."""

    def __init__(self, pid: int, interval_s: float = 0.25, threads: bool = False) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval_s, self.max_kib, self.threads = pid, interval_s, 0, threads
        # (wall-clock time, thread_cpu_s) pairs, for `cpu_split`.
        self.cpu_samples: list[tuple[float, dict[str, float]]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval_s):
            self.max_kib = max(self.max_kib, tree_rss_kib(self.pid))
            if self.threads:
                sample = thread_cpu_s(self.pid)
                if any(sample.values()):
                    self.cpu_samples.append((time.time(), sample))


def _main_cpu_at(samples: list[tuple[float, dict[str, float]]], at: float) -> float | None:
    """The main thread's CPU-s at wall time ``at``, interpolated between the samples around it."""
    for (t0, a), (t1, b) in itertools.pairwise(samples):
        if t0 <= at <= t1 and t1 > t0:
            return a["main"] + (b["main"] - a["main"]) * (at - t0) / (t1 - t0)
    return None


def cpu_split(cpu_s: float, report: dict[str, Any], samples: list[tuple[float, dict[str, float]]]) -> dict[str, Any]:
    """Where lkswarm's CPU went: its media thread, its Python side while joining and while holding, and what
    the process spends outside the run (interpreter start, imports, writing the report, exit).

    The hold's Python cost is the main thread's rate between 2 s after everyone joined and 2 s before the
    end (the sampler's /proc figures, 0.25 s apart), times the whole hold: the steady signaling (pings,
    server updates), the metrics and the loop's own wakeups. The rest of the run's CPU but the media
    thread's (``python_setup_and_joins_cpu_s``) is the set-up (clips, the hub), the joins, the teardown and
    helper threads. The window is placed from the report's ``started_at``, the timeline's zero (before
    2026-12-06's second recording it was taken before the set-up, which moved the window that much early).
    Ticks of /proc are 10 ms, so each figure is good to a few hundredths of a second.
    """
    generator = report.get("generator", {})
    media_s = report.get("media", {}).get("hub", {}).get("thread_cpu_s")
    run_cpu_s, timeline = generator.get("cpu_s"), report.get("timeline") or {}
    if media_s is None or run_cpu_s is None or not timeline.get("t_s"):
        return {"skipped": "the report has no media thread CPU or no timeline"}
    joined, t_s = timeline["joined"], timeline["t_s"]
    everyone = report["participants"].get("scheduled") or max(joined)
    ramp_end_s = next((t for t, j in zip(t_s, joined, strict=True) if j >= everyone), t_s[-1])
    t0 = datetime.fromisoformat(report["started_at"]).timestamp()
    run_s = float(report["duration_s"])
    window = (t0 + ramp_end_s + 2.0, t0 + run_s - 2.0)
    edges = [_main_cpu_at(samples, at) for at in window]
    out: dict[str, Any] = {
        "total_cpu_s": round(cpu_s, 3),
        "media_thread_cpu_s": round(media_s, 3),
        "python_in_run_cpu_s": round(run_cpu_s - media_s, 3),
        "outside_run_cpu_s": round(cpu_s - run_cpu_s, 3),
    }
    if None in edges or window[1] - window[0] < 5:
        return out | {"python_hold": "not measured (hold window too short or not sampled)"}
    rate = (edges[1] - edges[0]) / (window[1] - window[0])  # type: ignore[operator]
    hold_s = run_s - ramp_end_s
    return out | {
        "hold_s": round(hold_s, 1),
        "python_hold_cpu_s": round(rate * hold_s, 3),
        "python_hold_us_per_participant_s": round(rate * 1e6 / everyone, 1),
        "python_setup_and_joins_cpu_s": round(run_cpu_s - media_s - rate * hold_s, 3),
    }


# -- one run ---------------------------------------------------------------------------------------------


def census(server: LocalServer, credentials: Credentials, room: str | None) -> dict[str, Any]:
    service = RoomService(server.url, credentials)
    if room is None:  # lkswarm names its own room: the fresh server has exactly one
        rooms = service.list_rooms()
        room = rooms[0]["name"] if rooms else ""
    participants = service.list_participants(room) if room else []
    return {
        "participants": len(participants),
        "active": sum(1 for p in participants if p.get("state") == "ACTIVE"),
        "tracks_published": sum(len(p.get("tracks", [])) for p in participants),
    }


def lk_packets_received(output: str) -> int:
    """Packets lk's subscribers received: the Pkts column of its "Track loading" table, summed."""
    total = 0
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if len(cells) >= 4 and cells[2] in ("audio", "video") and cells[3].isdigit():
            total += int(cells[3])
    return total


# lkswarm's runs: on its default signaling path (``auto``: /rtc/v1, one PeerConnection, as today's JS SDK joins),
# and on the path lk takes. lk v2.18.2's load tester joins with server-sdk-go's defaults (``room.Join`` without
# ``WithSinglePeerConnection``): /rtc, a publisher and a subscriber PeerConnection. /rtc/v1 costs both ends
# about 15 % more (2026-12-05-single-pc.json: its re-offer rounds), so only the second run compares the tools
# on the same protocol work; the first says what a user running lkswarm's default pays.
LKSWARM_RUNS: dict[str, list[str]] = {"lkswarm": [], "lkswarm_rtc": ["--signal-path", "v0"]}
# Which lkswarm run each path's ratios read.
PATH_RUNS = (("same_path", "lkswarm_rtc"), ("default_path", "lkswarm"))


def command_for(tool: str, workload: dict[str, int], duration_s: int, url: str, room: str, out: Path) -> list[str]:
    pubs_audio, pubs_video, subs = workload["audio_publishers"], workload["video_publishers"], workload["subscribers"]
    if tool == "lk":
        binary = lk_binary()
        assert binary is not None
        return [
            str(binary), "perf", "load-test", "--url", url, "--room", room, "--duration", f"{duration_s}s",
            "--audio-publishers", str(pubs_audio), "--video-publishers", str(pubs_video), "--subscribers", str(subs),
            "--num-per-second", str(JOIN_RATE), "--video-codec", "vp8", "-y",
        ]  # fmt: skip
    total = pubs_audio + pubs_video + subs
    return [
        PYTHON, "-m", "lkswarm", "run", "--url", url, "--rooms", "1", "--participants", str(total),
        "--audio-publishers", str(pubs_audio), "--video-publishers", str(pubs_video), "--rate", str(JOIN_RATE),
        "--duration", f"{lkswarm_duration_s(total, duration_s)}s", "--quiet", "--no-verify-rooms", "--json", str(out),
        *LKSWARM_RUNS[tool],
    ]  # fmt: skip


def lkswarm_duration_s(participants: int, hold_s: int) -> int:
    """lkswarm's ``--duration`` for the same hold as ``lk --duration hold_s``.

    lk's duration starts once its last tester has joined (its runs last the ramp plus the duration: 70 s for
    102 participants at 10 a second, 65 s for 51), lkswarm's at its first join. Given the ramp on top, lkswarm
    holds everyone as long as lk does: both receive about the same packets, and neither tool's fixed costs
    (start-up, joins) are spread over a longer run than the other's.
    """
    return hold_s + math.ceil(participants / JOIN_RATE)


def byte_compile_lkswarm() -> None:
    """Writes lkswarm's bytecode, as installing a wheel does, before a timed run.

    An editable install has none until a run writes it, and none at all where PYTHONDONTWRITEBYTECODE is
    set (as on our CI and bench machines): every run then compiled all 66 of its modules from source,
    about 70 ms of CPU that no installed copy pays. compileall writes it whatever that variable says.
    """
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(ROOT / "python" / "lkswarm")], check=True)


def run_one(tool: str, workload: dict[str, int], duration_s: int) -> dict[str, Any]:
    credentials = Credentials("bench", secrets.token_urlsafe(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env.update(LIVEKIT_API_KEY=credentials.api_key, LIVEKIT_API_SECRET=credentials.api_secret)
    room = f"bench-{tool}-{secrets.token_hex(3)}"
    if tool in LKSWARM_RUNS:
        byte_compile_lkswarm()
    with tempfile.TemporaryDirectory() as tmp, LocalServer(credentials) as server:
        report_path = Path(tmp) / "report.json"
        command = command_for(tool, workload, duration_s, server.url, room, report_path)
        assert server.pid is not None
        server_cpu_0 = process_cpu_s(server.pid)
        children_0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        log = (Path(tmp) / "tool.log").open("wb")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        sampler = RssSampler(process.pid, threads=tool in LKSWARM_RUNS)
        sampler.start()
        time.sleep(max(1.0, duration_s - 10))
        seen = census(server, credentials, room if tool == "lk" else None)
        try:
            code = process.wait(timeout=duration_s + 120)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        wall_s = time.perf_counter() - started
        sampler.done.set()
        sampler.join()
        children_1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu_s = process_cpu_s(server.pid) - server_cpu_0
        log.close()
        output = (Path(tmp) / "tool.log").read_text(errors="replace")
        tail = output[-1500:]
        report = json.loads(report_path.read_text()) if report_path.exists() else None
    cpu_s = (children_1.ru_utime + children_1.ru_stime) - (children_0.ru_utime + children_0.ru_stime)
    planned = sum(workload.values())
    row: dict[str, Any] = {
        "tool": tool,
        "exit_code": code,
        "planned_participants": planned,
        "wall_s": round(wall_s, 1),
        "cpu_s": round(cpu_s, 2),
        "cpu_ms_per_participant_s": round(cpu_s * 1000 / (planned * duration_s), 3),
        "max_rss_mib": round(sampler.max_kib / 1024, 1),
        "server_cpu_s": round(server_cpu_s, 2),
        "server_census": seen,
        "command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(command)),
    }
    publishers = workload["audio_publishers"] + workload["video_publishers"]
    # Valid when the server saw everyone ACTIVE and every publisher's track: a tool that publishes
    # nothing is cheap for the wrong reason.
    row["valid"] = seen["active"] >= planned and seen["tracks_published"] >= publishers
    if report is not None:
        media = report.get("media", {})
        row["packets_received"] = media.get("packets_received", 0)
        row["bytes_received"] = media.get("bytes_received", 0)
        # The media thread's CPU-s (report media.hub.thread_cpu_s); the rest of cpu_s is Python's.
        row["media_thread_cpu_s"] = media.get("hub", {}).get("thread_cpu_s")
        row["cpu_split"] = cpu_split(cpu_s, report, sampler.cpu_samples)
        row["lkswarm_report"] = {
            "active_at_end": report["participants"]["active_at_end"],
            "outcomes": report["participants"]["outcomes"],
            "media_loss_ratio": report.get("media", {}).get("loss_ratio"),
            "tracks_received": report.get("media", {}).get("tracks_received"),
        }
    else:
        row["packets_received"] = lk_packets_received(output)
        row["output_tail"] = tail
    row["cpu_us_per_packet_received"] = (
        round(cpu_s * 1e6 / row["packets_received"], 2) if row["packets_received"] else None
    )
    return row


def cores_ratio(ours: dict[str, Any], theirs: dict[str, Any]) -> float | None:
    """lk's CPU per second of its run over lkswarm's (the same participants for both)."""
    if not (ours["cpu_s"] and ours["wall_s"] and theirs["wall_s"]):
        return None
    return round(float(theirs["cpu_s"] / theirs["wall_s"]) / float(ours["cpu_s"] / ours["wall_s"]), 2)


def median_run(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median cores (CPU-s over wall-s); the lower middle for an even count."""
    ranked = sorted(rows, key=lambda row: row["cpu_s"] / row["wall_s"] if row["wall_s"] else 0.0)
    return ranked[(len(ranked) - 1) // 2]


def per_server_cpu_ratio(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> float | None:
    """lk's CPU per CPU-second of its server over lkswarm's, each the median over its rounds.

    A run's tool CPU over its server's CPU in the same run cancels most of how fast the machine was that
    minute (on a shared machine both slow down together), so this moves far less between runs than the
    cores ratio. It is not the target's figure: lk's participants cost the server more than ours (about
    1.25x on audio), which this charges against lk.
    """

    def median_share(rows: list[dict[str, Any]]) -> float | None:
        shares = [row["cpu_s"] / row["server_cpu_s"] for row in rows if row["server_cpu_s"]]
        return statistics.median_low(shares) if shares else None

    mine, lks = median_share(ours), median_share(theirs)
    return round(lks / mine, 2) if mine and lks else None


def head_to_head(duration_s: int, rounds: int = 3) -> dict[str, Any]:
    """Each workload ``rounds`` times per tool, interleaved (the order rotates every round), because one
    run of either tool moves by 20 % with the machine's load; the ratios are of each tool's median run."""
    if lk_binary() is None:
        return {"skipped": f"lk {LK_VERSION} is not installed (.venv/bin/lk); see README, Performance"}
    tools = ["lkswarm", "lkswarm_rtc", "lk"]
    results: dict[str, Any] = {}
    for name, workload in WORKLOADS.items():
        rounds_run: dict[str, list[dict[str, Any]]] = {tool: [] for tool in tools}
        for k in range(rounds):
            for tool in tools[k % len(tools) :] + tools[: k % len(tools)]:
                rounds_run[tool].append(run_one(tool, workload, duration_s))
        runs = {tool: median_run(rows) for tool, rows in rounds_run.items()}
        ours, same_path, theirs = runs["lkswarm"], runs["lkswarm_rtc"], runs["lk"]
        per_packet = (ours["cpu_us_per_packet_received"], theirs["cpu_us_per_packet_received"])
        results[name] = {
            "workload": workload | {"duration_s": duration_s, "join_rate_per_s": JOIN_RATE, "rounds": rounds},
            "valid": all(row["valid"] for rows in rounds_run.values() for row in rows),
            "runs": runs,
            "rounds": rounds_run,
            # Both tools on /rtc with two PeerConnections (LKSWARM_RUNS): the like-for-like figure.
            "cores_ratio_lk_over_lkswarm_same_path": cores_ratio(same_path, theirs),
            "cpu_per_packet_ratio_lk_over_lkswarm": (
                round(per_packet[1] / per_packet[0], 2) if per_packet[0] and per_packet[1] else None
            ),
            "cpu_ratio_lk_over_lkswarm": round(theirs["cpu_s"] / ours["cpu_s"], 2) if ours["cpu_s"] else None,
            # CPU over each tool's own wall time: lk's --duration starts after its joining ramp, so it
            # runs about 10 s longer than lkswarm for the same --duration, and raw CPU-s would flatter us.
            "cores_ratio_lk_over_lkswarm": cores_ratio(ours, theirs),
            # Round by round (run k of each tool), to show the spread the medians hide.
            "cores_ratio_per_round": {
                path: [cores_ratio(a, b) for a, b in zip(rounds_run[tool], rounds_run["lk"], strict=True)]
                for path, tool in PATH_RUNS
            },
            "per_server_cpu_ratio_lk_over_lkswarm": {
                path: per_server_cpu_ratio(rounds_run[tool], rounds_run["lk"]) for path, tool in PATH_RUNS
            },
            "rss_ratio_lk_over_lkswarm": (
                round(theirs["max_rss_mib"] / ours["max_rss_mib"], 2) if ours["max_rss_mib"] else None
            ),
        }
    binary = lk_binary()
    assert binary is not None
    return {
        "lk_version": lk_version(binary),
        "lk_media": lk_media(binary),
        "workloads": results,
        "target_cpu_ratio": 10,
    }


def scale(duration_s: int, subscriber_steps: tuple[int, ...] = (40, 90, 190)) -> dict[str, Any]:
    """LiveKit's audio benchmark shape at rising N: 10 audio publishers -> N subscribers, for each tool.

    A step counts as held when the server's census 10 s before the end saw every planned participant ACTIVE.
    lkswarm runs on both signaling paths (`LKSWARM_RUNS`): `lkswarm_rtc` on lk's, `/rtc` with two
    PeerConnections, so that its row and lk's load the server alike (`/rtc/v1` costs it about 15 % more).
    """
    tools = [*LKSWARM_RUNS] + (["lk"] if lk_binary() is not None else [])
    steps: dict[str, list[dict[str, Any]]] = {tool: [] for tool in tools}
    largest: dict[str, int] = {tool: 0 for tool in tools}
    for tool in tools:
        for subscribers in subscriber_steps:
            workload = {"audio_publishers": 10, "video_publishers": 0, "subscribers": subscribers}
            row = run_one(tool, workload, duration_s)
            held = row["server_census"]["active"] >= row["planned_participants"]
            row["held"] = held
            row["server_cpu_ms_per_subscriber_s"] = round(row["server_cpu_s"] * 1000 / (subscribers * duration_s), 3)
            steps[tool].append(row)
            if not held:
                break
            largest[tool] = row["planned_participants"]
    binary = lk_binary()
    return {
        "shape": "10 audio publishers -> N subscribers, one room (LiveKit's audio benchmark)",
        "lkswarm_runs": {tool: " ".join(args) or "default signaling path" for tool, args in LKSWARM_RUNS.items()},
        "lk_media": lk_media(binary) if binary is not None else None,
        "duration_s": duration_s,
        "largest_held": largest,
        "steps": steps,
        "note": "generator and server share this machine's cores; the server saturates first here",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("suite", choices=["head-to-head", "scale"])
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3, help="head-to-head: runs of each tool per workload")
    args = parser.parse_args()
    result = head_to_head(args.duration, args.rounds) if args.suite == "head-to-head" else scale(args.duration)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
