"""Helpers shared by the integration tests (run the CLI, check a report's bookkeeping)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from lkswarm.auth import Credentials

LKSWARM = [sys.executable, "-m", "lkswarm"]


def run_cli(
    args: list[str], credentials: Credentials, tmp_path: Path, timeout_s: float = 180
) -> tuple[int, dict[str, Any], str]:
    report_path = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}
    env.update(LIVEKIT_API_KEY=credentials.api_key, LIVEKIT_API_SECRET=credentials.api_secret)
    out = subprocess.run(
        [*LKSWARM, "run", *args, "--json", str(report_path), "--quiet"],
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


def assert_outcomes_reconcile(report: dict[str, Any]) -> None:
    p = report["participants"]
    assert sum(p["outcomes"].values()) == p["scheduled"]
    assert sum(p["failures"].values()) == p["outcomes"]["failed"]
    assert sum(p["left_reasons"].values()) == p["outcomes"]["left"]
