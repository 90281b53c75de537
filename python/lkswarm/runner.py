"""Runs a scenario end to end: the embedded server when no URL is given, the engine, the report."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import uvloop

from lkswarm.auth import Credentials
from lkswarm.config import RunConfig
from lkswarm.engine import Engine
from lkswarm.media import write_track_csv
from lkswarm.server import LocalServer


def resolve_url(config: RunConfig) -> str | None:
    """``--url`` wins, then ``LIVEKIT_URL``; None means the embedded server."""
    return config.url or os.environ.get("LIVEKIT_URL") or None


def run_scenario(
    config: RunConfig, credentials: Credentials, *, on_server: Any = None, csv_dir: Path | None = None
) -> dict[str, Any]:
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
        engine = Engine(config, credentials, url)
        report = uvloop.run(engine.run())
    finally:
        if local is not None:
            local.stop()
    report["target"] = {"url": url, "embedded_server": local is not None}
    if csv_dir is not None:
        rows = engine.media_totals.track_rows if engine.media_totals is not None else []
        write_track_csv(csv_dir / "tracks.csv", rows)
    return report
