"""The capacity section rendered: the console verdict, levels.csv, the levels table, the plots and the HTML page.

Socket-free, on a synthetic `CapacitySection` built here: six levels (bracketing to a FAIL, then two bisection
probes), server figures and every fit, plus the variants a search can end in.
"""

from __future__ import annotations

import copy
import csv
import html
import math
import re
from pathlib import Path
from typing import Any

import pytest

from lkswarm.capacity.schema import CapacitySection, Level, SloResult
from lkswarm.report.capacity_figures import (
    CAPACITY_FIGURES,
    NO_CAPACITY,
    capacity_figures,
    cores_vs_egress,
    delivered_vs_expected,
    gives_way_first,
    latency_vs_load,
    staircase,
)
from lkswarm.report.capacity_text import (
    LEVEL_FIELDS,
    TABLE_HEAD,
    TABLE_TAIL,
    level_rows,
    level_slo_text,
    levels_table,
    summary_paragraph,
    write_levels_csv,
)
from lkswarm.report.html_page import render_html
from report_samples import synthetic_report

STUB_JS = "/* plotly stub */"
SLOS = (("join_response.p95", 1000.0, "join_response.p95<1s"), ("ping_rtt.p99", 250.0, "ping_rtt.p99<250ms"),
        ("failed_ratio", 0.005, "failed_ratio<0.5%"), ("media.loss_ratio", 0.01, "media.loss_ratio<1%"))  # fmt: skip
# index, participants, phase, fresh, verdict, join p95 ms, ping p99 ms, server cores
LEVELS = (
    (0, 100, "bracket", True, "PASS", 350.0, 80.0, 0.6),
    (1, 150, "bracket", False, "PASS", 420.0, 95.0, 0.85),
    (2, 225, "bracket", False, "PASS", 610.0, 120.0, 1.2),
    (3, 338, "bracket", False, "FAIL", 1400.0, 210.0, 1.9),
    (4, 281, "bisect", True, "PASS", 820.0, 150.0, 1.5),
    (5, 310, "bisect", True, "FAIL", 1100.0, 180.0, 1.7),
)
HOLD_S = 60.0
PACKETS_PER_PARTICIPANT_S = 100.0  # 2 publishers x 50 packets/s, to every subscriber


def slo(key: str, observed: float | None, limit: float) -> SloResult:
    failed = observed is not None and observed > limit
    return SloResult(verdict="FAIL" if failed else "PASS", observed=observed, limit=limit, samples=100,
                     exceeding=10 if failed else 1, allowed_ratio=0.05, bound_low=0.0, bound_high=0.1,
                     confidence=0.95, subwindows=6, subwindows_breached=4 if failed else 0, headroom=None)  # fmt: skip


def level(row: tuple[Any, ...], start: float) -> Level:
    index, participants, phase, fresh, verdict, join_p95, ping_p99, cores = row
    observed = {"join_response.p95": join_p95, "ping_rtt.p99": ping_p99, "failed_ratio": 0.0, "media.loss_ratio": 0.001}
    expected = int(participants * PACKETS_PER_PARTICIPANT_S * HOLD_S)
    return {
        "index": index, "participants": participants, "rooms": 1, "publishers": 2, "subscribers": participants - 2,
        "phase": phase, "fresh": fresh, "ramp_s": (start, start + 10), "settle_s": (start + 10, start + 30),
        "hold_s": (start + 30, start + 30 + HOLD_S), "verdict": verdict,
        "reason": "join_response.p95 1.4 s > 1 s" if verdict == "FAIL" else "",
        "slos": {key: slo(key, observed[key], limit) for key, limit, _ in SLOS},
        "client": {
            "join_response": {"count": 70, "p50": join_p95 / 2, "p95": join_p95, "p99": join_p95 * 1.2},
            "ping_rtt": {"count": 600, "p50": ping_p99 / 3, "p95": ping_p99 * 0.8, "p99": ping_p99},
            "joined": 70, "failed": 0, "attempted": participants, "alive": participants, "active": participants,
            "packets_received": int(expected * 0.999), "packets_expected": expected,
            "packets_lost": expected - int(expected * 0.999), "loss_ratio": 0.001,
        },
        "generator": {
            "cpu_percent": 40.0, "lateness_p99_ms": 3.0, "loop_lag_p99_ms": 2.0, "bound": False, "reason": "",
        },
        "server": {
            "cores": cores, "cpu_source": "proc", "rss_mb": 180.0, "participants": float(participants),
            "packets_in_per_s": 100.0, "packets_out_per_s": participants * PACKETS_PER_PARTICIPANT_S,
            "bytes_out_per_s": participants * 12_000.0, "retransmit_share": 0.002, "nacks_per_s": 1.5,
            "plis_per_s": 0.1, "join_funnel": {"joined": 70.0},
        },
    }  # fmt: skip


def full_section() -> CapacitySection:
    levels = [level(row, start=100.0 * i) for i, row in enumerate(LEVELS)]
    ols = {"intercept": 0.1, "slope": 0.00005, "s": 0.05, "t": 2.78, "x_mean": 22_000.0, "sxx": 4.0e8, "n": 6.0}
    return {
        "grow": "subscribers",
        "shape": {"rooms": 1, "publishers": 2, "audio": True, "video": False},
        "slos": [{"key": key, "limit": limit, "text": text} for key, limit, text in SLOS],
        "confidence": 0.95,
        "value": 281,
        "interval": (281, 310),
        "limiting": "join_response.p95",
        "bound": "exact",
        "levels": levels,
        "headroom": {"join_response.p95": 0.22, "ping_rtt.p99": 0.5, "failed_ratio": 1.0, "media.loss_ratio": None},
        "model": {
            "knee_latency": {"kind": "kneedle", "ok": True, "coefficients": {"x": 290.0}},
            "cores_vs_egress": {"kind": "ols", "ok": True, "coefficients": ols, "r2": 0.99, "n": 6},
            "usl": {"kind": "usl", "ok": True, "coefficients": {"lambda": 100.0, "sigma": 0.01, "kappa": 0.00001}},
        },
        "plan": {"per_core": 187, "projected": {"participants": 1200}, "limit_num_tracks": 600, "notes": []},
        "server_limit": {"cpus": 2.0, "method": "cgroup v2 cpu.max"},
        "search": {"start": 100, "max": 1000, "growth": 1.5, "width": 0.05},
        "summary": "",
    }


def generator_bound() -> CapacitySection:
    section = full_section()
    section["levels"] = section["levels"][:3]
    section["levels"][2]["verdict"] = "GENERATOR_BOUND"
    section["levels"][2]["reason"] = "scheduler lateness p99 80 ms > 50 ms"
    section.update(value=150, interval=(150, None), bound="lower", limiting="generator")
    return section


def max_passed() -> CapacitySection:
    section = full_section()
    section["levels"] = section["levels"][:3]
    section["search"]["max"] = 225
    section.update(value=225, interval=(225, None), bound="lower", limiting=None)
    return section


def nothing_passed() -> CapacitySection:
    section = full_section()
    section["levels"] = section["levels"][:1]
    section["levels"][0].update(verdict="FAIL", reason="failed_ratio 3 % > 0.5 % <blink>")
    section.update(value=None, interval=(None, 100), bound="none", limiting="failed_ratio", headroom={})
    return section


def without_server() -> CapacitySection:
    section = full_section()
    for lv in section["levels"]:
        lv["server"] = None
    section["server_limit"] = {}
    section["model"]["cores_vs_egress"] = {"kind": "ols", "ok": False, "reason": "no server metrics"}
    return section


def report_with(section: CapacitySection | None) -> dict[str, Any]:
    report = copy.deepcopy(synthetic_report(2))
    if section is not None:
        report["capacity"] = section
    return report


# --- the console verdict -------------------------------------------------------------------------------


def test_summary_of_an_exact_interval_names_the_limit_the_server_and_the_plan() -> None:
    text = summary_paragraph(full_section())
    assert text.startswith("Holds 281 participants (interval 281–310) in 1 room of 2 publishers + subscribers;")
    assert "limited by join_response.p95 (1.1 s > 1 s)" in text
    assert "server at 1.5 cores at 281 (75 % of its 2-core limit)" in text
    assert "headroom ping_rtt.p99 50 %, failed_ratio 100 %" in text and "media.loss_ratio" not in text
    assert "latency knee near 290" in text and "≈ 187 per server core" in text
    assert "projected 1,200 at the target CPU" in text and "limit.num_tracks 600" in text
    assert "bytes_per_sec" not in text and text.endswith(".")


def test_summary_of_a_generator_bound_search_says_it_is_a_lower_bound_and_not_the_server() -> None:
    text = summary_paragraph(generator_bound())
    assert text.startswith("Holds at least 150 participants in 1 room")
    assert "the generator saturated first (scheduler lateness p99 80 ms > 50 ms)" in text
    assert "more cores or a second machine" in text and "not the server's limit" in text and "limited by" not in text


def test_summary_when_max_passed_says_where_the_search_stopped() -> None:
    text = summary_paragraph(max_passed())
    assert text.startswith("Holds at least 225 participants") and "the search stopped at --max 225" in text
    assert "generator" not in text and "server at 1.2 cores at 225" in text


def test_summary_of_a_search_that_ended_early_does_not_claim_it_reached_max() -> None:
    """A search ended by a dead server, a stop or its --timeout used to read 'the search stopped at --max'."""
    aborted = max_passed()
    aborted["levels"][-1].update(verdict="ABORTED", reason="the server died")
    aborted["search"]["stopped"] = "aborted"
    text = summary_paragraph(aborted)
    assert "the search stopped early (the server died) before it found the limit" in text, text
    assert "--max" not in text
    stopped = max_passed()
    stopped["search"]["stopped"] = "stopped"
    assert "the search stopped early (the run was stopped) before it found the limit" in summary_paragraph(stopped)
    timed_out = max_passed()
    timed_out["search"].update(stopped="stopped", error="its time bound (--timeout) ran out before it finished")
    text = summary_paragraph(timed_out)
    assert text.startswith("The search stopped early on an error (its time bound (--timeout) ran out"), text
    assert "the search stopped early before it found the limit" in text and "--max 225" not in text


def test_summary_when_nothing_passed_gives_the_first_levels_reason() -> None:
    text = summary_paragraph(nothing_passed())
    assert text.startswith("No level passed: failed_ratio 3 % > 0.5 % <blink> (at 100 participants in 1 room")
    empty = full_section()
    empty.update(levels=[], value=None, interval=(None, None), bound="none", limiting=None)
    assert summary_paragraph(empty) == "No level was measured."


def test_summary_without_server_metrics_leaves_the_server_out() -> None:
    text = summary_paragraph(without_server())
    assert "server at" not in text and "limited by join_response.p95 (1.1 s > 1 s)" in text


def test_ratio_slos_are_shown_as_percentages() -> None:
    section = full_section()
    section["limiting"] = "failed_ratio"
    section["levels"][5]["slos"]["failed_ratio"]["observed"] = 0.03
    assert "limited by failed_ratio (3 % > 0.5 %)" in summary_paragraph(section)


# --- levels.csv and the table --------------------------------------------------------------------------


def test_levels_csv_round_trips_with_a_verdict_column_per_slo(tmp_path: Path) -> None:
    section = full_section()
    path = write_levels_csv(tmp_path / "out" / "levels.csv", section)
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == [*LEVEL_FIELDS, *(f"slo:{key}" for key, _, _ in SLOS)]
    assert len(rows) == len(LEVELS) == len(level_rows(section))
    assert [int(r["participants"]) for r in rows] == [row[1] for row in LEVELS]
    failed = rows[3]
    assert (failed["verdict"], failed["slo:join_response.p95"], failed["slo:ping_rtt.p99"]) == ("FAIL", "FAIL", "PASS")
    assert float(failed["join_p95_ms"]) == 1400.0 and float(failed["server_cores"]) == 1.9
    assert float(rows[4]["hold_end_s"]) - float(rows[4]["hold_start_s"]) == HOLD_S
    assert (rows[4]["phase"], rows[4]["fresh"], rows[0]["gen_bound"]) == ("bisect", "True", "False")


def test_levels_csv_without_server_metrics_has_empty_server_cells(tmp_path: Path) -> None:
    path = write_levels_csv(tmp_path / "levels.csv", without_server())
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {rows[0][c] for c in ("server_cores", "server_rss_mb", "nacks_per_s")} == {""}
    assert rows[0]["join_p95_ms"] == "350.0"


def test_levels_table_for_the_console_has_a_column_per_slo_of_the_search() -> None:
    rows = levels_table(full_section())
    assert rows[0] == [*TABLE_HEAD, *(text for _, _, text in SLOS), *TABLE_TAIL] and len(rows) == len(LEVELS) + 1
    assert rows[1] == ["0 bracket (fresh)", "100", "PASS", "350 ms", "80 ms", "0 %", "0.1 %", "0/100", "0.60", "40 %"]
    assert rows[4][2:4] == ["FAIL", "1.4 s FAIL"]  # what failed is marked; a PASS is not
    assert levels_table(without_server())[1][-2] == "–"


def test_levels_table_shows_the_slos_chosen_not_fixed_ones() -> None:
    """A search on its own SLOs (here the time to ACTIVE and loss) shows those, with their verdicts."""
    section = full_section()
    section["slos"] = [{"key": "active.p99", "limit": 2000.0, "text": "active.p99<2s"}]
    unsure = slo("active.p99", 900.0, 2000.0)
    unsure["verdict"] = "INCONCLUSIVE"
    for lv in section["levels"]:
        lv["slos"] = {"active.p99": slo("active.p99", 2400.0, 2000.0)}
    section["levels"][0]["slos"] = {"active.p99": unsure, "media.loss_ratio": slo("media.loss_ratio", None, 0.01)}
    header, first, second, *_ = levels_table(section)
    assert header == [*TABLE_HEAD, "active.p99<2s", "media.loss_ratio", *TABLE_TAIL]
    assert first[3:5] == ["900 ms ?", "–"]  # inconclusive marked; nothing observed is a dash
    assert second[3:5] == ["2.4 s FAIL", "–"]  # the key this level was not judged on
    assert level_slo_text(section["levels"][0], ["active.p99", "media.loss_ratio"]) == (
        "active.p99 900 ms ?, media.loss_ratio –"
    )


# --- the plots ------------------------------------------------------------------------------------------


def test_every_capacity_figure_is_drawn_for_a_full_section() -> None:
    figures = capacity_figures(report_with(full_section()))
    assert [title for title, _, _ in figures] == [title for _, title, _ in CAPACITY_FIGURES]
    for title, figure, reason in figures:
        assert figure is not None and figure["data"] and reason == "", title
    assert capacity_figures(report_with(None)) == []


def test_staircase_shades_settle_and_hold_and_marks_each_verdict() -> None:
    figure, _ = staircase(report_with(full_section()))
    assert figure is not None
    layout = figure["layout"]
    assert len(layout["shapes"]) == 2 * len(LEVELS)
    assert [note["text"] for note in layout["annotations"]] == [row[4] for row in LEVELS]
    population = figure["data"][0]
    # A bisection probe after a teardown ramps from zero.
    assert population["y"][16:18] == [0, 281] and population["x"][16:18] == [400.0, 410.0]
    assert {trace["name"] for trace in figure["data"][1:]} == {"alive (measured)", "active (measured)"}


def test_latency_plot_has_the_slo_lines_and_the_knee() -> None:
    figure, _ = latency_vs_load(report_with(full_section()))
    assert figure is not None
    shapes = figure["layout"]["shapes"]
    assert sorted(s["y0"] for s in shapes if s["yref"] == "y") == [250.0, 1000.0]
    assert [s["x0"] for s in shapes if s["xref"] == "x"] == [290.0]
    assert figure["data"][0]["x"] == sorted(row[1] for row in LEVELS)


def test_cores_plot_draws_the_fit_and_its_prediction_band() -> None:
    section = full_section()
    figure, _ = cores_vs_egress(report_with(section))
    assert figure is not None
    lower, upper, fit, measured = figure["data"]
    c = section["model"]["cores_vs_egress"]["coefficients"]
    for i, x in enumerate(fit["x"]):
        half = c["t"] * c["s"] * math.sqrt(1 + 1 / c["n"] + (x - c["x_mean"]) ** 2 / c["sxx"])
        assert upper["y"][i] - fit["y"][i] == pytest.approx(half) == pytest.approx(fit["y"][i] - lower["y"][i])
    assert upper["fill"] == "tonexty" and len(measured["x"]) == len(LEVELS)
    # Without the band's statistics only the line is drawn.
    section["model"]["cores_vs_egress"]["coefficients"] = {"intercept": 0.1, "slope": 0.00005}
    figure, _ = cores_vs_egress(report_with(section))
    assert figure is not None and [t["name"] for t in figure["data"]] == ["OLS fit (R² 0.990)", "server cores"]


def test_delivered_plot_has_the_usl_curve_and_gives_way_highlights_the_limit() -> None:
    figure, _ = delivered_vs_expected(report_with(full_section()))
    assert figure is not None and [t["name"] for t in figure["data"]][-1] == "USL fit"
    assert figure["data"][0]["y"][0] == pytest.approx(100 * PACKETS_PER_PARTICIPANT_S)
    bars, _ = gives_way_first(report_with(full_section()))
    assert bars is not None
    trace = bars["data"][0]
    assert trace["x"] == sorted(trace["x"]) and trace["y"][-1] == "join_response.p95"
    assert trace["x"][-1] == pytest.approx(0.82) and trace["marker"]["color"][-1] == "#d62728"
    assert trace["x"][trace["y"].index("server cores")] == pytest.approx(0.75)  # 1.5 of 2 cores


def test_figures_missing_data_give_a_reason() -> None:
    assert all(build(report_with(None)) == (None, NO_CAPACITY) for _, _, build in CAPACITY_FIGURES)
    figure, reason = cores_vs_egress(report_with(without_server()))
    assert figure is None and "metrics" in reason
    figure, reason = gives_way_first(report_with(nothing_passed()))
    assert figure is None and "no level passed" in reason
    empty = full_section()
    empty["levels"] = []
    for _, _, build in CAPACITY_FIGURES:
        figure, reason = build(report_with(empty))
        assert figure is None and reason, build
    silent = full_section()
    for lv in silent["levels"]:
        lv["client"]["join_response"]["count"] = lv["client"]["ping_rtt"]["count"] = 0
        lv["client"]["packets_expected"] = 0
    assert latency_vs_load(report_with(silent))[0] is None and delivered_vs_expected(report_with(silent))[0] is None


# --- the page ------------------------------------------------------------------------------------------


def test_html_page_has_the_capacity_summary_table_and_plots() -> None:
    section = full_section()
    page = render_html(report_with(section), plotly_js=STUB_JS)
    assert "<h2>Capacity</h2>" in page and html.escape(summary_paragraph(section)) in page
    assert 'id="capacity-levels"' in page and '<td class="bad">FAIL</td>' in page
    for plot_id, title, _ in CAPACITY_FIGURES:
        assert f'<div class="plot" id="{plot_id}">' in page and title in page
    assert not re.search(r"<script[^>]*\bsrc\s*=", page)
    assert "<h2>Capacity</h2>" not in render_html(report_with(None), plotly_js=STUB_JS)


def test_html_page_escapes_level_reasons_and_prints_missing_plots_reasons() -> None:
    page = render_html(report_with(nothing_passed()), plotly_js=STUB_JS)
    assert "<blink>" not in page and "3 % &gt; 0.5 % &lt;blink&gt;" in page
    assert '<div class="missing" id="capacity-gives-way">no level passed' in page
    section = full_section()
    section["summary"] = "as printed on the console"
    assert '<p id="capacity-summary">as printed on the console</p>' in render_html(report_with(section), STUB_JS)


def test_chromium_draws_every_capacity_plot(tmp_path: Path) -> None:
    """plotly itself accepts the figures: every plot of a capacity page is drawn, none raises."""
    from test_html_chromium import VIRTUAL_TIME_BUDGET_MS, find_chromium, run_chromium

    chromium = find_chromium()
    page = tmp_path / "capacity.html"
    page.write_text(render_html(report_with(full_section())), encoding="utf-8")
    dom = run_chromium(
        chromium, tmp_path, "--dump-dom", f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}", page.as_uri()
    )
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body is not None and "data-plot-error" not in body.group(0), body
    for plot_id, _, _ in CAPACITY_FIGURES:
        assert re.search(rf'<div class="plot js-plotly-plot" id="{plot_id}"', dom.stdout), plot_id


def test_lkswarm_report_prints_a_searchs_levels_and_verdict(tmp_path: Path) -> None:
    """`lkswarm report cap.json` printed the run summary alone: no levels table, no 'holds N' verdict."""
    import json
    import subprocess

    from helpers import LKSWARM

    section = full_section()
    path = tmp_path / "cap.json"
    path.write_text(json.dumps(report_with(section)))
    out = subprocess.run([*LKSWARM, "report", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "capacity search" in out.stdout and " ".join(section["summary"].split()) in " ".join(out.stdout.split())
