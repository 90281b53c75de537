"""Scenario files, presets, stages/churn plans, thresholds, the live view and the Prometheus text: no sockets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hdrh.histogram import HdrHistogram
from rich.console import Console

from lkswarm.app.runner import check_cloud_guard
from lkswarm.app.scenario import load_preset, load_summary, parse_scenario, preset_names
from lkswarm.config import RunConfig
from lkswarm.engine.plan import build_plan, unstarted_note
from lkswarm.engine.timeline import Snapshot
from lkswarm.errors import ConfigError
from lkswarm.metrics import PhaseMetrics, percentile
from lkswarm.observe.live import render
from lkswarm.observe.prometheus import _histogram_lines, parse_address, phase_buckets
from lkswarm.report.thresholds import evaluate, parse_threshold, parse_thresholds, read_key

EXPECTED_PRESETS = {
    "audio-room",
    "livestream",
    "conference",
    "multi-room",
    "churn",
    "reconnect-storm",
    "speaker-sim",
    "chat",
    "telemetry",
}


# -- plans ---------------------------------------------------------------------------------


def test_plan_without_stages_is_the_classic_open_model() -> None:
    plan = build_plan(RunConfig(rooms=2, participants=3, rate=10, duration_s=5))
    assert [a.start_s for a in plan] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert [a.room_index for a in plan] == [0, 1, 0, 1, 0, 1]
    assert [a.seat for a in plan] == [0, 0, 1, 1, 2, 2]
    assert all(a.leave_s is None for a in plan)


def test_plan_cuts_arrivals_after_the_end_and_says_how_many() -> None:
    """The cut ones are in no outcome: a run of 30 at 2/s for 5 s reported '10/10 joined' and exit 0, unsaid."""
    config = RunConfig(rooms=1, participants=100, rate=10, duration_s=2)
    plan = build_plan(config)
    assert len(plan) == 20
    note = unstarted_note(config)
    assert note is not None and note.startswith("80 of the 100 participants (1 room(s) of 100) were never started")
    assert "about 10 s, longer than --duration 2 s" in note
    poisson = RunConfig(rooms=2, participants=50, rate=10, duration_s=2, arrival="poisson", seed=7)
    note = unstarted_note(poisson)
    assert note is not None and note.startswith(f"{100 - len(build_plan(poisson))} of the 100 participants")
    assert unstarted_note(RunConfig(rooms=2, participants=10, rate=10, duration_s=2)) is None  # the last at 1.9 s
    staged = RunConfig(rooms=1, stages=[{"duration_s": 2, "target": 50}])
    assert unstarted_note(staged) is None


def test_stages_ramp_up_hold_and_down_follow_the_target() -> None:
    config = RunConfig(
        rooms=2,
        stages=[{"duration_s": "4s", "target": 8}, {"duration_s": 4, "target": 8}, {"duration_s": "2s", "target": 2}],
    )
    assert config.duration_s == 10
    plan = build_plan(config)
    assert len(plan) == 8
    starts = sorted(a.start_s for a in plan)
    assert starts == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5])
    leaves = sorted(a.leave_s for a in plan if a.leave_s is not None)
    assert len(leaves) == 6 and all(8 < t < 10 for t in leaves)
    # last in, first out: the two earliest joiners stay
    stayers = [a for a in plan if a.leave_s is None]
    assert sorted(a.index for a in stayers) == [0, 1]

    def population(t: float) -> int:
        return sum(1 for a in plan if a.start_s <= t and (a.leave_s is None or a.leave_s > t))

    assert population(3.9) == 8 and population(7.9) == 8 and population(9.99) == 2


def test_churn_replaces_the_oldest_in_the_same_room_and_seat() -> None:
    plan = build_plan(RunConfig(rooms=2, participants=2, rate=10, duration_s=3, churn_rate=2))
    by_index = {a.index: a for a in plan}
    replacements = [a for a in plan if a.index >= 4]
    assert len(replacements) == 5  # at 0.8, 1.3, 1.8, 2.3, 2.8
    for replacement in replacements:
        left = [a for a in plan if a.leave_s == replacement.start_s]
        assert len(left) == 1
        assert (left[0].room_index, left[0].seat) == (replacement.room_index, replacement.seat)
    assert by_index[0].leave_s == pytest.approx(0.8)
    population = sum(1 for a in plan if a.leave_s is None)
    assert population == 4


def test_replacements_keep_publishing_seats() -> None:
    plan = build_plan(RunConfig(rooms=1, participants=3, rate=10, duration_s=2, churn_rate=5))
    seats = {a.seat for a in plan}
    assert seats == {0, 1, 2}


# -- scenario files and presets -----------------------------------------------------------


def test_every_preset_parses_and_is_listed() -> None:
    assert set(preset_names()) == EXPECTED_PRESETS
    for name in preset_names():
        scenario = load_preset(name)
        assert scenario.description and scenario.name == name
        config = RunConfig(**scenario.fields)
        parse_thresholds(scenario.thresholds)
        assert config.duration_s >= 30


def test_the_presets_table_says_how_big_each_preset_is() -> None:
    assert load_summary(RunConfig(**load_preset("audio-room").fields)) == (
        "1 room × 110; publishers per room: 10 audio; 20 joins/s, 1m"
    )
    assert load_summary(RunConfig(**load_preset("reconnect-storm").fields)) == (
        "2 rooms × 25; 25 joins/s, 40s, reconnect storm at 20s"
    )
    staged = RunConfig(
        rooms=2,
        signal_only=True,
        stages=[{"duration_s": "30s", "target": 40}, {"duration_s": "1m30s", "target": 40}],
    )
    # the stages set the population and the pace: no join rate is claimed
    assert load_summary(staged) == "up to 40 live over 2 rooms, in 2 stages; signal only; 2m"


def test_conference_all_publish_follows_participants() -> None:
    scenario = load_preset("conference")
    config = RunConfig(**{**scenario.fields, "participants": 4})
    assert config.video_publishers == 4 and config.grid_tiles == 9


def test_scenario_errors_name_the_key_or_line() -> None:
    with pytest.raises(ConfigError, match=r"s\.toml: rooms: must be a whole number, not .two."):
        parse_scenario('rooms = "two"\n', "s.toml")
    with pytest.raises(ConfigError, match=r"line 2"):
        parse_scenario("rooms = 2\nrate = \n", "s.toml")
    with pytest.raises(ConfigError, match=r"bogus: not a known setting"):
        parse_scenario("bogus = 1\n", "s.toml")
    with pytest.raises(ConfigError, match=r"stages\.1\.target"):
        parse_scenario('[[stages]]\nduration = "2s"\ntarget = 3\n[[stages]]\nduration = "1s"\ntarget = -1\n', "s.toml")
    with pytest.raises(ConfigError, match=r"layout"):
        parse_scenario('layout = "mosaic"\n', "s.toml")
    with pytest.raises(ConfigError, match=r"reconnect_storm_at.*inside the run"):
        parse_scenario('duration = "10s"\nreconnect_storm_at = "20s"\n', "s.toml")
    with pytest.raises(ConfigError, match=r"reconnect_storm_window .*must end inside the run"):
        parse_scenario('duration = "20s"\nreconnect_storm_at = "5s"\nreconnect_storm_window = "15s"\n', "s.toml")
    with pytest.raises(ConfigError, match=r"reconnect_storm_window .*needs reconnect_storm_at"):
        parse_scenario('duration = "20s"\nreconnect_storm_window = "5s"\n', "s.toml")
    with pytest.raises(ConfigError, match=r"signal path 'v2'"):
        parse_scenario('signal_path = "v2"\n', "s.toml")
    with pytest.raises(ConfigError, match=r"thresholds must be a list"):
        parse_scenario('thresholds = "failed==0"\n', "s.toml")


def test_scenario_durations_accept_friendly_spellings() -> None:
    scenario = parse_scenario('duration = "2m"\nreconnect_storm_at = "30s"\nreconnect_storm_window = "10s"\n', "s.toml")
    config = RunConfig(**scenario.fields)
    assert config.duration_s == 120 and config.reconnect_storm_at_s == 30 and config.reconnect_storm_window_s == 10
    # The timeouts too: join_timeout = "3s" was "must be a finite number" beside duration = "3s".
    scenario = parse_scenario('join_timeout = "3s"\nmedia_connect_timeout = "1m"\n', "s.toml")
    config = RunConfig(**scenario.fields)
    assert (config.join_timeout_s, config.media_connect_timeout_s) == (3.0, 60.0)
    with pytest.raises(ConfigError, match="data_publishers"):
        RunConfig(data_to="3")  # --data-to chooses the data publishers' destinations: none, nothing to choose


def test_a_scenario_takes_the_flags_own_names() -> None:
    """data_burst_every, data_slow_pause, data_slow_every and simulate_speakers, as `run --help` spells them,
    were 'not a known setting' in a file, which wanted the internal data_burst_every_s and talk_spurts."""
    text = (
        'participants = 6\ndata_publishers = 1\ndata_burst = 3\ndata_burst_every = "2s"\ndata_slow_readers = 1\n'
        'data_slow_pause = "500ms"\ndata_slow_every = "1m"\nsimulate_speakers = true\n'
    )
    config = RunConfig.from_mapping(parse_scenario(text, "s.toml").fields)
    assert (config.data_burst_every_s, config.data_slow_pause_s, config.data_slow_every_s) == (2.0, 0.5, 60.0)
    assert config.talk_spurts is True


# -- thresholds -----------------------------------------------------------------------------


def _report_with_join_samples(values_ms: list[float]) -> dict[str, object]:
    histogram = HdrHistogram(1, 3_600_000_000, 3)
    for value in values_ms:
        histogram.record_value(round(value * 1000))
    return {
        "participants": {"scheduled": 10, "joined": 9, "outcomes": {"failed": 1, "completed": 9}},
        "latency_ms": {"join_response": {"count": len(values_ms), "p99": max(values_ms)}},
        "histograms": {"join_response": histogram.encode().decode("ascii")},
        "media": {"loss_ratio": 0.004},
        "generator": {"cpu_s": 12.5},
    }


def test_threshold_parsing_units_and_keys() -> None:
    t = parse_threshold("active.p95<2s")
    assert (t.key, t.op, t.limit) == ("latency_ms.active.p95", "<", 2000.0)
    assert parse_threshold("media.loss_ratio<1%").limit == pytest.approx(0.01)
    assert parse_threshold("generator.cpu_s<=1m").limit == 60
    assert parse_threshold("failed==0").key == "participants.outcomes.failed"
    assert parse_threshold("joined>=100").key == "participants.joined"
    for bad in ("joinx.p99<1", "join_response<1", "failed==0ms", "p99 < fast", "join_response.p99<5%"):
        with pytest.raises(ConfigError):
            parse_threshold(bad)


def test_a_threshold_unit_converts_to_the_keys_own_and_fits_its_kind() -> None:
    """`generator.media_lag_ms.p99<20ms` was refused ('not a time'), `joined>=50%` became 0.5 participants and
    `join_response.count<5s` dropped its unit."""
    assert parse_threshold("generator.media_lag_ms.p99<20ms").limit == 20
    assert parse_threshold("probes.audio.marker_latency_ms.p99<1s").limit == 1000
    assert parse_threshold("generator.cpu_s<500ms").limit == pytest.approx(0.5)
    assert parse_threshold("server.rtt_out_ms_mean<0.5s").limit == 500
    assert parse_threshold("server.loss_out_ratio<0.5%").limit == pytest.approx(0.005)
    assert parse_threshold("machine.busy_share<90%").limit == pytest.approx(0.9)
    assert parse_threshold("probes.cpu_share_of_core<50%").limit == pytest.approx(0.5)
    for bad, words in [
        ("joined>=50%", "not a ratio"),
        ("failed<200%", "not a ratio"),
        ("join_response.count<5s", "a count takes no unit"),
        ("media.packets_received>10s", "not a time"),
        ("latency_ms.join_response.count>3s", "a count takes no unit"),
        ("generator.loop_lag_ms.count>1m", "a count takes no unit"),
    ]:
        with pytest.raises(ConfigError, match=words):
            parse_threshold(bad)


def test_thresholds_read_any_percentile_from_the_histogram() -> None:
    report = _report_with_join_samples([float(v) for v in range(1, 101)])
    assert read_key(report, "latency_ms.join_response.p95") == pytest.approx(95, rel=0.01)
    assert read_key(report, "failed_ratio") == pytest.approx(0.1)
    evaluate(
        report,
        parse_thresholds(["join_response.p95<100ms", "join_response.p50<10ms", "failed<=1", "media.loss_ratio<1%"]),
    )
    results = {r["expr"]: r["passed"] for r in report["thresholds"]}  # type: ignore[attr-defined]
    assert results == {
        "join_response.p95<100ms": True,
        "join_response.p50<10ms": False,
        "failed<=1": True,
        "media.loss_ratio<1%": True,
    }
    assert report["passed"] is False
    json.dumps(report)


def test_a_p99_9_threshold_reads_the_histogram() -> None:
    """The percentile's own dot made the key four parts long: the histogram was never read and the threshold
    failed whatever the latency."""
    report = _report_with_join_samples([float(v) for v in range(1, 1001)])
    assert read_key(report, parse_threshold("join_response.p99.9<2s").key) == pytest.approx(999, rel=0.01)
    evaluate(report, parse_thresholds(["join_response.p99.9<2s", "join_response.p99.9<500ms"]))
    assert [r["passed"] for r in report["thresholds"]] == [True, False]  # type: ignore[index]
    summary_only = {"latency_ms": {"join_response": {"count": 3, "p999": 42.0}}}
    assert read_key(summary_only, "latency_ms.join_response.p99.9") == 42.0


def test_reconnect_merges_resume_and_rejoin_samples() -> None:
    """One preset threshold serves both storm modes: `reconnect` reads resume and rejoin together."""

    def encoded(values_ms: list[int]) -> str:
        histogram = HdrHistogram(1, 3_600_000_000, 3)
        for value in values_ms:
            histogram.record_value(value * 1000)
        return str(histogram.encode().decode("ascii"))

    resumed_only = {"histograms": {"resume": encoded([10, 20])}}
    assert read_key(resumed_only, parse_threshold("reconnect.count>0").key) == 2
    both = {"histograms": {"resume": encoded([10, 20]), "rejoin": encoded([3000, 4000])}}
    assert read_key(both, "latency_ms.reconnect.count") == 4
    assert read_key(both, "latency_ms.reconnect.max") == pytest.approx(4000, rel=0.01)
    assert read_key(both, "latency_ms.reconnect.min") == pytest.approx(10, rel=0.01)
    assert read_key({"histograms": {}}, "latency_ms.reconnect.count") == 0.0
    assert read_key({"histograms": {}}, "latency_ms.reconnect.p99") is None  # no samples: fails, as any phase
    assert read_key(both, "latency_ms.resume.count") == 2  # the parts themselves are untouched


def test_a_threshold_without_data_fails() -> None:
    report = _report_with_join_samples([5.0])
    evaluate(report, parse_thresholds(["active.p99<1s", "probes.frames_decoded>=1"]))
    assert [r["actual"] for r in report["thresholds"]] == [None, None]  # type: ignore[index]
    assert report["passed"] is False


# -- live view, Prometheus, cloud guard --------------------------------------------------------


def test_live_view_renders_counts_phases_media_and_invalidity() -> None:
    snap = Snapshot(
        t_s=12,
        planned=100,
        started=40,
        joined=38,
        active=30,
        failed=2,
        alive=36,
        media_packets_per_s=1234,
        media_loss_ratio=0.001,
        cpu_percent=55,
        loop_lag_p99_ms=31.5,
        rolling_ms={"join_response": (20, 4.5, 9.25)},
        failures={"http_401": 2},
        invalid_reason="event-loop lag p99 31 ms: the generator is saturated",
    )
    console = Console(record=True, width=120)
    console.print(render(snap, 60))
    text = console.export_text()
    for expected in ("40/100", "joined 38", "active 30", "failed 2", "join_response", "9.2", "1,234 pkt/s",
                     "0.10 %", "cpu 55 %", "http_401 2", "RUN INVALID"):  # fmt: skip
        assert expected in text, (expected, text)


def test_prometheus_histogram_buckets_are_cumulative() -> None:
    metrics = PhaseMetrics()
    for value_ms in (2, 2.5, 3, 40, 700, 20_000, 90_000):
        metrics.record("join_response", value_ms)
    probes = HdrHistogram(1, 3_600_000_000, 3)
    probes.record_value(4_000, 2)  # 4 ms twice: a whole histogram added at once, as the probes' is
    metrics.add_histogram("join_response", probes)
    lines = _histogram_lines("lkswarm_phase_latency_seconds", "join_response", phase_buckets(metrics, "join_response"))
    buckets = {line.split('le="')[1].split('"')[0]: int(line.split()[-1]) for line in lines if "_bucket" in line}
    assert buckets["0.001"] == 0 and buckets["0.0025"] == 2 and buckets["0.005"] == 5  # a bound is inclusive
    assert buckets["0.05"] == 6 and buckets["1.0"] == 7 and buckets["30.0"] == 8 and buckets["60.0"] == 8
    assert buckets["+Inf"] == 9 and lines[-1].endswith('_count{phase="join_response"} 9')
    sum_name, sum_s = lines[-2].split()
    assert sum_name == 'lkswarm_phase_latency_seconds_sum{phase="join_response"}'
    assert float(sum_s) == pytest.approx(110.7555, abs=1e-5)  # the added histogram's values are µs-bucketed
    assert metrics.phases["join_response"].get_total_count() == 9
    assert parse_address(":9464") == ("127.0.0.1", 9464)
    with pytest.raises(ConfigError):
        parse_address("9464")


def test_cloud_guard_refuses_big_runs_without_permission() -> None:
    big = RunConfig(url="wss://demo.livekit.cloud", rooms=2, participants=30)
    with pytest.raises(ConfigError, match="--i-have-permission"):
        check_cloud_guard(big, permitted=False)
    check_cloud_guard(big, permitted=True)
    check_cloud_guard(RunConfig(url="wss://demo.livekit.cloud", rooms=1, participants=50), permitted=False)
    check_cloud_guard(RunConfig(url="ws://127.0.0.1:7880", rooms=10, participants=100), permitted=False)


def test_nearest_rank_percentile() -> None:
    assert percentile([], 99) == 0.0
    values = [float(v) for v in range(1, 11)]
    assert percentile(values, 50) == 5 and percentile(values, 99) == 10 and percentile(values, 10) == 1


def test_presets_ship_inside_the_package() -> None:
    import lkswarm.app

    folder = Path(lkswarm.app.__file__).parent / "presets"
    assert {p.stem for p in folder.glob("*.toml")} == EXPECTED_PRESETS


def test_a_loss_threshold_over_nothing_received_fails() -> None:
    """loss_ratio read 0.0 when nothing was expected, so media.loss_ratio<1% passed a run that received nothing."""
    from lkswarm.media.data import DataTotals
    from lkswarm.media.totals import MediaTotals

    nothing = MediaTotals().report()
    assert nothing["loss_ratio"] is None
    assert DataTotals().report({"count": 0})["loss_ratio"] is None
    report = {**_report_with_join_samples([5.0]), "media": nothing}
    evaluate(report, parse_thresholds(["media.loss_ratio<1%"]))
    assert report["passed"] is False and report["thresholds"][0]["actual"] is None  # type: ignore[index]


def test_a_load_flag_that_replaces_the_files_stages_says_so() -> None:
    """`run staged.toml --duration 12s` ran flat, with the report's stages [] and not a word about it."""
    from lkswarm.app.scenario import Scenario, merge_flags, stages_replaced_note

    staged = Scenario(fields={"stages": [{"duration_s": "4s", "target": 8}, {"duration_s": "2s", "target": 2}]})
    flags = {"duration_s": 12.0, "rate": None, "participants": None, "rooms": 2}
    assert "stages" not in merge_flags(staged, flags)
    note = stages_replaced_note(staged, flags)
    assert note is not None and note.startswith("--duration replaces the scenario's 2 stage(s)")
    both = stages_replaced_note(staged, {**flags, "rate": 5.0})
    assert both is not None and both.startswith("--rate and --duration replace")
    assert stages_replaced_note(staged, {"rooms": 2}) is None
    assert stages_replaced_note(Scenario(fields={}), flags) is None
