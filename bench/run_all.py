"""`make bench`: runs every benchmark suite, writes bench/results/<date>-<suite>.json, updates the README table.

Every figure that has a target is a ratio measured in the same run on the same machine, because the
machines are shared and noisy. Usage: ``python bench/run_all.py [suite ...]`` (default: all suites).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
PYTHON = sys.executable
sys.path.insert(0, str(BENCH))


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("lkswarm", "protobuf", "livekit-protocol", "websockets", "uvloop"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


def codec_suite() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "codec.json"
        subprocess.run(
            [PYTHON, "-m", "pytest", str(BENCH / "bench_codec.py"), "--benchmark-only", "-q", "-p", "no:cacheprovider",
             f"--benchmark-json={out}", "--benchmark-min-rounds=20"],
            check=True, cwd=ROOT, capture_output=True,
        )  # fmt: skip
        data = json.loads(out.read_text())
    median_ns: dict[str, float] = {b["name"]: b["stats"]["median"] * 1e9 for b in data["benchmarks"]}
    correct = {b["name"]: b["extra_info"].get("correct") for b in data["benchmarks"] if "correct" in b["extra_info"]}

    def ratio(baseline: str, ours: str) -> float:
        return round(median_ns[baseline] / median_ns[ours], 2)

    return {
        "median_ns": {k: round(v, 1) for k, v in median_ns.items()},
        "correct": correct,
        "ratios_vs_upb": {
            "peek (mixed corpus of 8 frames)": ratio("test_peek_upb", "test_peek_ours"),
            "decode+read update with 50 participants": ratio("test_decode_read_upb", "test_decode_read_ours"),
            "encode_ping": ratio("test_encode_ping_upb", "test_encode_ping_ours"),
        },
        "targets": {"peek": 10, "decode+read": 2, "encode_ping": 5},
        "call_overhead_ns": {
            "noop": round(median_ns["test_call_overhead[noop]"], 1),
            "peek 12 B": round(median_ns["test_call_overhead[peek]"], 1),
        },
    }


def signal_path_suite(connections: int = 100, seconds: float = 3.0, repeats: int = 3) -> dict[str, Any]:
    from bench_engine import frame_source

    per_rt: dict[str, list[float]] = {"bare": [], "websockets": [], "lkswarm": []}
    with frame_source() as url:
        port = url.rsplit(":", 1)[1]
        for _ in range(repeats):
            for kind, runs in per_rt.items():  # interleaved, so drift hits every client alike
                out = subprocess.run(
                    [PYTHON, str(BENCH / "signal_clients.py"), kind, port, str(connections), str(seconds)],
                    check=True, capture_output=True, text=True, timeout=120,
                )  # fmt: skip
                result = json.loads(out.stdout.strip().splitlines()[-1])
                runs.append(result["cpu_s"] / max(1, result["round_trips"]) * 1e6)
    med = {k: round(statistics.median(v), 2) for k, v in per_rt.items()}
    return {
        "connections": connections,
        "client_cpu_us_per_round_trip": med,
        "all_runs_us": {k: [round(x, 2) for x in v] for k, v in per_rt.items()},
        "ratio_to_bare_protocol": {k: round(v / med["bare"], 2) for k, v in med.items()},
        "target_ratio_lkswarm": 1.5,
    }


def engine_suite() -> dict[str, Any]:
    from bench_engine import main

    return main()


def media_suite() -> dict[str, Any]:
    from bench_media import main

    return main()


def fuzz_suite() -> dict[str, Any]:
    env = dict(os.environ, LKSWARM_FUZZ_CASES=os.environ.get("LKSWARM_FUZZ_CASES", "1000000"))
    out = subprocess.run(
        ["cargo", "test", "--release", "--test", "fuzz_no_panic", "--", "--ignored", "--nocapture"],
        check=True, cwd=ROOT, capture_output=True, text=True, env=env,
    )  # fmt: skip
    match = re.search(r"fuzz: (\d+) inputs, (\d+) accepted, (\d+) rejected, 0 panics", out.stdout + out.stderr)
    if not match:
        raise RuntimeError(f"fuzz run printed no summary:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    inputs, accepted, rejected = (int(g) for g in match.groups())
    return {"inputs": inputs, "accepted": accepted, "rejected": rejected, "panics": 0}


def vs_lk_suite() -> dict[str, Any]:
    from bench_vs_lk import head_to_head

    return head_to_head(duration_s=60)


def soak_suite() -> dict[str, Any]:
    from bench_soak import main

    return main(minutes=30, rooms=10, participants=20, publishers=2)


def single_pc_suite() -> dict[str, Any]:
    from bench_single_pc import main

    return main()


def data_suite() -> dict[str, Any]:
    from bench_data import main

    return main()


def ray_suite() -> dict[str, Any]:
    from bench_ray import main

    return main()


def floor_suite() -> dict[str, Any]:
    from bench_floor import main

    return main()


def scale_suite() -> dict[str, Any]:
    from bench_vs_lk import scale

    return scale(duration_s=60)


def startup_suite() -> dict[str, Any]:
    from bench_startup import measure

    return measure(rounds=7, other=None)


SUITES: dict[str, Callable[[], dict[str, Any]]] = {
    "codec": codec_suite,
    "signal-path": signal_path_suite,
    "engine": engine_suite,
    "media": media_suite,
    "fuzz": fuzz_suite,
    "vs-lk": vs_lk_suite,
    "scale": scale_suite,
    "soak": soak_suite,
    "single-pc": single_pc_suite,
    "data": data_suite,
    "floor": floor_suite,
    "ray": ray_suite,
    "startup": startup_suite,
}

COMMANDS = {
    "codec": "pytest bench/bench_codec.py --benchmark-only",
    "signal-path": "python bench/run_all.py signal-path",
    "engine": "python bench/bench_engine.py",
    "media": "python bench/bench_media.py",
    "fuzz": "LKSWARM_FUZZ_CASES=1000000 cargo test --release --test fuzz_no_panic -- --ignored",
    "vs-lk": "python bench/bench_vs_lk.py head-to-head --duration 60",
    "scale": "python bench/bench_vs_lk.py scale --duration 60",
    "soak": "python bench/bench_soak.py --minutes 30",
    "single-pc": "python bench/bench_single_pc.py",
    "data": "python bench/bench_data.py",
    "floor": "python bench/bench_floor.py",
    "floor-ceiling": "python bench/bench_floor.py --ceiling --rounds 3",
    "floor-ab": "python bench/bench_floor.py --ab <this tree>/python <the base>/python --rounds 4 --record <base>",
    "ray": "python bench/bench_ray.py",
    "startup": "python bench/bench_startup.py --rounds 7 --record startup",
}


def write_result(suite: str, result: dict[str, Any], today: str, command: str | None = None) -> Path:
    """Records ``result`` as ``bench/results/<today>-<suite>.json``; ``command`` says how to repeat it (by
    default the suite's entry in COMMANDS)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{today}-{suite}.json"
    record = {
        "suite": suite,
        "date": today,
        "machine": machine(),
        "command": command or COMMANDS[suite],
        "result": result,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def latest_results() -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for path in sorted(RESULTS.glob("*.json")):
        record = json.loads(path.read_text())
        latest[record["suite"]] = record | {"file": path.name}
    return latest


def vs_lk_rows(latest: dict[str, dict[str, Any]]) -> list[str]:
    """The head-to-head rows: lkswarm on its default path and on lk's, against lk."""
    rows: list[str] = []
    if not ("vs-lk" in latest and "workloads" in latest["vs-lk"]["result"]):
        return rows
    r = latest["vs-lk"]["result"]
    f = latest["vs-lk"]["file"]
    from bench_vs_lk import cores_ratio

    for name, w in r["workloads"].items():
        ours, lk = w["runs"]["lkswarm"], w["runs"]["lk"]
        seen = f"{ours['server_census']['active']} / {lk['server_census']['active']}"
        packets = f"{ours['packets_received']:,} / {lk['packets_received']:,}"
        verdict = "" if w["valid"] else " INVALID: the server did not see everyone ACTIVE and every track"
        if "LFS" in r.get("lk_media", "LFS"):
            verdict += " (lk built with LFS placeholder media)"
        cores = cores_ratio(ours, lk)
        same_path = w["runs"].get("lkswarm_rtc")  # recorded since 2026-12-05: lkswarm on lk's /rtc
        on_lk_path = (
            f", lkswarm on /rtc/v1; on lk's signaling path (/rtc, two PeerConnections) {same_path['cpu_s']} / "
            f"{same_path['wall_s']} s, lk uses {cores_ratio(same_path, lk)}×"
            if same_path
            else ""
        )
        rows.append(
            f"| vs lk | {name.replace('_', ' ')}, 60 s: generator CPU-s over wall s, lkswarm / lk (ACTIVE seen "
            f"by the server; packets received) | {ours['cpu_s']} / {ours['wall_s']} s vs {lk['cpu_s']} / "
            f"{lk['wall_s']} s ({seen}; {packets}); lk uses {cores}× lkswarm's CPU per participant-second, "
            f"{w['cpu_per_packet_ratio_lk_over_lkswarm'] or '–'}× per packet{on_lk_path}"
            f"{verdict} | {'≥ 5×' if name.startswith('video') else '≥ 6×'} (aim 10×) | {f} |"
        )
        rows.append(
            f"| vs lk | {name.replace('_', ' ')}: max RSS of the tool's process tree lkswarm / lk; server CPU-s "
            f"| {ours['max_rss_mib']} / {lk['max_rss_mib']} MiB; {ours['server_cpu_s']} / {lk['server_cpu_s']} s "
            f"| – | {f} |"
        )
    return rows


def per_round_note(head_to_head: dict[str, Any]) -> str:
    """The head-to-head's rounds, for the row: like-for-like ratios round by round, and per server CPU-s."""
    from bench_vs_lk import per_server_cpu_ratio

    workloads = head_to_head.get("workloads", {})
    if not all("rounds" in w for w in workloads.values()):
        return ""  # recorded before the head-to-head ran rounds (2026-12-05)
    notes = []
    for name, w in workloads.items():
        rounds = w["rounds"]
        per_round = ", ".join(f"{r}×" for r in w["cores_ratio_per_round"]["same_path"])
        per_server = per_server_cpu_ratio(rounds["lkswarm_rtc"], rounds["lk"])
        notes.append(f"{name.split('_')[0]}: rounds {per_round}, per server CPU-s {per_server}×")
    return f" (like for like, {len(next(iter(workloads.values()))['rounds']['lk'])} rounds: {'; '.join(notes)})"


def floor_rows(latest: dict[str, dict[str, Any]]) -> list[str]:
    """The floor suite's rows: live over the bare receiver, generator over server, lk over lkswarm."""
    rows: list[str] = []
    if "floor" not in latest:
        return rows
    r, f = latest["floor"]["result"], latest["floor"]["file"]
    floor, ratio = r["floor_ns_per_packet"], r["ratio_live_over_floor"] or {}
    rows.append(
        f"| floor | live CPU per received packet (300 participants, 1 audio publisher) over a bare receiver's: "
        f"recvmmsg / io_uring | {r['live_ns_per_packet']} ns over {floor.get('recvmmsg')} / "
        f"{floor.get('io_uring')} ns ({ratio.get('recvmmsg', '–')}× / {ratio.get('io_uring', '–')}×) | – | {f} |"
    )
    cores = r["generator_cores_per_1000_active"]
    rows.append(
        f"| floor | generator CPU over server CPU, 10 audio publishers -> 70 subscribers; generator cores per "
        f"1,000 ACTIVE audio participants | {r['generator_over_server_cpu_audio_10_to_70']}; "
        f"{cores['live_300_steady_state']} | ≤ 0.3 | {f} |"
    )
    lk = r.get("lk_over_lkswarm") or {}
    if "audio_2_to_100" in lk and "video_1_to_50" in lk:
        audio, video = lk["audio_2_to_100"], lk["video_1_to_50"]
        valid = "" if audio["valid"] and video["valid"] else " (INVALID: see the file)"
        key = "cores_ratio_lk_over_lkswarm_same_path"  # recorded since 2026-12-05: both on lk's /rtc
        same, v1 = (
            (f"{audio[key]}× / {video[key]}× with both on /rtc (lk's path); ", " with lkswarm on /rtc/v1")
            if key in audio
            else ("", "")
        )
        rows.append(
            f"| floor | lk over lkswarm in cores, same run: audio 2 -> 100 / video 1 -> 50, each held 60 s | "
            f"{same}{audio['cores_ratio_lk_over_lkswarm']}× / {video['cores_ratio_lk_over_lkswarm']}×{v1}{valid}"
            f"{per_round_note(lk['runs'])} | ≥ 6× / ≥ 5× (aim 10×) | {f} |"
        )
    return rows


def ceiling_rows(latest: dict[str, dict[str, Any]]) -> list[str]:
    """lk over lkswarm beside its ceilings (bench_floor's section 5), from the newer of the floor suite and
    ``--ceiling``'s recording (``floor-ceiling``)."""
    recorded = [
        latest[suite] for suite in ("floor", "floor-ceiling") if "ceiling" in latest.get(suite, {}).get("result", {})
    ]
    if not recorded:
        return []
    record = max(recorded, key=lambda r: r["date"])
    ceiling, lk = record["result"]["ceiling"], record["result"]["lk_over_lkswarm"]
    names = ("audio_2_to_100", "video_1_to_50")
    if not all(name in ceiling and "ceiling_lk_over_floor" in ceiling[name] and name in lk for name in names):
        return []
    audio, video = (ceiling[name] for name in names)

    def pair(key: str) -> str:
        return f"{audio.get(key, '–')}× / {video.get(key, '–')}×"

    ratios = " / ".join(f"{lk[name]['cores_ratio_lk_over_lkswarm_same_path']}×" for name in names)
    rows = [
        f"| floor | lk over lkswarm in cores (both on /rtc), audio 2 -> 100 / video 1 -> 50, beside its ceilings in "
        f"the same run: lk over a receiver that only reads and authenticates (AES-256-GCM) each packet; over that "
        f"receiver plus lkswarm's Python share | {ratios}{per_round_note(lk['runs'])}; ceilings "
        f"{pair('ceiling_lk_over_floor')}; with Python as measured {pair('ceiling_with_python_as_is')} (media "
        f"thread over the floor {audio.get('media_thread_over_floor')}× / {video.get('media_thread_over_floor')}×) "
        f"| ≥ 6× / ≥ 5× | {record['file']} |"
    ]
    if "cpu_split" in audio and "cpu_split" in video:

        def split(s: dict[str, Any]) -> str:
            hold_us = s["python_hold_us_per_participant_s"]
            return (
                f"{s['total_cpu_s']} = {s['media_thread_cpu_s']} media thread + {s['python_setup_and_joins_cpu_s']} "
                f"Python set-up, joins and teardown + {s['python_hold_cpu_s']} Python hold ({hold_us} µs per "
                f"participant-second) + {s['outside_run_cpu_s']} outside the run"
            )

        rows.append(
            f"| floor | lkswarm's CPU-s (on /rtc, the median run) by part, audio / video; lk over lkswarm if lkswarm "
            f"were: its media thread alone (no Python); without its steady (hold) Python; the floor plus Python's "
            f"set-up, joins, teardown and start-up | {split(audio['cpu_split'])} / {split(video['cpu_split'])}; "
            f"{pair('ceiling_media_thread_as_is_without_python')}; {pair('ceiling_without_steady_python')}; "
            f"{pair('ceiling_floor_and_python_joins_only')} | ≥ 6× / ≥ 5× | {record['file']} |"
        )
    return rows


def startup_rows(latest: dict[str, dict[str, Any]]) -> list[str]:
    """A process's start-up (bench_startup.py), beside the checkout it was compared with when there was one."""
    if "startup" not in latest or "this_tree" not in latest["startup"]["result"]:
        return []
    r, f = latest["startup"]["result"], latest["startup"]["file"]
    names = ("interpreter", "imports", "worker", "tiny_run")

    def figures(side: str) -> str:
        return " / ".join(str(r[side]["cpu_ms"].get(name, "–")) for name in names)

    before = f" (before: {figures('other')}; tiny run {r['this_over_other']['tiny_run']}×)" if "other" in r else ""
    return [
        f"| startup | CPU before the first participant, ms: interpreter / a run's imports / a `--workers` child's "
        f"start / a whole 1-participant, 1 s run | {figures('this_tree')}{before} | – | {f} |"
    ]


def table_rows(latest: dict[str, dict[str, Any]]) -> list[str]:
    rows = ["| suite | figure | result | target | file |", "|---|---|---|---|---|"]
    if "codec" in latest:
        r = latest["codec"]["result"]
        for name, value in r["ratios_vs_upb"].items():
            target = r["targets"]["peek" if name.startswith("peek") else name.split(" ")[0]]
            rows.append(f"| codec | {name}: faster than upb | {value}× | ≥ {target}× | {latest['codec']['file']} |")
        calls = r["call_overhead_ns"]
        rows.append(
            f"| codec | per-call floor: no-op / peek of a 12 B frame | {calls['noop']} / {calls['peek 12 B']} ns | "
            f"– | {latest['codec']['file']} |"
        )
    if "signal-path" in latest:
        r = latest["signal-path"]["result"]
        us = r["client_cpu_us_per_round_trip"]
        ratio = r["ratio_to_bare_protocol"]
        rows.append(
            f"| signal path | client CPU per round trip, {r['connections']} connections: lkswarm / bare Protocol / "
            f"websockets | {us['lkswarm']} / {us['bare']} / {us['websockets']} µs ({ratio['lkswarm']}× / 1× / "
            f"{ratio['websockets']}×) | ≤ 1.5× bare | {latest['signal-path']['file']} |"
        )
    if "engine" in latest:
        r = latest["engine"]["result"]
        rows.append(
            f"| engine | highest join rate with scheduler lateness p99 ≤ 5 ms | "
            f"{r['join_rate']['max_rate_with_lateness_p99_le_5ms']:.0f} joins/s | ≥ 1000 | {latest['engine']['file']} |"
        )
        rows.append(
            f"| engine | RSS per idle signal participant ({r['idle_rss']['participants']}) | "
            f"{r['idle_rss']['kib_per_participant']} KiB | ≤ 20 KiB | {latest['engine']['file']} |"
        )
    if "media" in latest:
        r = latest["media"]["result"]
        f = latest["media"]["file"]
        ns = r["receive_ns_per_packet"]
        rows.append(
            f"| media | CPU per received RTP packet (SRTP + parse + accounting): lkswarm / aiortc | "
            f"{ns['lkswarm']} / {ns['aiortc']} ns ({r['receive_ratio_vs_aiortc']}× less) | "
            f"– (the 20× target is withdrawn, #24: it measured the crypto library) | {f} |"
        )
        if "aes_256_gcm_open_alone" in ns:
            rows.append(
                f"| media | AES-256-GCM open of the payload alone (the floor under any SRTP receive path) | "
                f"{ns['aes_256_gcm_open_alone']} ns (caps the ratio to aiortc at "
                f"{r['receive_ratio_ceiling_vs_aiortc']}×) | – | {f} |"
            )
        h = r["udp_handoff_ns_per_datagram"]
        rows.append(
            f"| media | UDP hand-off per datagram: Rust hub (epoll, GIL released) / uvloop datagram callback | "
            f"{h['rust_hub']} / {h['uvloop_datagram']} ns | – | {f} |"
        )
        sc = r["scale"]
        run = sc["runs"][0]
        per_core = [each["participants_per_core"] for each in sc["runs"]]
        everyone = all(each["active_at_end"] == each["participants"] for each in sc["runs"])
        all_active = "all ACTIVE" if everyone else "NOT all ACTIVE"
        rows.append(
            f"| media | ACTIVE participants per generator core, each receiving 1 audio track "
            f"({run['active_at_end']} for {run['duration_s']:.0f} s, median of {len(sc['runs'])} runs) | "
            f"{sc['participants_per_core']} (runs {min(per_core)} to {max(per_core)}; {all_active}; whole run, "
            f"ramp included: {sc['participants_per_core_whole_run']}) | ≥ 2000 | {f} |"
        )
        rows.append(f"| media | RSS per media participant | {sc['rss_kib_per_participant']} KiB | ≤ 200 KiB | {f} |")
    rows += vs_lk_rows(latest)
    if "scale" in latest:
        r = latest["scale"]["result"]
        f = latest["scale"]["file"]
        for tool, held in r["largest_held"].items():
            steps = r["steps"][tool]
            last_held = [s for s in steps if s["held"]]
            server = f"{last_held[-1]['server_cpu_ms_per_subscriber_s']} ms/s" if last_held else "–"
            packets = f"{last_held[-1]['packets_received']:,}" if last_held else "–"
            rows.append(
                f"| scale | {tool}: most participants held ACTIVE 60 s, 10 audio publishers -> N subscribers "
                f"(server CPU per subscriber; packets received) | {held} ({server}; {packets}) | – | {f} |"
            )
    if "ray" in latest:
        r, f = latest["ray"]["result"], latest["ray"]["file"]
        m, ratio, parts = r["median"], r["ratio_over_workers"], r["median_cpu_s_by_component"]
        for mode in ("ray-local", "ray-auto"):
            ray_s = parts[mode].get("ray_daemons", 0.0) + parts[mode].get("ray_in_actors", 0.0)
            rows.append(
                f"| ray | `--{mode.replace('-', ' ')}` over `--workers {r['shape']['workers']}`: set-up time; CPU of "
                f"every process per participant-second, all / ours (driver + generators; Ray's own: {ray_s:.2f} "
                f"CPU-s) | {m[mode]['setup_s']:.1f} / {m['workers']['setup_s']:.1f} s ({ratio[mode]['setup_s']}×); "
                f"{m[mode]['total_cpu_ms_per_participant_s']} / {m['workers']['total_cpu_ms_per_participant_s']} ms "
                f"({ratio[mode]['total_cpu_ms_per_participant_s']}×) / ours "
                f"{ratio[mode]['ours_cpu_ms_per_participant_s']}× | ≤ 1.1× | {f} |"
            )
    if "single-pc" in latest:
        r = latest["single-pc"]["result"]
        m, ratio, f = r["median"], r["ratio_v1_over_v0"], latest["single-pc"]["file"]
        shape = r["shape"]
        rows.append(
            f"| single PC | /rtc/v1 over /rtc, {shape['rooms']}×{shape['participants']} with 2 audio + 1 video "
            f"publishers, {shape['seconds']:.0f} s: generator CPU / server CPU / UDP sockets per participant "
            f"| {ratio['generator_cpu_s_per_participant']}× / {ratio['server_cpu_s_per_participant']}× / "
            f"{ratio['udp_sockets_per_participant']}× (active p50 {m['v1']['active_p50_ms']:.0f} vs "
            f"{m['v0']['active_p50_ms']:.0f} ms) | fewer sockets, less CPU | {f} |"
        )
    if "data" in latest:
        r = latest["data"]["result"]
        shape = r["shape"]
        rows.append(
            f"| data | generator CPU per delivered message / server CPU per forwarded message "
            f"({shape['publishers']} publishers × {shape['rate']:g} msg/s of {shape['size']} B to "
            f"{shape['participants'] - 1} others) | {r['generator_cpu_us_per_delivered_message']} / "
            f"{r['server_cpu_us_per_forwarded_message']} µs ({r['ratio_generator_over_server']}×) | "
            f"≤ {r['goal_ratio']}× | {latest['data']['file']} |"
        )
    if "media-ab-sctp" in latest:
        r, f = latest["media-ab-sctp"]["result"], latest["media-ab-sctp"]["file"]
        spread = r["participants_per_core_spread"]
        rows.append(
            f"| media A/B | ACTIVE audio participants per core, this tree over {r['b']} | "
            f"{r['participants_per_core_ratio_a_over_b']}× (runs {spread['A'][0]}–{spread['A'][1]} vs "
            f"{spread['B'][0]}–{spread['B'][1]}) | within noise | {f} |"
        )
    rows += floor_rows(latest)
    rows += ceiling_rows(latest)
    if "floor-ab" in latest:
        r, f = latest["floor-ab"]["result"], latest["floor-ab"]["file"]
        spread = r["spread"]
        rows.append(
            f"| floor A/B | live CPU per received packet (300 participants, 1 audio publisher), this tree over "
            f"{r['b_commit']} | {r['live_ns_per_packet']['A']} / {r['live_ns_per_packet']['B']} ns "
            f"({r['ratio_a_over_b']}×; runs {spread['A'][0]}–{spread['A'][1]} vs {spread['B'][0]}–{spread['B'][1]}) "
            f"| ≤ 0.5× | {f} |"
        )
    rows += startup_rows(latest)
    if "fuzz" in latest:
        r = latest["fuzz"]["result"]
        rows.append(
            f"| fuzz | mutated frames through validate, views, JSON and peek | {r['inputs']:,} inputs, "
            f"{r['panics']} panics | 0 panics | {latest['fuzz']['file']} |"
        )
    return rows


def update_readme(latest: dict[str, dict[str, Any]]) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start not in text or end not in text:
        return
    machine_line = ""
    if latest:
        # Suites are recorded on different days, possibly on different machines: name each machine's suites.
        machines: dict[str, list[str]] = {}
        for suite, entry in latest.items():
            m = entry["machine"]
            cores = m.get("cores", m.get("cpus", "?"))
            name = f"{m.get('cpu', 'an unrecorded CPU')}, {cores} cores, Python {m.get('python', '?')}"
            machines.setdefault(name, []).append(suite)
        parts = [f"{name} ({', '.join(suites)})" for name, suites in machines.items()]
        machine_line = "Measured on " + "; ".join(parts) + ".\n\n"
    block = f"{start}\n{machine_line}" + "\n".join(table_rows(latest)) + f"\n{end}"
    readme.write_text(text[: text.index(start)] + block + text[text.index(end) + len(end) :])


def main(argv: list[str]) -> int:
    if argv == ["table"]:  # regenerate the README table from bench/results only
        update_readme(latest_results())
        return 0
    suites = argv or list(SUITES)
    today = datetime.date.today().isoformat()
    for suite in suites:
        print(f"== {suite}", flush=True)
        result = SUITES[suite]()
        path = write_result(suite, result, today)
        print(json.dumps(result, indent=2)[:3000])
        print(f"-> {path.relative_to(ROOT)}", flush=True)
    update_readme(latest_results())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
