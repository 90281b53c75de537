"""Media-tier benchmarks (issue: light media tier). Each figure with a target is a same-run ratio.

1. receive path per RTP packet: our tier (str0m SRTP unprotect + RTP parse + RFC 3550 accounting,
   through `MediaPeer`, Rust, no sockets) vs aiortc's `RtpPacket.parse` + pylibsrtp `unprotect`
   on the same 100-byte Opus-sized packets; beside them, AES-256-GCM open of the payload alone,
   the floor under any receive path and so the ceiling on the ratio;
2. UDP hand-off per datagram: the Rust hub (epoll + recv in the media thread, GIL released) vs a
   uvloop `DatagramProtocol` callback, both fed by the same sender process;
3. ACTIVE media participants per generator core, each receiving one audio track, as generator
   CPU per participant-second over the seconds in which all of them are ACTIVE (the whole-run
   figure, ramp included, and the CPU per join are reported beside it), and RSS per media
   participant, against the embedded livekit-server; the median of five runs.

Usage: ``python bench/bench_media.py`` (prints JSON); ``make bench`` records it.
``--ab TREE`` measures only (3), this tree against another checkout's ``python/`` directory (with its
own built ``_core``), interleaved A,B,B,A,... so the machine's drift hits both alike:
``python bench/bench_media.py --ab /tmp/old/python --label-b affcad0 --rounds 4``; it also compares the media
thread's own CPU (the receive path without Python's share), and ``--media-io epoll`` runs both on that backend.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PACKETS = 50_000


def ours_receive_ns(packets: int = PACKETS) -> tuple[float, float]:
    """(our receive path, AES-256-GCM open alone) in ns per packet, from the Rust bench, one test at
    a time so that neither shares the two cores with the other."""
    env = dict(os.environ, LKSWARM_BENCH_PACKETS=str(packets))
    env.setdefault("CARGO_TARGET_DIR", str(Path.home() / ".cache" / "lkswarm" / "target"))
    out = subprocess.run(
        ["cargo", "test", "--release", "--test", "media_bench", "--", "--ignored", "--nocapture", "--test-threads=1"],
        check=True, cwd=ROOT, capture_output=True, text=True, env=env,
    )  # fmt: skip
    printed = out.stdout + out.stderr
    figures = []
    for name in ("media_bench", "media_bench_floor"):
        match = re.search(rf"{name}: packets=(\d+) ns_per_packet=([\d.]+)", printed)
        if not match:
            raise RuntimeError(f"{name} printed no result:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
        figures.append(float(match.group(2)))
    return figures[0], figures[1]


def aiortc_receive_ns(packets: int = PACKETS) -> float:
    from aiortc.rtcdtlstransport import SRTP_PROFILES
    from aiortc.rtp import RtpPacket
    from pylibsrtp import Policy, Session

    # The profile aiortc offers first, so the one it negotiates with livekit-server (as str0m does:
    # AEAD_AES_256_GCM where libsrtp2 has it), not libsrtp's default.
    srtp = SRTP_PROFILES[0]
    key = os.urandom(srtp.key_length + srtp.salt_length)
    profile = srtp.libsrtp_profile
    sender = Session(policy=Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
    receiver = Session(policy=Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile))
    protected = [
        sender.protect(
            RtpPacket(
                payload_type=111, sequence_number=i & 0xFFFF, timestamp=i * 960, ssrc=4242, payload=bytes(100)
            ).serialize()
        )
        for i in range(packets)
    ]
    parse, unprotect = RtpPacket.parse, receiver.unprotect
    t0 = time.process_time()
    for datagram in protected:
        parse(unprotect(datagram))
    return (time.process_time() - t0) / packets * 1e9


def aiortc_srtp_profile() -> str:
    from aiortc.rtcdtlstransport import SRTP_PROFILES

    return SRTP_PROFILES[0].openssl_profile.decode()


def _blast(port: int, count: int) -> subprocess.Popen[bytes]:
    code = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        "p=b'\\x80\\x6f'+bytes(98)\n"
        f"for _ in range({count}): s.sendto(p,('127.0.0.1',{port}))\n"
    )
    return subprocess.Popen([PYTHON, "-c", code])


def uvloop_handoff_ns(count: int = 200_000) -> float:
    import uvloop

    async def main() -> float:
        received = 0

        class Counter(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                nonlocal received
                received += 1

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Counter, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        t0 = time.process_time()
        sender = _blast(port, count)
        while sender.poll() is None:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        cpu = time.process_time() - t0
        transport.close()
        return cpu / max(1, received) * 1e9

    return uvloop.run(main())


def hub_handoff_ns(count: int = 200_000) -> float:
    from lkswarm import _core

    hub = _core.MediaHub()
    try:
        peer, port = hub.add_peer()
        t0 = time.process_time()
        sender = _blast(port, count)
        sender.wait()
        time.sleep(0.2)
        cpu = time.process_time() - t0  # includes the media thread
        stats = hub.peer_stats(peer)
        received = stats["datagrams_received"] if stats else 0
        return cpu / max(1, received) * 1e9
    finally:
        hub.close()


def steady_state(report: dict[str, Any], participants: int) -> tuple[float, float]:
    """(seconds, generator CPU seconds) over the timeline intervals in which every participant was
    ACTIVE from start to end: the capacity figure, without set-up and joining."""
    seconds, cpu_s, _ = steady_state_totals(report, participants)
    return seconds, cpu_s


def steady_state_totals(report: dict[str, Any], participants: int) -> tuple[float, float, float]:
    """`steady_state`, and the media packets received over those same intervals."""
    timeline = report["timeline"]
    t_s, active = timeline["t_s"], timeline["active"]
    cpu_percent, pps = timeline["cpu_percent"], timeline["media_packets_per_s"]
    seconds = cpu_s = packets = 0.0
    for i in range(1, len(t_s)):
        if active[i - 1] == participants and active[i] == participants:
            interval_s = t_s[i] - t_s[i - 1]
            seconds += interval_s
            cpu_s += interval_s * cpu_percent[i] / 100
            packets += interval_s * pps[i]
    return seconds, cpu_s, packets


def scale_run_report(participants: int = 300, duration_s: int = 40, python_path: str | None = None) -> dict[str, Any]:
    """The report of one scale run (1 room, 1 audio publisher, against the embedded server); ``python_path``
    runs another checkout's package (PYTHONPATH, with its own built ``_core``) instead of this one."""
    env = dict(os.environ, PYTHONPATH=python_path) if python_path else None
    with tempfile.TemporaryDirectory() as tmp:
        report_path = Path(tmp) / "r.json"
        cmd = [
            PYTHON, "-m", "lkswarm", "run", "--rooms", "1", "--participants", str(participants),
            "--audio-publishers", "1", "--rate", "50", "--duration", f"{duration_s}s", "--no-verify-rooms",
            "--quiet", "--json", str(report_path),
        ]  # fmt: skip
        subprocess.run(cmd, check=False, timeout=duration_s + 120, capture_output=True, cwd=ROOT, env=env)
        report: dict[str, Any] = json.loads(report_path.read_text())
    return report


def participants_per_core(
    participants: int = 300, duration_s: int = 40, python_path: str | None = None
) -> dict[str, Any]:
    """One scale run; ``python_path`` runs another checkout's package (PYTHONPATH) instead of this one."""
    report = scale_run_report(participants, duration_s, python_path)
    generator = report["generator"]
    active = report["participants"]["active_at_end"]
    seconds = report["duration_s"]
    cpu_per_participant_s = generator["cpu_s"] / max(1, active * seconds)
    steady_s, steady_cpu_s = steady_state(report, participants)
    steady_cores = steady_cpu_s / steady_s if steady_s else 0.0
    return {
        "participants": participants,
        "active_at_end": active,
        "duration_s": seconds,
        "generator_cpu_s": generator["cpu_s"],
        # The media thread alone, the whole run (the hub's own clock of its thread).
        "media_thread_cpu_s": report["media"].get("hub", {}).get("thread_cpu_s"),
        "media_io": report["media"].get("hub", {}).get("io"),
        # Capacity: generator CPU per participant-second while all of them are ACTIVE and receiving.
        "participants_per_core": round(participants / steady_cores) if steady_cores and active == participants else 0,
        "steady_state_s": round(steady_s, 1),
        # The whole run, set-up and the joining ramp included, over active participants x duration.
        "participants_per_core_whole_run": round(1 / cpu_per_participant_s) if cpu_per_participant_s else 0,
        # What set-up and joining cost on top of the steady rate, per participant.
        "join_cpu_ms_per_participant": round((generator["cpu_s"] - steady_cores * seconds) * 1000 / participants, 1),
        # From the end of set-up: the clips and the codec libraries are paid once per run, not per participant.
        "rss_kib_per_participant": round((generator["rss_end_mb"] - generator["rss_ready_mb"]) * 1024 / max(1, active)),
        "rss_setup_mb": round(generator["rss_ready_mb"] - generator["rss_start_mb"], 1),
        "loss_ratio": report["media"]["loss_ratio"],
        "packets_received": report["media"]["packets_received"],
        # Whether the generator itself kept up (a saturated one would measure its own queueing).
        "generator_valid": generator["valid"],
        "media_lag_p99_ms": (generator.get("media_lag_ms") or {}).get("p99"),
        "loop_lag_p99_ms": generator["loop_lag_ms"]["p99"],
        "frames_skipped": report["media"].get("frames_skipped", 0),
        "note": "generator CPU includes the media thread; the server runs in its own process",
    }


def scale_runs(repeats: int = 5) -> dict[str, Any]:
    """The scale run `repeats` times: on this shared machine runs minutes apart differ by up to a
    third (2,286 to 3,041 per core within three minutes, same build), so the median of each figure is
    the result, and every run is kept beside it."""
    runs = [participants_per_core() for _ in range(repeats)]
    median_keys = (
        "participants_per_core", "participants_per_core_whole_run", "join_cpu_ms_per_participant",
        "rss_kib_per_participant", "loss_ratio",
    )  # fmt: skip
    median = {key: statistics.median(run[key] for run in runs) for key in median_keys}
    return {**median, "runs": runs}


def ab_scale(other: str, label_b: str, rounds: int) -> dict[str, Any]:
    """The scale run of this tree (A) against ``other`` (B), ``rounds`` each, interleaved A,B,B,A,..."""
    sides = {"A": None, "B": other}
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    backend = os.environ.get("LKSWARM_MEDIA_IO")
    for k in range(rounds):
        for side in ("A", "B") if k % 2 == 0 else ("B", "A"):
            run = participants_per_core(python_path=sides[side])
            if backend and run["media_io"] not in (None, backend):
                raise SystemExit(f"side {side} ran on {run['media_io']}, not the {backend} asked for")
            runs[side].append(run)
    keys = ("participants_per_core", "participants_per_core_whole_run", "join_cpu_ms_per_participant", "loss_ratio")
    median = {side: {key: statistics.median(run[key] for run in runs[side]) for key in keys} for side in sides}
    per_core = {side: [run["participants_per_core"] for run in runs[side]] for side in sides}
    thread_s = {side: [run["media_thread_cpu_s"] for run in runs[side]] for side in sides}
    # A tree older than the hub's thread clock reports none: then there is no media-thread comparison.
    thread_known = all(value is not None for values in thread_s.values() for value in values)
    return {
        "a": "this tree",
        "b": label_b,
        "rounds": rounds,
        "median": median,
        "participants_per_core_ratio_a_over_b": round(
            median["A"]["participants_per_core"] / max(1, median["B"]["participants_per_core"]), 3
        ),
        # Noise: the spread of each side's own runs, to read the ratio against.
        "participants_per_core_spread": {side: [min(values), max(values)] for side, values in per_core.items()},
        # The media thread's CPU alone: without Python's share (the same on both sides of a Rust change) the
        # receive path's difference is not diluted; pairs are the runs of one round, A against B.
        "media_thread_cpu_s": {side: statistics.median(values) for side, values in thread_s.items()}
        if thread_known
        else None,
        "media_thread_cpu_ratio_a_over_b": round(statistics.median(thread_s["A"]) / statistics.median(thread_s["B"]), 3)
        if thread_known
        else None,
        "media_thread_rounds_a_lower": sum(a < b for a, b in zip(thread_s["A"], thread_s["B"], strict=True))
        if thread_known
        else None,
        "runs": runs,
    }


def main() -> dict[str, Any]:
    ours, decrypt_floor = ours_receive_ns()
    aiortc = aiortc_receive_ns()
    hub = hub_handoff_ns()
    uv = uvloop_handoff_ns()
    scale = scale_runs()
    return {
        "receive_ns_per_packet": {
            "lkswarm": round(ours, 1),
            "aiortc": round(aiortc, 1),
            # The cipher alone, no RTP or SRTP bookkeeping: no receive path can cost less.
            "aes_256_gcm_open_alone": round(decrypt_floor, 1),
        },
        "receive_ratio_vs_aiortc": round(aiortc / ours, 2),
        # The ratio a receive path that did nothing but decrypt would reach: the 20x target's headroom.
        "receive_ratio_ceiling_vs_aiortc": round(aiortc / decrypt_floor, 1),
        "udp_handoff_ns_per_datagram": {"rust_hub": round(hub, 1), "uvloop_datagram": round(uv, 1)},
        "scale": scale,
        "targets": {"receive_ratio": 20, "receive_ns": 1000, "participants_per_core": 2000, "rss_kib": 200},
        # str0m offers AEAD_AES_256_GCM first (str0m 0.25, crypto/srtp.rs) and both ends are str0m.
        "srtp_profiles": {"lkswarm": "SRTP_AEAD_AES_256_GCM", "aiortc": aiortc_srtp_profile()},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ab", metavar="TREE", help="another checkout's python/ directory to compare with")
    parser.add_argument("--label-b", default="baseline", help="what the other checkout is (e.g. its commit)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--media-io", choices=("io_uring", "epoll"), help="the hub's I/O backend for every run (LKSWARM_MEDIA_IO)"
    )
    args = parser.parse_args()
    if args.media_io:
        os.environ["LKSWARM_MEDIA_IO"] = args.media_io
    print(json.dumps(ab_scale(args.ab, args.label_b, args.rounds) if args.ab else main(), indent=2))
