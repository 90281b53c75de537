"""Runs a scenario end to end: the embedded server when no URL is given, the engine, the report."""

from __future__ import annotations

import os
import secrets
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvloop

from lkswarm.auth import Credentials
from lkswarm.config import RunConfig
from lkswarm.engine import Engine
from lkswarm.errors import ConfigError
from lkswarm.plan import build_plan
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


def run_scenario(
    config: RunConfig,
    credentials: Credentials,
    *,
    on_server: Callable[[LocalServer], None] | None = None,
    observers: list[Observer] | None = None,
    thresholds: list[Threshold] | None = None,
) -> RunResult:
    """Runs ``config`` and returns its report; starts and stops a local server when no URL is set."""
    if not config.run_tag:
        config = config.model_copy(update={"run_tag": secrets.token_hex(3)})
    url = resolve_url(config)
    local: LocalServer | None = None
    if url is None:
        local = LocalServer(credentials)
        local.start()
        url = local.url
        if on_server is not None:
            on_server(local)
    try:
        engine = Engine(config, credentials, url, observers)
        report = uvloop.run(engine.run())
    finally:
        if local is not None:
            local.stop()
    report["target"] = {"url": url, "embedded_server": local is not None}
    evaluate(report, thresholds or [])
    rows = engine.media_totals.track_rows if engine.media_totals is not None else []
    return RunResult(report, rows)
