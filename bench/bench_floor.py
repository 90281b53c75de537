"""The physical floor under the live receive path, and the live cost per packet as a ratio to it (issue #24).

All in one run, on the same machine, so that the ratios hold however busy the machine is:

1. **floor**: a bare Rust receiver (``bench/floor``, its own crate) reads the same packet stream as a
   live run over the same number of UDP sockets, and does nothing with the packets. A sender in
   another process replays an audio-like stream: every 20 ms one 100-byte datagram to each of 300
   sockets, in one burst, as the SFU forwards one publisher's packet to 300 subscribers. Two
   receivers: ``recvmmsg`` (batch 32) over level-triggered epoll, and io_uring (multishot
   ``recvmsg`` over a ring of provided buffers; recorded as refused where the kernel or seccomp
   refuses it). Both wake at most every 4 ms, as the hub does in steady state; the same receivers
   with no coalescing are recorded beside them. CPU is the receiver process's getrusage per packet.
2. **live**: the media suite's ``participants_per_core`` shape against the embedded livekit-server
   (1 room, 300 participants, 1 audio publisher, 40 s): generator CPU over the steady-state seconds
   (every participant ACTIVE) divided by the packets received in them, from the report's timeline.
   Floor and live runs are interleaved, floor, live, floor, live, floor, live, floor, so drift hits both alike;
   a live run in which not every participant became ACTIVE has no steady state and is left out of the median.
3. **against the server**: LiveKit's audio benchmark shape, 10 audio publishers to 70 subscribers for
   60 s (``bench_vs_lk.run_one``): generator CPU over the embedded server's CPU; and generator cores
   per 1,000 ACTIVE audio participants, from the live runs' steady state and from this shape.
4. **lk over lkswarm** on both vs-lk workloads (``bench_vs_lk.head_to_head``) when ``lk`` is installed: with
   lkswarm on lk's signaling path (/rtc, two PeerConnections), the like-for-like figure, and on its default.
5. **the ceiling** of that ratio, per vs-lk workload: the floor receiver again, shaped like the workload
   (one socket per subscriber, the packets per second and bytes per packet lkswarm received in its median
   run) and opening every datagram with AES-256-GCM (``--open``), the one step no receiver that counts
   honestly skips. lk's CPU over that floor's, for the packets lkswarm received, is the most any generator
   could be ahead of lk; lk's over the floor plus lkswarm's Python share (its CPU less the media thread's,
   ``media.hub.thread_cpu_s``) is the most lkswarm could be with its media thread at the floor.

Usage: ``python bench/bench_floor.py`` (prints JSON); ``python bench/run_all.py floor`` records it.
``--ceiling --rounds N`` runs only sections 4 and 5 (N rounds of lk) and records them as
``bench/results/<date>-floor-ceiling.json``.
``--ab TREE_A TREE_B`` measures only the live cost per packet of two checkouts' ``python/`` directories
(each with its own built ``_core``), interleaved A,B,B,A,...: ``--ab /tmp/new/python /tmp/old/python --rounds 4``;
``--record BASE_COMMIT`` writes it to ``bench/results/<date>-floor-ab.json`` (``--name NAME``: ``<date>-NAME.json``,
for a regression check against a later base). Copy this tree's ``python/`` first: a
run reads it live, so editing the tree meanwhile breaks a run. The base: ``git worktree add /tmp/old BASE_COMMIT``,
then there ``cargo build --release --features python --lib`` (its own ``CARGO_TARGET_DIR``;
``rust/patches/prepare-str0m`` first where the base has one) and copy ``liblkswarm_core.so`` to
``python/lkswarm/_core.abi3.so``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
FLOOR_CRATE = BENCH / "floor"
TARGET_DIR = Path(os.environ.get("LKSWARM_FLOOR_TARGET", Path.home() / ".cache" / "lkswarm" / "target-floor"))
SOCKETS = 300
RATE = 50
SIZE = 100
HUB_COALESCE_MS = 4  # rust/src/media/hub.rs: COALESCE, the least time between wakeups in steady state
sys.path.insert(0, str(BENCH))


def build_floor() -> Path:
    env = dict(os.environ, CARGO_TARGET_DIR=str(TARGET_DIR))
    subprocess.run(
        ["cargo", "build", "--release", "--quiet"],
        check=True,
        cwd=FLOOR_CRATE,
        env=env,
        capture_output=True,
        timeout=600,
    )
    return TARGET_DIR / "release" / "floor"


def floor_run(
    binary: Path,
    variant: str,
    coalesce_ms: float,
    warmup_s: float = 3,
    measure_s: float = 15,
    shape: tuple[int, int, int] = (SOCKETS, RATE, SIZE),
    open_aead: bool = False,
) -> dict[str, Any]:
    """One receiver run fed by a sender process; the receiver's JSON line. ``shape``: (sockets, packets per
    second per socket, bytes per datagram); ``open_aead``: seal and open every datagram (AES-256-GCM)."""
    sockets, rate, size = shape
    opened = ["--open"] if open_aead else []
    receiver = subprocess.Popen(
        [str(binary), "recv", "--variant", variant, "--sockets", str(sockets), "--warmup-s", str(warmup_s),
         "--measure-s", str(measure_s), "--coalesce-ms", str(coalesce_ms), *opened],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    sender = None
    try:
        assert receiver.stdout is not None
        ports = json.loads(receiver.stdout.readline())["ports"]
        sender = subprocess.Popen(
            [str(binary), "send", "--ports", ",".join(map(str, ports)), "--rate", str(rate), "--size", str(size),
             "--seconds", str(warmup_s + measure_s + 1), *opened],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        out, _ = receiver.communicate(timeout=warmup_s + measure_s + 30)
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        sender.wait(timeout=30)
        return result
    finally:
        for process in (receiver, sender):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()


def live_run(participants: int = 300, duration_s: int = 40, python_path: str | None = None) -> dict[str, Any]:
    """The media suite's participants_per_core shape; generator CPU per received packet in steady state.
    ``python_path`` runs another checkout's package (PYTHONPATH, with its own built ``_core``)."""
    from bench_media import scale_run_report, steady_state_totals

    report = scale_run_report(participants, duration_s, python_path)
    seconds, cpu_s, packets = steady_state_totals(report, participants)
    machine = report.get("machine", {})
    generator = report["generator"]
    active = max(1, report["participants"]["active_at_end"])
    return {
        "participants": participants,
        "active_at_end": report["participants"]["active_at_end"],
        "steady_state_s": round(seconds, 1),
        "steady_cpu_s": round(cpu_s, 3),
        "steady_packets": round(packets),
        "ns_per_packet": round(cpu_s * 1e9 / packets, 1) if packets else None,
        "steady_cores": round(cpu_s / seconds, 4) if seconds else None,
        "packets_received": report["media"]["packets_received"],
        "loss_ratio": report["media"]["loss_ratio"],
        "generator_cpu_s": generator["cpu_s"],
        "generator_valid": generator["valid"],
        "media_lag_p99_ms": (generator.get("media_lag_ms") or {}).get("p99"),
        "embedded_server_cpu_s": machine.get("embedded_server_cpu_s"),
        # #24's "no regressions": RSS per media participant stays <= 200 KiB (the media suite's figure).
        "rss_kib_per_participant": round((generator["rss_end_mb"] - generator["rss_ready_mb"]) * 1024 / active),
    }


def audio_shape(duration_s: int = 60) -> dict[str, Any]:
    """LiveKit's audio benchmark shape, 10 audio publishers -> 70 subscribers: generator over server CPU."""
    from bench_vs_lk import run_one

    row = run_one("lkswarm", {"audio_publishers": 10, "video_publishers": 0, "subscribers": 70}, duration_s)
    active = row["server_census"]["active"]
    cores = row["cpu_s"] / row["wall_s"] if row["wall_s"] else 0.0
    return {
        "shape": "10 audio publishers -> 70 subscribers, 1 room, 10 joins/s, held 60 s after the ramp",
        "generator_cpu_s": row["cpu_s"],
        "server_cpu_s": row["server_cpu_s"],
        "generator_over_server_cpu": round(row["cpu_s"] / row["server_cpu_s"], 3) if row["server_cpu_s"] else None,
        "active_seen_by_server": active,
        "valid": row["valid"],
        "loss_ratio": (row.get("lkswarm_report") or {}).get("media_loss_ratio"),
        "packets_received": row["packets_received"],
        "cpu_us_per_packet_received": row["cpu_us_per_packet_received"],
        # The whole run (joining ramp included), CPU-s over wall-s, per 1,000 participants the server saw ACTIVE.
        "generator_cores_per_1000_active": round(cores * 1000 / active, 3) if active else None,
        "run": row,
    }


def lk_over_lkswarm(rounds: int = 3) -> dict[str, Any]:
    from bench_vs_lk import head_to_head, lk_binary

    if lk_binary() is None:
        return {"skipped": "lk is not installed (.venv/bin/lk, built by `make bench`): lk over lkswarm not measured"}
    result = head_to_head(duration_s=60, rounds=rounds)
    # `_same_path`: lkswarm on /rtc with two PeerConnections, as lk joins (bench_vs_lk.LKSWARM_RUNS); the
    # other figure is lkswarm's default path, /rtc/v1.
    return {
        name: {
            "cores_ratio_lk_over_lkswarm_same_path": w["cores_ratio_lk_over_lkswarm_same_path"],
            "cores_ratio_lk_over_lkswarm": w["cores_ratio_lk_over_lkswarm"],
            "cores_ratio_per_round": w["cores_ratio_per_round"],
            "valid": w["valid"],
        }
        for name, w in result["workloads"].items()
    } | {"runs": result}


def workload_ceiling(binary: Path, workload: dict[str, Any], rounds: int = 3) -> dict[str, Any]:
    """Section 5 for one vs-lk workload (a ``head_to_head`` entry): how far ahead of lk a generator could be."""
    ours, theirs = workload["runs"]["lkswarm_rtc"], workload["runs"]["lk"]
    subscribers, hold_s = workload["workload"]["subscribers"], workload["workload"]["duration_s"]
    packets = ours["packets_received"]
    if not (packets and ours.get("bytes_received") and theirs["cpu_s"] and theirs["wall_s"]):
        return {"skipped": "lkswarm's or lk's run received nothing"}
    # Packets per subscriber-second over the hold (the ramp's packets count too: a little above the steady rate).
    shape = (subscribers, max(1, round(packets / subscribers / hold_s)), round(ours["bytes_received"] / packets))
    runs = [floor_run(binary, "io_uring", HUB_COALESCE_MS, shape=shape, open_aead=True) for _ in range(rounds)]
    if str(runs[0].get("io_uring", "")).startswith("refused"):
        return {"skipped": f"io_uring {runs[0]['io_uring']}"}
    floor_ns = statistics.median(r["ns_per_packet"] for r in runs)
    # Everything in the cores the target counts (CPU-s over each tool's wall-s), for lkswarm's packets.
    lk_cores = theirs["cpu_s"] / theirs["wall_s"]
    floor_cores = floor_ns * packets / 1e9 / ours["wall_s"]
    media_cpu_s = ours.get("media_thread_cpu_s")
    python_cpu_s = ours["cpu_s"] - media_cpu_s if media_cpu_s is not None else None
    out: dict[str, Any] = {
        "floor_shape": {"sockets": shape[0], "pps_per_socket": shape[1], "bytes": shape[2], "open": "aes-256-gcm"},
        "floor_open_ns_per_packet": round(floor_ns, 1),
        # Each tool's own figure (bench_vs_lk.run_one's, in µs).
        "lk_ns_per_packet": round((theirs["cpu_us_per_packet_received"] or 0) * 1000, 1) or None,
        "lkswarm_ns_per_packet": round((ours["cpu_us_per_packet_received"] or 0) * 1000, 1) or None,
        # No generator that reads and authenticates every packet can be further ahead of lk than this.
        "ceiling_lk_over_floor": round(lk_cores / floor_cores, 2),
        "floor_runs": runs,
    }
    if media_cpu_s is not None and python_cpu_s is not None:
        out |= {
            "lkswarm_media_thread_ns_per_packet": round(media_cpu_s * 1e9 / packets, 1),
            "lkswarm_python_ns_per_packet": round(python_cpu_s * 1e9 / packets, 1),
            "media_thread_over_floor": round(media_cpu_s * 1e9 / packets / floor_ns, 2),
            # lkswarm with its Python side as measured and its media thread at the floor.
            "ceiling_with_python_as_is": round(lk_cores / (floor_cores + python_cpu_s / ours["wall_s"]), 2),
            # lkswarm with its media thread as measured and no Python at all: what the media thread alone allows.
            "ceiling_media_thread_as_is_without_python": round(lk_cores / (media_cpu_s / ours["wall_s"]), 2),
        }
    split = ours.get("cpu_split") or {}
    if "python_hold_cpu_s" in split and media_cpu_s is not None:
        fixed_s = split["python_setup_and_joins_cpu_s"] + split["outside_run_cpu_s"]
        out |= {
            "cpu_split": split,
            # The steady signaling (the hold's Python) free, as if it ran below Python at no cost; the rest
            # as measured: start-up, joins and the report stay with Python in the brief's split.
            "ceiling_without_steady_python": round(lk_cores / ((media_cpu_s + fixed_s) / ours["wall_s"]), 2),
            # And the media thread at the floor too: the best any generator with Python's start-up and
            # joins as measured could be.
            "ceiling_floor_and_python_joins_only": round(lk_cores / (floor_cores + fixed_s / ours["wall_s"]), 2),
        }
    return out


def ceilings(binary: Path, lk: dict[str, Any]) -> dict[str, Any]:
    workloads = (lk.get("runs") or {}).get("workloads")
    if not workloads:
        return {"skipped": lk.get("skipped", "no lk runs")}
    return {name: workload_ceiling(binary, w) for name, w in workloads.items()}


def record_ceiling(rounds: int) -> Path:
    """Sections 4 and 5 alone (``--ceiling``), recorded as ``bench/results/<today>-floor-ceiling.json``."""
    import datetime

    from run_all import write_result

    binary = build_floor()
    started = time.perf_counter()
    lk = lk_over_lkswarm(rounds)
    ceiling = ceilings(binary, lk)
    result = {"ceiling": ceiling, "lk_over_lkswarm": lk, "suite_wall_s": round(time.perf_counter() - started, 1)}
    command = f"python bench/bench_floor.py --ceiling --rounds {rounds}"
    return write_result("floor-ceiling", result, datetime.date.today().isoformat(), command)


def main(rounds: int = 3) -> dict[str, Any]:
    binary = build_floor()
    variants = ("recvmmsg", "io_uring")
    floors: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    bare: dict[str, dict[str, Any]] = {}
    lives: list[dict[str, Any]] = []
    started = time.perf_counter()
    for v in variants:  # no coalescing, once: the cost of one wakeup per few packets
        bare[v] = floor_run(binary, v, coalesce_ms=0, measure_s=10)
    for k in range(rounds + 1):  # floor, live, floor, live, floor
        for v in variants:
            floors[v].append(floor_run(binary, v, coalesce_ms=HUB_COALESCE_MS))
        if k < rounds:
            lives.append(live_run())
    refused = {
        v: runs[0]["io_uring"] for v, runs in floors.items() if str(runs[0].get("io_uring", "")).startswith("refused")
    }
    floor_ns = {
        v: round(statistics.median(r["ns_per_packet"] for r in runs), 1)
        for v, runs in floors.items()
        if v not in refused
    }
    live_values = [r["ns_per_packet"] for r in lives if r["ns_per_packet"]]
    live_ns = round(statistics.median(live_values), 1) if live_values else None
    steady_cores = [
        r["steady_cores"] / r["active_at_end"] * 1000 for r in lives if r["steady_cores"] and r["active_at_end"]
    ]
    audio = audio_shape()
    lk = lk_over_lkswarm()
    ceiling = ceilings(binary, lk)
    return {
        "floor_ns_per_packet": floor_ns | {v: refused[v] for v in refused},
        "floor_no_coalescing_ns_per_packet": {v: r.get("ns_per_packet", r.get("io_uring")) for v, r in bare.items()},
        "live_ns_per_packet": live_ns,
        "ratio_live_over_floor": {v: round(live_ns / ns, 2) for v, ns in floor_ns.items()} if live_ns else None,
        "generator_over_server_cpu_audio_10_to_70": audio["generator_over_server_cpu"],
        "generator_cores_per_1000_active": {
            "live_300_steady_state": round(statistics.median(steady_cores), 3) if steady_cores else None,
            "audio_10_to_70_whole_run": audio["generator_cores_per_1000_active"],
        },
        "lk_over_lkswarm": lk,
        "ceiling": ceiling,
        "shape": {
            "floor": f"{SOCKETS} sockets x {RATE} pps of {SIZE} B, one burst to all sockets every {1000 // RATE} ms",
            "floor_coalesce_ms": HUB_COALESCE_MS,
            "live": "1 room, 300 participants, 1 audio publisher, 40 s, embedded livekit-server",
        },
        "floor_runs": floors,
        "floor_no_coalescing_runs": bare,
        "live_runs": lives,
        "audio_shape": audio,
        "suite_wall_s": round(time.perf_counter() - started, 1),
        "note": (
            "live ns/packet is the whole generator process (Python main thread, media thread, signal) over the "
            "steady-state seconds; the floor is one receiver thread that does nothing with the packets; the "
            "sender's and the kernel's softirq work on loopback is charged to the sending process in both cases"
        ),
    }


def ab_live(tree_a: str, tree_b: str, rounds: int) -> dict[str, Any]:
    """The live cost per packet of two checkouts' ``python/`` directories, interleaved A,B,B,A,..."""
    sides = {"A": tree_a, "B": tree_b}
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for k in range(rounds):
        for side in ("A", "B") if k % 2 == 0 else ("B", "A"):
            runs[side].append(live_run(python_path=sides[side]))
    ns = {side: [r["ns_per_packet"] for r in runs[side] if r["ns_per_packet"]] for side in sides}
    median = {side: round(statistics.median(v), 1) if v else None for side, v in ns.items()}
    return {
        "a": tree_a,
        "b": tree_b,
        "rounds": rounds,
        "live_ns_per_packet": median,
        "ratio_a_over_b": round(median["A"] / median["B"], 3) if median["A"] and median["B"] else None,
        "spread": {side: [min(v), max(v)] if v else None for side, v in ns.items()},
        "runs": runs,
    }


def record_ab(tree_a: str, tree_b: str, rounds: int, base_commit: str, name: str = "floor-ab") -> Path:
    """`ab_live`, recorded as ``bench/results/<today>-<name>.json`` (by default issue #24's A/B: this tree over
    the commit the issue started from; another name for a regression check against a later base), with what
    was compared."""
    import datetime

    from run_all import write_result

    result = ab_live(tree_a, tree_b, rounds)
    result.update(
        a="this tree (python/, its built _core)",
        b=f"{base_commit}, built the same way (its own _core)",
        b_commit=base_commit,
        note=(
            ("Issue #24's 'live cost halved' A/B" if name == "floor-ab" else f"An A/B against {base_commit}")
            + ": interleaved A,B,B,A,... on the media suite's live shape (1 room, "
            "300 participants, 1 audio publisher, 40 s, embedded livekit-server); ns per packet is the whole "
            "generator process's CPU over the steady-state seconds over the packets received in them."
        ),
    )
    command = f"python bench/bench_floor.py --ab <this tree>/python <{base_commit}>/python --rounds {rounds}"
    command += f" --record {base_commit} --name {name}"
    return write_result(name, result, datetime.date.today().isoformat(), command)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ab", nargs=2, metavar=("TREE_A", "TREE_B"), help="two checkouts' python/ directories")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--record", metavar="BASE_COMMIT", help="with --ab: record it in bench/results/ (TREE_B is BASE_COMMIT)"
    )
    parser.add_argument("--name", default="floor-ab", help="with --record: the result's name (<date>-<name>.json)")
    parser.add_argument(
        "--ceiling", action="store_true", help="lk over lkswarm and its ceiling only, recorded (--rounds: lk rounds)"
    )
    args = parser.parse_args()
    if args.ceiling:
        print(record_ceiling(args.rounds))
    elif args.ab and args.record:
        print(record_ab(args.ab[0], args.ab[1], args.rounds, args.record, args.name))
    else:
        print(json.dumps(ab_live(args.ab[0], args.ab[1], args.rounds) if args.ab else main(), indent=2))
