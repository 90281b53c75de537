"""The bracket-and-bisect state machine of `lkswarm.capacity.search` on synthetic capacity functions."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lkswarm.capacity.schema import LevelVerdict
from lkswarm.capacity.search import Planned, Search
from lkswarm.errors import ConfigError


def run(search: Search, verdict_of: Callable[[int], LevelVerdict]) -> list[Planned]:
    plans: list[Planned] = []
    while (planned := search.next_level()) is not None:
        assert len(plans) < 100, "the search does not terminate"
        plans.append(planned)
        search.record(planned.participants, verdict_of(planned.participants))
    assert search.done
    return plans


def capacity(true_capacity: int) -> Callable[[int], LevelVerdict]:
    return lambda level: "PASS" if level <= true_capacity else "FAIL"


def test_bracket_then_bisect_finds_a_5_percent_interval_around_the_truth() -> None:
    search = Search(10, 3000, growth=1.5, width=0.05)
    plans = run(search, capacity(347))
    assert search.lower is not None and search.upper is not None
    assert search.lower <= 347 < search.upper
    assert (search.upper - search.lower) / search.lower <= 0.05
    assert search.stopped_because == "width reached"
    assert [p.participants for p in plans] == [10, 15, 23, 35, 53, 80, 120, 180, 270, 405, 338, 372, 355, 347]
    assert [p.phase for p in plans] == ["bracket"] * 10 + ["bisect"] * 4
    # Fresh: the first level, and every probe below the population up (after each FAIL).
    assert [p.fresh for p in plans] == [True] + [False] * 9 + [True, False, True, True]
    assert search.probes == 4
    assert [v for _, v in search.history][-1] == "PASS"


def test_inconclusive_counts_as_fail() -> None:
    search = Search(10, 3000)
    run(search, lambda level: "PASS" if level <= 347 else "INCONCLUSIVE")
    assert search.lower is not None and search.upper is not None
    assert search.lower <= 347 < search.upper


def test_max_passed_is_a_censored_result() -> None:
    search = Search(10, 100, growth=2.0)
    plans = run(search, capacity(10_000))
    assert [p.participants for p in plans] == [10, 20, 40, 80, 100]
    assert (search.lower, search.upper, search.stopped_because) == (100, None, "max passed")


def test_first_level_failing_ends_at_once() -> None:
    search = Search(50, 1000)
    plans = run(search, capacity(10))
    assert len(plans) == 1
    assert (search.lower, search.upper, search.stopped_because) == (None, 50, "first level failed")


def test_generator_bound_ends_with_a_lower_bound_only() -> None:
    search = Search(10, 1000, growth=2.0)
    run(search, lambda level: "PASS" if level < 80 else "GENERATOR_BOUND")
    assert (search.lower, search.upper, search.stopped_because) == (40, None, "generator-bound")


def test_aborted_sets_the_upper_bound_and_stops() -> None:
    search = Search(10, 1000, growth=2.0)
    run(search, lambda level: "PASS" if level < 80 else "ABORTED")
    assert (search.lower, search.upper, search.stopped_because) == (40, 80, "aborted")


def test_probes_exhausted() -> None:
    search = Search(10, 100_000, growth=10.0, width=0.001, max_probes=2)
    plans = run(search, capacity(4321))
    assert search.stopped_because == "probes exhausted"
    assert [p.phase for p in plans].count("bisect") == 2
    assert search.lower is not None and search.upper is not None
    assert search.lower <= 4321 < search.upper


def test_granularity_keeps_levels_to_whole_rooms() -> None:
    search = Search(7, 1003, growth=1.5, granularity=10, width=0.0)
    plans = run(search, capacity(347))
    assert all(p.participants % 10 == 0 for p in plans)
    assert plans[0].participants == 10  # start rounded up to one room
    assert (search.lower, search.upper) == (340, 350)  # one room apart: cannot narrow further
    assert search.stopped_because == "width reached"


def test_a_fixed_step_and_the_max_cap() -> None:
    search = Search(100, 450, step=100)
    plans = run(search, capacity(10_000))
    assert [p.participants for p in plans] == [100, 200, 300, 400, 450]


def test_min_step_applies_to_small_levels() -> None:
    search = Search(2, 100, growth=1.5, min_step=5)
    plans = run(search, capacity(20))
    assert [p.participants for p in plans][:3] == [2, 7, 12]


def test_confirm_remeasures_the_capacity_fresh() -> None:
    search = Search(10, 3000, confirm=True)
    plans = run(search, capacity(347))
    assert plans[-1] == Planned(participants=search.lower or 0, phase="confirm", fresh=True)
    assert search.stopped_because == "width reached"


def test_a_failed_confirmation_falls_back_to_the_previous_pass() -> None:
    search = Search(10, 3000, confirm=True)
    confirmed_once = False

    def verdict(level: int) -> LevelVerdict:
        nonlocal confirmed_once
        planned = search.next_level()
        assert planned is not None
        if planned.phase == "confirm" and not confirmed_once:
            confirmed_once = True
            return "FAIL"  # the first confirmation does not hold up
        return capacity(347)(level)

    plans = run(search, verdict)
    assert [p.phase for p in plans][-2:] == ["confirm", "confirm"]
    assert search.upper == plans[-2].participants
    assert search.lower == plans[-1].participants < plans[-2].participants


def test_next_level_is_idempotent_and_record_checks_the_level() -> None:
    search = Search(10, 100)
    assert search.next_level() == search.next_level() == Planned(10, "bracket", True)
    with pytest.raises(ValueError, match="planned 10"):
        search.record(11, "PASS")
    search.record(10, "FAIL")
    with pytest.raises(RuntimeError):
        search.record(10, "FAIL")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start": 100, "maximum": 50},
        {"start": 10, "maximum": 100, "growth": 1.0},
        {"start": 1, "maximum": 9, "granularity": 10},
    ],
)
def test_bad_parameters_are_config_errors(kwargs: dict[str, int | float]) -> None:
    with pytest.raises(ConfigError):
        Search(**kwargs)  # type: ignore[arg-type]
