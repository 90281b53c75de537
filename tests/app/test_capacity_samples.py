"""A search warns before it starts when its first level cannot gather the samples a percentile SLO needs even
in the longest hold (lkswarm.app.capacity_run.sample_shortfalls): such levels can only be INCONCLUSIVE, counted
as FAIL, and a search of many minutes then finds no capacity without saying why."""

from __future__ import annotations

from lkswarm.app.capacity import CHURN_MIN_AGE_S
from lkswarm.app.capacity_run import CapacityOptions, sample_shortfalls, slo_specs
from lkswarm.capacity.slo import DEFAULT_SLOS, parse_slo
from lkswarm.config import RunConfig
from lkswarm.signal.session import DEFAULT_PING_INTERVAL_S

DEFAULTS = [parse_slo(text) for text in DEFAULT_SLOS]


def test_a_level_of_four_cannot_judge_the_default_join_and_ping_slos() -> None:
    # The churn replaces a seat once it has lived 30 s (31 with its tick): 4/31 joins a second, none in a fresh
    # level's first 9.8 s of hold (30 s less a settle of 20 s and a ramp of 0.2 s): 21 of the 59 a p95 needs.
    # 4 participants ping every 5 s for five of every six intervals: 120 in 180 s of the 299 a p99 needs.
    notes = sample_shortfalls(DEFAULTS, 4, CapacityOptions(), 20.0)
    assert len(notes) == 2, notes
    join, ping = notes
    assert join.startswith("join_response.p95<1s needs 59 samples") and "some 21 in the longest hold" in join, join
    # The rate holds once seats are old enough: said, as "0.13 times a second: some 0" read as a contradiction.
    assert "times a second once a seat is old enough to replace (none in the hold's first 10 s)" in join, join
    assert "start at 11 or more (--start)" in join
    assert ping.startswith("ping_rtt.p99<250ms needs 299 samples") and "some 120 in the longest hold" in ping, ping
    assert "start at 10 or more (--start)" in ping


def test_the_default_start_of_ten_is_a_join_short_and_a_larger_one_gathers_enough() -> None:
    assert CHURN_MIN_AGE_S == 6 * DEFAULT_PING_INTERVAL_S
    [note] = sample_shortfalls(DEFAULTS, 10, CapacityOptions(), 20.0)  # 55 joins of 59: say so before it runs
    assert note.startswith("join_response.p95<1s") and "start at 11 or more" in note, note
    assert sample_shortfalls(DEFAULTS, 11, CapacityOptions(), 20.0) == []
    assert sample_shortfalls(DEFAULTS, 200, CapacityOptions(max_hold_s=60.0), 20.0) == []


def test_a_shorter_longest_hold_or_a_stricter_percentile_is_named() -> None:
    notes = sample_shortfalls([parse_slo("ping_rtt.p99.9<1s")], 50, CapacityOptions(), 20.0)
    assert len(notes) == 1 and "needs 2995 samples" in notes[0] and "1620 in" in notes[0], notes
    # Without a ping SLO the churn replaces seats however young: 1 join a second, 30 in a 30 s hold.
    [note] = sample_shortfalls([parse_slo("active.p95<2s")], 10, CapacityOptions(max_hold_s=30.0), 20.0)
    assert "30 in the longest hold" in note, note


def test_no_churn_means_no_join_samples_at_all() -> None:
    [note] = sample_shortfalls([parse_slo("join_response.p50<1s")], 500, CapacityOptions(probe_churn_per_s=0.0), 20.0)
    assert "has no samples: the hold makes no joins (--probe-churn 0)" in note, note


def test_phases_sampled_otherwise_and_ratios_get_no_note() -> None:
    slos = [parse_slo("track_subscribed.p99<1s"), parse_slo("failed_ratio<1%"), parse_slo("media.loss_ratio<1%")]
    assert sample_shortfalls(slos, 2, CapacityOptions(), 20.0) == []


def test_the_notes_come_with_the_slos_from_the_search_start() -> None:
    config = RunConfig(url="ws://127.0.0.1:7880", participants=4, audio_publishers=1)
    specs, notes = slo_specs(CapacityOptions(), config)
    assert [spec["key"] for spec in specs] == [spec["key"] for spec in DEFAULTS]
    assert len(notes) == 2 and all("at 4 participants" in note for note in notes), notes
    _, started_higher = slo_specs(CapacityOptions(start=20), config)
    assert started_higher == []


def test_a_runs_saturation_advice_is_restated_for_a_search() -> None:
    """A search's report carries its whole run's warnings; "spread the load over more generator processes" is
    advice a search cannot follow (it has no --workers), and the warning covers ramps and teardowns too."""
    from lkswarm.app.capacity_run import search_wide

    run_warning = "media thread lag p99 35.1 ms > 20 ms: saturated. Spread the load over more generator processes."
    searched = search_wide(run_warning, on_ray=False)
    assert searched.startswith("media thread lag p99 35.1 ms > 20 ms: saturated. This is over the whole search")
    assert "more generator processes" not in searched and searched.endswith("spread its load with --ray.")
    assert "capacity.levels[].generator" in searched
    lateness = "scheduler lateness p99 12.0 ms > 10 ms: x. Lower --rate or spread the load over more processes."
    on_ray = search_wide(lateness, on_ray=True)
    assert "Lower --rate" not in on_ray and on_ray.endswith("give it more Ray actors (--workers) or nodes.")
    assert search_wide("the room check at the end could not run", on_ray=False) == (
        "the room check at the end could not run"
    )
