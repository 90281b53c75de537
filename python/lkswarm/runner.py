"""Runs a scenario end to end: the embedded server when no URL is given, the engine, the report."""

from __future__ import annotations

import os
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvloop

from lkswarm.auth import Credentials
from lkswarm.config import RunConfig
from lkswarm.engine import Engine
from lkswarm.errors import ConfigError
from lkswarm.netem import ImpairmentError, ProbeNetwork, parse_impairment, unsupported_reason
from lkswarm.plan import build_plan
from lkswarm.probe import probe_count
from lkswarm.server import LocalServer
from lkswarm.thresholds import Threshold, evaluate
from lkswarm.timeline import Observer

CLOUD_SUFFIX = ".livekit.cloud"
CLOUD_MAX_PARTICIPANTS = 50


@dataclass(slots=True)
class RunResult:
    report: dict[str, Any]
    track_rows: list[dict[str, Any]] = field(default_factory=list)


def resolve_url(config: RunConfig) -> str | None:
    """``--url`` wins, then ``LIVEKIT_URL``; None means the embedded server."""
    return config.url or os.environ.get("LIVEKIT_URL") or None


def check_cloud_guard(config: RunConfig, permitted: bool) -> None:
    """Refuses big runs against LiveKit Cloud without an explicit --i-have-permission, as ``lk`` does."""
    url = resolve_url(config)
    if url is None or permitted:
        return
    host = urllib.parse.urlsplit(url if "://" in url else f"wss://{url}").hostname or ""
    planned = len(build_plan(config))
    if host.endswith(CLOUD_SUFFIX) and planned > CLOUD_MAX_PARTICIPANTS:
        raise ConfigError(
            f"refusing to run {planned} participants against {host}: load tests on LiveKit Cloud above "
            f"{CLOUD_MAX_PARTICIPANTS} participants need LiveKit's permission (their terms forbid unannounced load, "
            "and lk perf load-test refuses too). If you have it, add --i-have-permission."
        )


def check_probe_network(config: RunConfig) -> None:
    """Refuses ``probe_impair`` (before the run, as a usage error) where it cannot work."""
    if config.probe_impair is None:
        return
    if not probe_count(config):
        raise ConfigError("--probe-impair impairs the probes' network, but this run has no probes (--probes N)")
    if resolve_url(config) is not None:
        raise ConfigError(
            "--probe-impair needs the embedded server (leave out --url): the server must be started after the "
            "probes' network namespace exists, so that it listens on the namespace's gateway address"
        )
    reason = unsupported_reason(parse_impairment(config.probe_impair))
    if reason is not None:
        raise ImpairmentError(f"--probe-impair: {reason}")


def open_probe_network(config: RunConfig) -> ProbeNetwork | None:
    """The probes' impaired namespace when ``probe_impair`` is set (see lkswarm.netem); None otherwise."""
    if config.probe_impair is None:
        return None
    check_probe_network(config)
    network = ProbeNetwork(parse_impairment(config.probe_impair), probe_count(config))
    network.open()
    return network


def run_scenario(
    config: RunConfig,
    credentials: Credentials,
    *,
    on_server: Callable[[LocalServer], None] | None = None,
    observers: list[Observer] | None = None,
    thresholds: list[Threshold] | None = None,
    worker: tuple[int, int] = (0, 1),
    start_gate: Callable[[], Awaitable[float]] | None = None,
) -> RunResult:
    """Runs ``config`` and returns its report; starts and stops a local server when no URL is set.

    ``worker`` and ``start_gate`` make this process one of several (see `lkswarm.workers`).
    """
    if not config.run_tag:
        config = config.model_copy(update={"run_tag": secrets.token_hex(3)})
    url = resolve_url(config)
    network = open_probe_network(config)  # before the server: it must bind the namespace's gateway
    local: LocalServer | None = None
    try:
        if url is None:
            media_interface = (network.root_device, network.gateway_ip) if network is not None else None
            local = LocalServer(credentials, media_interface=media_interface)
            local.start()
            url = local.url
            if on_server is not None:
                on_server(local)
        engine = Engine(
            config, credentials, url, observers, probe_network=network, worker=worker, start_gate=start_gate
        )
        report = uvloop.run(engine.run())
    finally:
        if local is not None:
            local.stop()
        if network is not None:
            network.close()
    report["target"] = {"url": url, "embedded_server": local is not None}
    evaluate(report, thresholds or [])
    rows = engine.media_totals.track_rows if engine.media_totals is not None else []
    return RunResult(report, rows)
