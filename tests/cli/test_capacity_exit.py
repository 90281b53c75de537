"""`lkswarm capacity`'s exit code from its report: found, below --require, nothing found, stopped."""

from __future__ import annotations

from typing import Any

from lkswarm.cli.capacity_command import capacity_exit_code


def _report(value: int | None, limiting: str | None = "failed_ratio", interrupted: str | None = None) -> dict[str, Any]:
    report: dict[str, Any] = {"capacity": {"value": value, "limiting": limiting}}
    if interrupted is not None:
        report["interrupted"] = {"signal": interrupted, "at_s": 12.0}
    return report


def test_a_found_capacity_exits_0_and_one_below_require_exits_99() -> None:
    assert capacity_exit_code(_report(340), None) == 0
    assert capacity_exit_code(_report(340), 340) == 0
    assert capacity_exit_code(_report(340), 341) == 99


def test_no_passing_level_or_a_dead_server_exits_1() -> None:
    assert capacity_exit_code(_report(None, None), None) == 1
    assert capacity_exit_code(_report(None, "generator"), 10) == 1
    assert capacity_exit_code(_report(40, "aborted"), None) == 1


def test_a_search_stopped_by_an_error_exits_1_even_with_a_capacity_found() -> None:
    report = _report(40)
    report["capacity"]["search"] = {"error": "RuntimeError: the port broke"}
    assert capacity_exit_code(report, None) == 1


def test_a_stopped_search_exits_with_its_signal() -> None:
    assert capacity_exit_code(_report(40, interrupted="SIGINT"), None) == 130
    assert capacity_exit_code(_report(40, interrupted="SIGTERM"), 1000) == 143
