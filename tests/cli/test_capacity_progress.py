"""The capacity search's line per level on stderr: the SLOs it is judged on, in the order given, each with its
value at that level and FAIL or ? where it did not pass (it showed join p95 and ping p99 whatever --slo said)."""

from __future__ import annotations

from typing import Any

import pytest

from lkswarm.cli.capacity_command import SearchProgress


def result(verdict: str, observed: float | None) -> dict[str, Any]:
    return {"verdict": verdict, "observed": observed, "limit": 1.0, "samples": 10, "exceeding": 0,
            "allowed_ratio": 0.01, "bound_low": 0.0, "bound_high": 0.1, "confidence": 0.95, "subwindows": 6,
            "subwindows_breached": 0, "headroom": None}  # fmt: skip


def test_a_level_line_shows_the_slos_given_in_their_order(capsys: pytest.CaptureFixture[str]) -> None:
    level = {
        "index": 2, "phase": "bracket", "fresh": False, "participants": 120, "verdict": "FAIL",
        "reason": "active.p99 2.4 s > 2 s (4/6 sub-windows)",
        # The search judges failed_ratio last, whatever order the SLOs were given in.
        "slos": {"active.p99": result("FAIL", 2400.0), "failed_ratio": result("PASS", 0.0)},
        "client": {"joined": 40, "failed": 0, "attempted": 130},
    }  # fmt: skip
    SearchProgress(quiet=False, exporter=None, slo_order=["failed_ratio", "active.p99"]).on_level(level)
    line = " ".join(capsys.readouterr().err.split())
    assert "level 2 (bracket): 120 participants -> FAIL: active.p99 2.4 s > 2 s" in line, line
    # "40 joined" beside the table's "0/130" read as a contradiction: the joins are the hold's samples.
    assert "(failed_ratio 0 %, active.p99 2.4 s FAIL; 40 joins in the hold, 0 of 130 attempted failed)" in line, line
    assert "join p95" not in line and "ping p99" not in line


def test_a_quiet_search_prints_no_level_line(capsys: pytest.CaptureFixture[str]) -> None:
    SearchProgress(quiet=True, exporter=None).on_level({"slos": {}})
    assert capsys.readouterr().err == ""
