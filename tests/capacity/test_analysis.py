"""`lkswarm.capacity.analysis` on synthetic levels: the interval, what limited it, the models and the plan.

The levels come from a real `Search` driven by a synthetic capacity (`drive`), so the interval, the
phases and the populations are the ones a search would produce; their figures are made up by
`make_level` from simple functions of the population (a linear server, a hockey-stick latency).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest

from lkswarm.capacity.analysis import analyse, limiting_of, sweep_summary
from lkswarm.capacity.schema import CapacitySection, Level, LevelVerdict, ServerFigures, SloResult, SloSpec
from lkswarm.capacity.search import Planned, Search
from lkswarm.capacity.special import student_t_quantile

SLOS: list[SloSpec] = [
    {"key": "join_response.p95", "limit": 1000.0, "text": "join_response.p95<1s"},
    {"key": "ping_rtt.p99", "limit": 250.0, "text": "ping_rtt.p99<250ms"},
    {"key": "failed_ratio", "limit": 0.005, "text": "failed_ratio<0.5%"},
]
HOLD_S = 60.0
TRUE_CAPACITY = 600
EGRESS_PER_PARTICIPANT = 7.0  # server egress packets/s per participant of the shape
CORES_INTERCEPT, CORES_PER_PACKET = 0.1, 0.0002  # server cores = 0.1 + 0.0002 * egress packets/s


def slo_result(verdict: str, observed: float | None, limit: float, *, ratio: bool = False) -> SloResult:
    headroom = None if observed is None else 1.0 - observed / limit if ratio else limit / observed - 1.0
    return {
        "verdict": verdict,  # type: ignore[typeddict-item]
        "observed": observed,
        "limit": limit,
        "samples": 300,
        "exceeding": 0 if verdict == "PASS" else 100,
        "allowed_ratio": limit if ratio else 0.05,
        "bound_low": 0.0,
        "bound_high": 0.01,
        "confidence": 0.95,
        "subwindows": 6,
        "subwindows_breached": 0 if verdict == "PASS" else 6,
        "headroom": headroom,
    }


def linear_server(participants: int, *, cores: float | None = None) -> ServerFigures:
    egress = EGRESS_PER_PARTICIPANT * participants
    return {
        "cores": CORES_INTERCEPT + CORES_PER_PACKET * egress if cores is None else cores,
        "cpu_source": "prometheus",
        "rss_mb": 100.0 + participants / 10,
        "participants": float(participants),
        "packets_in_per_s": 50.0,
        "packets_out_per_s": egress,
        "bytes_out_per_s": 1000.0 * egress,
        "bytes_in_per_s": 50_000.0,
        "retransmit_share": 0.001,
        "nacks_per_s": 1.0,
        "plis_per_s": 0.1,
        "join_funnel": {"rtc_connected": 5.0},
    }


def make_level(
    index: int,
    participants: int,
    verdict: LevelVerdict,
    *,
    phase: str = "bracket",
    fresh: bool = False,
    slos: dict[str, SloResult] | None = None,
    server: ServerFigures | None = None,
    join_p95: float = 200.0,
    ping_p99: float = 40.0,
    delivered_per_s: float = 0.0,
    rooms: int = 1,
    publishers: int = 2,
    generator_cpu: float = 10.0,
    reason: str = "",
) -> Level:
    """A level with figures made up from the arguments; PASS SLOs at comfortable values unless ``slos``."""
    if slos is None:
        slos = {
            "join_response.p95": slo_result("PASS", join_p95, 1000.0),
            "ping_rtt.p99": slo_result("PASS", ping_p99, 250.0),
            "failed_ratio": slo_result("PASS", 0.001, 0.005, ratio=True),
        }
    start = 100.0 * index
    expected = int(delivered_per_s * HOLD_S * 1.1)
    received = int(delivered_per_s * HOLD_S)
    return {
        "index": index,
        "participants": participants,
        "rooms": rooms,
        "publishers": publishers,
        "subscribers": participants // rooms - publishers,
        "phase": phase,  # type: ignore[typeddict-item]
        "fresh": fresh,
        "ramp_s": (start, start + 10),
        "settle_s": (start + 10, start + 30),
        "hold_s": (start + 30, start + 30 + HOLD_S),
        "verdict": verdict,
        "reason": reason,
        "slos": slos,
        "client": {
            "join_response": {"count": 60, "p50": join_p95 / 2, "p95": join_p95, "p99": join_p95 * 1.2},
            "ping_rtt": {"count": 600, "p50": ping_p99 / 2, "p95": ping_p99 * 0.8, "p99": ping_p99},
            "joined": 60,
            "failed": 0,
            "attempted": participants + 60,
            "alive": participants,
            "active": participants,
            "packets_received": received,
            "packets_expected": expected,
            "packets_lost": expected - received,
            "loss_ratio": (expected - received) / expected if expected else 0.0,
        },
        "generator": {
            "cpu_percent": generator_cpu,
            "lateness_p99_ms": 1.0,
            "loop_lag_p99_ms": 2.0,
            "bound": verdict == "GENERATOR_BOUND",
            "reason": "scheduler lateness p99 30 ms > 10 ms" if verdict == "GENERATOR_BOUND" else "",
        },
        "server": server,
    }


LevelMaker = Callable[[int, Planned], Level]


def drive(search: Search, make: LevelMaker) -> list[Level]:
    """Runs ``search`` to its end; ``make(index, planned)`` measures each planned level."""
    levels: list[Level] = []
    while (planned := search.next_level()) is not None:
        assert len(levels) < 50, "the search does not terminate"
        level = make(len(levels), planned)
        levels.append(level)
        search.record(planned.participants, level["verdict"])
    return levels


def failing_slos(participants: int) -> dict[str, SloResult]:
    """Above the capacity both latency and failed joins breach; failed joins are worse against their limit."""
    return {
        "join_response.p95": slo_result("FAIL", 1400.0, 1000.0),  # 1.4x its limit
        "ping_rtt.p99": slo_result("PASS", 100.0, 250.0),
        "failed_ratio": slo_result("FAIL", 0.02, 0.005, ratio=True),  # 4x its limit
    }


def hockey_stick_ms(participants: int) -> float:
    """Join latency flat at 200 ms up to 500 participants, then 5 ms more per participant."""
    return 200.0 + 5.0 * max(0, participants - 500)


def linear_search_level(index: int, planned: Planned) -> Level:
    """A server that is linear in egress while it passes, pinned at 0.95 cores above the capacity."""
    p = planned.participants
    passed = p <= TRUE_CAPACITY
    return make_level(
        index,
        p,
        "PASS" if passed else "FAIL",
        phase=planned.phase,
        fresh=planned.fresh,
        slos=None if passed else failing_slos(p),
        server=linear_server(p, cores=None if passed else 0.95),
        join_p95=hockey_stick_ms(p),
        delivered_per_s=EGRESS_PER_PARTICIPANT * p,
        generator_cpu=5.0 + 0.01 * p,
    )


def run_analysis(
    levels: list[Level],
    search: Search,
    *,
    server_limit: dict[str, object] | None = None,
    server_cores: float | None = None,
    target_cpu: float = 0.7,
    notes: list[str] | None = None,
) -> CapacitySection:
    return analyse(
        levels,
        search,
        SLOS,
        shape_description={"rooms": 1, "participants": 10, "publishers": 2},
        options={"start": search.start, "max": search.maximum, "width": search.width},
        server_limit=server_limit or {},
        server_cores=server_cores,
        target_cpu=target_cpu,
        grow="subscribers",
        confidence=0.95,
        notes=list(notes or []),
    )


def linear_search(**kwargs: Any) -> tuple[list[Level], Search, CapacitySection]:
    search = Search(100, 2000, growth=1.5, width=0.05)
    levels = drive(search, linear_search_level)
    return levels, search, run_analysis(levels, search, **kwargs)


# -- the interval and what limited it ------------------------------------------------------------


def test_an_exact_interval_is_limited_by_the_worst_failing_slo_at_the_upper_level() -> None:
    levels, search, section = linear_search()
    # 100 150 225 338 507 PASS, 761 FAIL; bisect 634 FAIL, 571 PASS, 603 FAIL, 587 PASS: 16/587 <= 5 %.
    assert [level["participants"] for level in levels] == [100, 150, 225, 338, 507, 761, 634, 571, 603, 587]
    assert search.stopped_because == "width reached"
    assert section["value"] == 587
    assert section["interval"] == (587, 603)
    assert section["bound"] == "exact"
    # Both SLOs failed at 603; failed_ratio is 4x its limit, join_response.p95 1.4x.
    assert section["limiting"] == "failed_ratio"
    assert section["levels"] is levels
    assert section["search"]["levels"] == 10
    assert section["search"]["stopped"] == "width reached"
    assert section["summary"] == ""


def test_a_search_stopped_by_an_error_reports_only_a_lower_bound_from_the_levels_it_measured() -> None:
    search = Search(100, 2000, growth=1.5, width=0.05)
    levels: list[Level] = []
    for _ in range(7):  # 100 150 225 338 507 PASS, 761 FAIL, 634 FAIL; then the driver fails
        planned = search.next_level()
        assert planned is not None
        levels.append(linear_search_level(len(levels), planned))
        search.record(planned.participants, levels[-1]["verdict"])
    search.stop_on_error()
    section = run_analysis(levels, search)
    assert section["search"]["stopped"] == "error" and search.next_level() is None
    # 507 passed and 634 failed, but the bisection never narrowed them: the capacity is at least 507.
    assert section["value"] == 507 and section["interval"] == (507, 634) and section["bound"] == "lower"


def test_limiting_of_names_the_fail_with_the_worst_observed_over_limit() -> None:
    slos = failing_slos(603)
    slos["join_response.p95"] = slo_result("FAIL", 5000.0, 1000.0)  # now 5x: worse than failed_ratio's 4x
    assert limiting_of(make_level(0, 603, "FAIL", slos=slos)) == "join_response.p95"
    assert limiting_of(make_level(0, 603, "FAIL", slos=failing_slos(603))) == "failed_ratio"


def test_limiting_of_other_verdicts() -> None:
    unsure = {
        "join_response.p95": slo_result("PASS", 100.0, 1000.0),
        "ping_rtt.p99": slo_result("INCONCLUSIVE", 240.0, 250.0),
    }
    assert limiting_of(make_level(0, 10, "INCONCLUSIVE", slos=unsure)) == "inconclusive:ping_rtt.p99"
    assert limiting_of(make_level(0, 10, "INCONCLUSIVE", slos={})) == "inconclusive"
    assert limiting_of(make_level(0, 10, "GENERATOR_BOUND")) == "generator"
    assert limiting_of(make_level(0, 10, "ABORTED")) == "aborted"
    assert limiting_of(make_level(0, 10, "PASS")) is None
    assert limiting_of(None) is None


def test_max_passed_is_a_lower_bound_with_no_upper_end() -> None:
    search = Search(100, 300, growth=1.5)
    levels = drive(search, lambda i, planned: make_level(i, planned.participants, "PASS", server=None))
    section = run_analysis(levels, search)
    assert [level["participants"] for level in levels] == [100, 150, 225, 300]
    assert search.stopped_because == "max passed"
    assert section["value"] == 300
    assert section["interval"] == (300, None)
    assert section["bound"] == "lower"
    assert section["limiting"] is None


def test_a_generator_that_gives_out_first_makes_a_lower_bound_limited_by_the_generator() -> None:
    search = Search(100, 2000, growth=1.5)
    levels = drive(
        search,
        lambda i, planned: make_level(
            i, planned.participants, "PASS" if planned.participants < 200 else "GENERATOR_BOUND"
        ),
    )
    section = run_analysis(levels, search)
    assert [level["verdict"] for level in levels] == ["PASS", "PASS", "GENERATOR_BOUND"]
    assert section["value"] == 150
    assert section["interval"] == (150, None)
    assert section["limiting"] == "generator"
    assert section["bound"] == "lower"
    assert section["search"]["stopped"] == "generator-bound"


def test_a_generator_bound_bisect_probe_censors_an_interval_that_had_an_upper_end() -> None:
    # 100 150 225 PASS, 338 FAIL; the probe 282 finds the generator saturated.
    def make(i: int, planned: Planned) -> Level:
        p = planned.participants
        if p <= 225:
            return make_level(i, p, "PASS", phase=planned.phase)
        if planned.phase == "bracket":
            return make_level(i, p, "FAIL", phase=planned.phase, slos=failing_slos(p))
        return make_level(i, p, "GENERATOR_BOUND", phase=planned.phase)

    search = Search(100, 2000, growth=1.5)
    levels = drive(search, make)
    section = run_analysis(levels, search)
    assert [(level["participants"], level["verdict"]) for level in levels][-2:] == [
        (338, "FAIL"),
        (282, "GENERATOR_BOUND"),
    ]
    assert section["interval"] == (225, 338)
    assert section["limiting"] == "generator"  # not the FAIL at 338: the generator may have caused it
    assert section["bound"] == "lower"


def test_nothing_passed_has_no_value_no_headroom_and_no_operating_point() -> None:
    search = Search(100, 2000, growth=1.5)
    levels = drive(search, lambda i, planned: make_level(i, planned.participants, "FAIL", slos=failing_slos(100)))
    section = run_analysis(levels, search, server_cores=4.0)
    assert search.stopped_because == "first level failed"
    assert section["value"] is None
    assert section["interval"] == (None, 100)
    assert section["bound"] == "none"
    assert section["limiting"] == "failed_ratio"
    assert section["headroom"] == {}
    assert "operating_point" not in section["plan"]
    assert "limit_num_tracks" not in section["plan"]


# -- headroom ----------------------------------------------------------------------------------


def test_headroom_is_read_at_the_capacity_level_with_server_cpu_against_the_limit() -> None:
    _, _, section = linear_search(server_limit={"cpus": 2.0, "method": "cgroup v2 cpu.max"})
    cores_at_587 = CORES_INTERCEPT + CORES_PER_PACKET * EGRESS_PER_PARTICIPANT * 587  # 0.9218
    assert section["headroom"]["server_cpu"] == round(1 - cores_at_587 / 2.0, 4) == 0.5391
    assert section["headroom"]["join_response.p95"] == pytest.approx(1000.0 / 635.0 - 1.0)  # 200 + 5 x 87 ms
    assert section["headroom"]["ping_rtt.p99"] == pytest.approx(250.0 / 40.0 - 1.0)
    assert section["headroom"]["failed_ratio"] == pytest.approx(1.0 - 0.001 / 0.005)
    assert set(section["headroom"]) == {"join_response.p95", "ping_rtt.p99", "failed_ratio", "server_cpu"}


def test_no_server_cpu_headroom_without_a_cpu_limit() -> None:
    _, _, section = linear_search(server_limit={})
    assert "server_cpu" not in section["headroom"]
    assert set(section["headroom"]) == {"join_response.p95", "ping_rtt.p99", "failed_ratio"}


# -- the models ----------------------------------------------------------------------------------


def test_cores_vs_egress_recovers_the_line_from_the_passing_levels_only() -> None:
    levels, _, section = linear_search()
    fit = section["model"]["cores_vs_egress"]
    passing = sorted({level["participants"] for level in levels if level["verdict"] == "PASS"})
    assert passing == [100, 150, 225, 338, 507, 571, 587]
    assert fit["kind"] == "ols"
    assert fit["ok"] is True
    assert fit["n"] == 7  # the FAIL levels, pinned at 0.95 cores, are left out
    coefficients = fit["coefficients"]
    assert coefficients["slope"] == pytest.approx(CORES_PER_PACKET, rel=1e-9)
    assert coefficients["intercept"] == pytest.approx(CORES_INTERCEPT, abs=1e-9)
    assert fit["r2"] == pytest.approx(1.0)
    assert coefficients["s"] == pytest.approx(0.0, abs=1e-9)  # the data lie on the line
    egress = [EGRESS_PER_PARTICIPANT * p for p in passing]
    x_mean = sum(egress) / len(egress)
    assert coefficients["x_mean"] == pytest.approx(x_mean)
    assert coefficients["sxx"] == pytest.approx(sum((x - x_mean) ** 2 for x in egress))
    assert coefficients["n"] == 7.0
    assert coefficients["t"] == pytest.approx(student_t_quantile(0.975, 5))
    assert coefficients["t"] == pytest.approx(2.5706, abs=1e-3)


def test_cores_vs_egress_needs_three_passing_levels_with_server_figures() -> None:
    def make(i: int, planned: Planned) -> Level:
        p = planned.participants
        # Only the first two levels have server figures; above 300 everything fails.
        server = linear_server(p) if p < 200 else None
        if p > 300:
            return make_level(i, p, "FAIL", slos=failing_slos(p), server=linear_server(p, cores=0.95))
        return make_level(i, p, "PASS", server=server)

    search = Search(100, 2000, growth=1.5)
    levels = drive(search, make)
    section = run_analysis(levels, search, server_cores=1.0)
    fit = section["model"]["cores_vs_egress"]
    assert fit["ok"] is False
    assert fit["n"] == 2
    assert fit["reason"] == "2 passing levels with server metrics; the fit needs 3"
    assert "coefficients" not in fit
    assert "projected_at_target_cpu" not in section["plan"]
    assert len(levels) >= 5


def test_the_knee_of_join_latency_is_where_the_hockey_stick_bends() -> None:
    _, _, section = linear_search()
    knee = section["model"]["knee_latency"]
    assert knee["kind"] == "kneedle"
    assert knee["y"] == "join_p95"
    assert knee["n"] == 10
    assert knee["ok"] is True
    # Flat to 500, rising after: the last level before the rise (levels 507, 571, 587, ... measured).
    assert knee["coefficients"]["x"] == 507.0


def test_knees_need_three_levels_and_a_curve() -> None:
    search = Search(100, 150, growth=1.5)
    levels = drive(search, lambda i, planned: make_level(i, planned.participants, "PASS"))
    section = run_analysis(levels, search)
    for key, metric, n in (
        ("knee_latency", "join_p95", 2),
        ("knee_ping", "ping_p99", 2),
        ("knee_cpu", "server_cores", 0),
    ):
        fit = section["model"][key]
        assert fit["ok"] is False
        assert fit["n"] == n
        assert fit["reason"] == f"{n} levels with {metric}; a knee needs 3"
    # A flat ping p99 over the ten levels of the linear search: no knee.
    _, _, section = linear_search()
    assert section["model"]["knee_ping"]["ok"] is False
    assert section["model"]["knee_ping"]["reason"] == "no knee in ping_p99 over the levels measured"


def test_the_usl_fits_delivered_packets_over_six_levels_and_says_why_not_with_fewer() -> None:
    _, _, section = linear_search()
    fit = section["model"]["usl"]
    assert fit["ok"] is True
    assert fit["n"] == 10
    # Delivered packets/s = 7 per participant at every level: linear, no contention, no coherency.
    assert fit["coefficients"]["lambda"] == pytest.approx(EGRESS_PER_PARTICIPANT, rel=1e-3)
    assert fit["coefficients"]["sigma"] == pytest.approx(0.0, abs=1e-3)
    assert fit["coefficients"]["kappa"] == pytest.approx(0.0, abs=1e-6)

    search = Search(100, 300, growth=1.5)
    levels = drive(search, lambda i, planned: make_level(i, planned.participants, "PASS", delivered_per_s=100.0))
    fit = run_analysis(levels, search)["model"]["usl"]
    assert fit["ok"] is False
    assert fit["n"] == 4
    assert fit["reason"] == "4 levels with media; USL needs 6"


# -- the plan ----------------------------------------------------------------------------------


def test_the_plan_takes_the_cpu_projection_when_it_is_below_the_capacity() -> None:
    _, _, section = linear_search(server_cores=1.0, target_cpu=0.7)
    plan = section["plan"]
    cores_at_587 = CORES_INTERCEPT + CORES_PER_PACKET * EGRESS_PER_PARTICIPANT * 587
    assert plan["per_core"] == round(587 / cores_at_587, 1) == 636.8
    assert plan["cores_at_capacity"] == pytest.approx(cores_at_587)
    # 70 % of one core: egress (0.7 - 0.1) / 0.0002 = 3000 packets/s; at 7 per participant, 428.6.
    assert plan["projected_at_target_cpu"] == 428
    assert plan["operating_point"] == int(428 * 0.9) == 385
    # 1 room of 2 publishers and 585 subscribers: 2 tracks in, each forwarded to the 586 others.
    tracks_in, tracks_out = 1 * 2, 2 * (587 - 1)
    # Scaled from the capacity level to the operating point: 1174 x 385 / 587.
    assert plan["limit_num_tracks"] == int((tracks_in + tracks_out) * (385 / 587)) == 770
    # Bytes in + out at the capacity level (4109 kB/s out, 50 kB/s in), scaled the same way.
    assert plan["limit_bytes_per_sec"] == int((4_109_000 + 50_000) * (385 / 587)) == 2_727_793
    assert plan["target_cpu"] == 0.7
    assert plan["server_cores"] == 1.0
    assert plan["notes"] == []


def test_the_plan_takes_the_capacity_when_the_projection_is_above_it() -> None:
    # 70 % of 2 cores: (1.4 - 0.1) / 0.0002 = 6500 packets/s, 928 participants: above 587, within 2x 761.
    _, _, section = linear_search(server_cores=2.0, target_cpu=0.7)
    plan = section["plan"]
    assert plan["projected_at_target_cpu"] == 928
    assert plan["operating_point"] == int(587 * 0.9) == 528


def test_the_plan_without_a_server_size_uses_the_capacity() -> None:
    _, _, section = linear_search()
    plan = section["plan"]
    assert "projected_at_target_cpu" not in plan
    assert plan["operating_point"] == 528
    assert plan["limit_num_tracks"] == int((2 + 2 * 586) * (528 / 587)) == 1056


def test_a_projection_beyond_twice_the_largest_level_is_refused_with_a_note() -> None:
    # 70 % of 16 cores: (11.2 - 0.1) / 0.0002 = 55500 packets/s, 7928 participants > 2 x 761.
    _, _, section = linear_search(server_cores=16.0, target_cpu=0.7, notes=["an earlier note"])
    plan = section["plan"]
    assert "projected_at_target_cpu" not in plan
    assert plan["operating_point"] == 528  # from the capacity alone
    notes = cast(list[str], plan["notes"])
    assert notes[0] == "an earlier note"
    assert len(notes) == 2
    assert "(7928 at 70% of 16 cores)" in notes[1]
    assert "largest level measured (761)" in notes[1]
    assert "not extrapolated" in notes[1]


def test_a_target_below_the_fitted_idle_cost_projects_nothing_rather_than_a_negative_population() -> None:
    # 70 % of 0.1 cores is 0.07, below the 0.1 cores the fit says the server costs at no egress.
    _, _, section = linear_search(server_cores=0.1, target_cpu=0.7)
    plan = section["plan"]
    assert "projected_at_target_cpu" not in plan
    assert plan["operating_point"] == 528
    assert plan["limit_num_tracks"] == 1056
    notes = cast(list[str], plan["notes"])
    assert len(notes) == 1
    assert "below the server's fitted idle cost (0.10 cores)" in notes[0]


def test_a_note_says_when_no_level_has_server_packet_figures() -> None:
    search = Search(100, 300, growth=1.5)
    proc_only: ServerFigures = {
        **linear_server(100),
        "cpu_source": "proc",
        "packets_out_per_s": None,
        "packets_in_per_s": None,
        "bytes_out_per_s": None,
        "bytes_in_per_s": None,
    }
    levels = drive(search, lambda i, planned: make_level(i, planned.participants, "PASS", server=proc_only))
    plan = run_analysis(levels, search, server_cores=1.0)["plan"]
    notes = cast(list[str], plan["notes"])
    assert any("/metrics could not be read" in note and "client-side only" in note for note in notes)
    assert "limit_bytes_per_sec" not in plan
    assert "per_core" in plan  # cores from /proc still give participants per core

    _, _, section = linear_search()
    assert not any("/metrics" in note for note in cast(list[str], section["plan"]["notes"]))


def test_a_generator_near_its_ceiling_below_twice_the_max_is_noted() -> None:
    # 0.3 % of a core per participant: 85 % at 283 participants, below 2 x the 300 that passed.
    search = Search(100, 300, growth=1.5)
    levels = drive(
        search, lambda i, planned: make_level(i, planned.participants, "PASS", generator_cpu=0.3 * planned.participants)
    )
    section = run_analysis(levels, search)
    assert section["search"]["generator_ceiling"] == 283
    notes = cast(list[str], section["plan"]["notes"])
    assert any("near 283 participants" in note and "bigger generator" in note for note in notes)


# -- the core sweep ------------------------------------------------------------------------------


def sweep_section(cpus: float | None, value: int | None, upper: int | None, limiting: str | None) -> CapacitySection:
    section = {
        "server_limit": {} if cpus is None else {"cpus": cpus, "method": "cgroup v2 cpu.max"},
        "value": value,
        "interval": (value, upper),
        "limiting": limiting,
    }
    return cast(CapacitySection, section)


def test_sweep_summary_rows_and_the_usl_needing_six_core_counts() -> None:
    summary = sweep_summary(
        [
            sweep_section(0.5, 150, 160, "join_response.p95"),
            sweep_section(1.0, 290, 300, "failed_ratio"),
            sweep_section(2, None, 10, "failed_ratio"),
        ]
    )
    assert summary["rows"] == [
        {"cpus": 0.5, "value": 150, "interval": (150, 160), "limiting": "join_response.p95", "per_cpu": 300.0},
        {"cpus": 1.0, "value": 290, "interval": (290, 300), "limiting": "failed_ratio", "per_cpu": 290.0},
        {"cpus": 2, "value": None, "interval": (None, 10), "limiting": "failed_ratio", "per_cpu": None},
    ]
    # The search at 2 cores found nothing: two points, not three.
    assert summary["usl"] == {"ok": False, "reason": "2 core counts; a USL fit of capacity against cores needs 6"}


def test_sweep_summary_fits_the_usl_over_six_core_counts() -> None:
    # Capacity = 300 N / (1 + 0.1 (N - 1)): contention only.
    cores = [0.5, 1, 2, 3, 4, 6]
    sections = [sweep_section(n, round(300 * n / (1 + 0.1 * (n - 1))), None, None) for n in cores]
    summary = sweep_summary(sections)
    rows = cast(list[dict[str, Any]], summary["rows"])
    assert [row["value"] for row in rows] == [158, 300, 545, 750, 923, 1200]
    assert rows[2]["per_cpu"] == 272.5
    usl = cast(dict[str, float], summary["usl"])
    assert usl["lambda"] == pytest.approx(300, rel=0.02)
    assert usl["sigma"] == pytest.approx(0.1, abs=0.01)
    assert usl["r2"] > 0.999
