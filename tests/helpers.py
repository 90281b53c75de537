"""Helpers shared by the integration tests (run the CLI, check a report's bookkeeping)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lkswarm.app.runner import build_engine
from lkswarm.auth import Credentials
from lkswarm.config import RunConfig
from lkswarm.engine.engine import Engine
from lkswarm.media.tier import LightTier
from lkswarm.probe.tier import ProbeTier
from lkswarm.report.build import build_report

LKSWARM = [sys.executable, "-m", "lkswarm"]


def run_cli(
    args: list[str],
    credentials: Credentials,
    tmp_path: Path,
    timeout_s: float = 180,
    prefix: Sequence[str] = (),
) -> tuple[int, dict[str, Any], str]:
    """``lkswarm run args``, run as ``prefix + lkswarm run ...`` (a wrapper such as seccomp_io_uring.py)."""
    report_path = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env.update(LIVEKIT_API_KEY=credentials.api_key, LIVEKIT_API_SECRET=credentials.api_secret)
    out = subprocess.run(
        [*prefix, *LKSWARM, "run", *args, "--json", str(report_path), "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
    )
    assert "Traceback" not in out.stderr + out.stdout, out.stderr
    assert credentials.api_secret not in out.stderr + out.stdout
    report = json.loads(report_path.read_text())
    assert credentials.api_secret not in report_path.read_text()
    return out.returncode, report, out.stderr


def run_av_room(
    url: str, credentials: Credentials, tmp_path: Path, participants: int, prefix: Sequence[str] = ()
) -> dict[str, Any]:
    """One room of ``participants`` for 12 s, 2 audio publishers and 1 simulcast video publisher to everyone
    else; the run's report, once it is checked clean: exit 0, everyone ACTIVE, every track received, no loss.
    ``prefix`` runs the CLI under a wrapper (`run_cli`)."""
    args = ["--url", url, "--rooms", "1", "--participants", str(participants), "--rate", "20"]
    args += ["--duration", "12s", "--audio-publishers", "2", "--video-publishers", "1"]
    code, report, stderr = run_cli(args, credentials, tmp_path, timeout_s=90, prefix=prefix)
    p = report["participants"]
    assert code == 0, (stderr, p["outcomes"], p["failures"], report["failed_participants"][:3])
    assert_outcomes_reconcile(report)
    assert p["active_at_end"] == participants, p
    media = report["media"]
    assert media["tracks_received"] == participants * 3 - 3 and media["tracks_missing"] == 0, media
    assert media["packets_received"] > 1_000, media
    assert media["packets_lost"] == 0 and media["loss_ratio"] == 0.0, media
    return report


def assert_outcomes_reconcile(report: dict[str, Any]) -> None:
    p = report["participants"]
    assert sum(p["outcomes"].values()) == p["scheduled"]
    assert sum(p["failures"].values()) == p["outcomes"]["failed"]
    assert sum(p["left_reasons"].values()) == p["outcomes"]["left"]
    rooms = report.get("rooms") or []
    if rooms:  # the per-room table counts each participant's outcome once too
        assert sum(row["scheduled"] for row in rooms) == p["scheduled"], rooms
        for kind in ("completed", "left", "failed"):
            assert sum(row[kind] for row in rooms) == p["outcomes"][kind], (kind, rooms)


def run_engine(config: RunConfig, credentials: Credentials, url: str, setup: Any = None) -> dict[str, Any]:
    """Runs an Engine in-process; ``setup(engine)`` installs fault-injection filters before it starts."""

    async def main() -> dict[str, Any]:
        engine = build_engine(config, credentials, url)
        if setup is not None:
            setup(engine)
        return await report_of(engine)

    return asyncio.run(main())


async def report_of(engine: Engine) -> dict[str, Any]:
    """Runs ``engine`` and builds its report, as `lkswarm.app.runner.run_scenario` does."""
    return build_report(await engine.run())


def light_tier(engine: Engine) -> LightTier:
    """The run's light media tier (its hub, its fault-injection filters)."""
    return next(tier for tier in engine.tiers if isinstance(tier, LightTier))


def probe_tier(engine: Engine) -> ProbeTier:
    """The run's probe tier."""
    return next(tier for tier in engine.tiers if isinstance(tier, ProbeTier))


def dead_candidates(sdp: str) -> str:
    """Candidates pointing at a port nobody answers on (the discard port)."""
    return re.sub(r"(a=candidate:\S+ \d+ (?i:udp) \d+ \S+ )\d+", r"\g<1>9", sdp)


def wrong_fingerprint(sdp: str) -> str:
    """The DTLS fingerprint replaced, so the peer's certificate will not match it."""
    return re.sub(r"a=fingerprint:sha-256 [0-9A-Fa-f:]+", "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), sdp)


def lkswarm_env(credentials: Credentials, **extra: str) -> dict[str, str]:
    """The environment of an ``lkswarm`` child process: ours without ``LIVEKIT_*``, the credentials, ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env.update(LIVEKIT_API_KEY=credentials.api_key, LIVEKIT_API_SECRET=credentials.api_secret, **extra)
    return env


def descendants_when(pid: int, enough: Any, timeout_s: float) -> list[Any]:
    """The processes under ``pid`` (psutil), polled until ``enough(processes)`` holds or ``timeout_s`` passes."""
    import time

    import psutil

    deadline = time.monotonic() + timeout_s
    found: list[Any] = []
    while time.monotonic() < deadline:
        try:
            found = psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return found
        if enough(found):
            break
        time.sleep(0.1)
    return found


def alive_after(processes: list[Any], timeout_s: float) -> list[Any]:
    """Those of ``processes`` (psutil) still running after up to ``timeout_s``; a zombie counts as gone (its
    parent was killed, and whether anyone reaps it is up to the machine's init). psutil matches a process by
    pid and start time, so a reused pid is not mistaken for a survivor."""
    import time

    import psutil

    def running(process: Any) -> bool:
        try:
            return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p for p in processes if running(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def lkswarm_files_holding(secret: str, roots: list[Path]) -> list[Path]:
    """Files in ``roots`` whose name starts with ``lkswarm`` (or under a directory so named) holding ``secret``."""
    found: list[Path] = []
    needle = secret.encode()
    for root in roots:
        for entry in root.glob("lkswarm*"):
            try:
                paths = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file()]
            except OSError:
                continue  # another user's, or removed meanwhile
            for path in paths:
                try:
                    if needle in path.read_bytes():
                        found.append(path)
                except OSError:
                    continue
    return found
