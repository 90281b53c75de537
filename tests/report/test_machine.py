"""Who was the bottleneck: when the embedded server (our child, on the same cores) starved the generator, the
report says the machine was saturated and by what, instead of advising more generator processes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from helpers import LKSWARM
from lkswarm.report.build import _machine_warning


def test_a_machine_the_server_kept_busy_is_named_as_the_limit() -> None:
    machine = {"cores": 2, "generator_cpu_s": 30.0, "embedded_server_cores": 1.5, "busy_share": 0.97}
    warning = _machine_warning(machine)
    assert warning is not None
    assert "the machine was saturated" in warning and "1.50 of them" in warning and "97%" in warning
    assert "more generator processes on this machine will not help" in warning


def test_no_machine_warning_without_the_server_figures_or_with_cores_to_spare() -> None:
    assert _machine_warning({"cores": 2, "generator_cpu_s": 30.0}) is None  # --url: the server is not ours
    assert (
        _machine_warning({"cores": 8, "generator_cpu_s": 8.0, "embedded_server_cores": 1.0, "busy_share": 0.3}) is None
    )


@pytest.mark.integration
def test_a_run_on_the_embedded_server_reports_the_servers_cpu(tmp_path: Path) -> None:
    out = subprocess.run(
        [*LKSWARM, "run", "--participants", "4", "--audio-publishers", "1", "--duration", "4s", "--quiet",
         "--json", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    machine = json.loads((tmp_path / "r.json").read_text())["machine"]
    assert machine["cores"] >= 1 and machine["embedded_server_cpu_s"] > 0, machine
    assert 0 < machine["busy_share"] <= 1.5, machine
    server = json.loads((tmp_path / "r.json").read_text())["server"]
    assert server["available"] and server["cpu_s"] > 0 and server["rss_bytes"] > 0, server
