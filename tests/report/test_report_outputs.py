"""Report outputs: CSV tables, the offline HTML page, merging, and the `report` / `merge` commands."""

from __future__ import annotations

import copy
import csv
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram

from helpers import LKSWARM, run_cli
from lkswarm.auth import Credentials
from lkswarm.engine.record import MAX_FAILED_ROWS
from lkswarm.errors import ReportError
from lkswarm.metrics import summarize
from lkswarm.report.csv_tables import (
    FAILURE_FIELDS,
    PHASE_FIELDS,
    ROOM_FIELDS,
    SIGNAL_PATH_FIELDS,
    TIMELINE_FIELDS,
    TRACK_CSV_FIELDS,
    write_csv_tables,
)
from lkswarm.report.html_figures import NO_TIMELINE
from lkswarm.report.html_page import render_html, safe_url
from lkswarm.report.merge import merge_reports
from report_samples import synthetic_report

NETWORK_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=|<link[^>]*\bhref\s*=\s*[\"']?https?:", re.IGNORECASE)
STUB_JS = "/* plotly stub */"


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def union_histogram(reports: list[dict[str, Any]], phase: str) -> HdrHistogram:
    decoded = [HdrHistogram.decode(r["histograms"][phase]) for r in reports]
    union = decoded[0]
    for other in decoded[1:]:
        union.add(other)
    return union


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LKSWARM, *args], capture_output=True, text=True, timeout=120)


def assert_one_line_error(out: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert out.returncode == code, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr + out.stdout
    assert out.stderr.strip().count("\n") == 0, out.stderr
    for word in words:
        assert word in out.stderr, out.stderr


# --- real runs against the embedded server -------------------------------------------------------------


@pytest.fixture(scope="module")
def real_runs(credentials: Credentials, tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, dict[str, Any]]]:
    """Two small runs of the real engine (embedded server); the first also writes its CSV tables."""
    runs = []
    for i, (participants, duration) in enumerate((("4", "6s"), ("3", "4s"))):
        folder = tmp_path_factory.mktemp(f"run{i}")
        args = ["--rooms", "1", "--participants", participants, "--duration", duration]
        if i == 0:
            args += ["--csv", str(folder / "csv")]
        code, report, stderr = run_cli(args, credentials, folder)
        assert code == 0, stderr
        runs.append((folder, report))
    return runs


@pytest.mark.integration
def test_run_csv_writes_every_table(real_runs: list[tuple[Path, dict[str, Any]]]) -> None:
    folder, report = real_runs[0]
    csv_dir = folder / "csv"
    header, rows = read_csv(csv_dir / "phases.csv")
    assert header == list(PHASE_FIELDS)
    assert [row["phase"] for row in rows] == list(report["latency_ms"])
    join = next(row for row in rows if row["phase"] == "join_response")
    assert int(join["count"]) == report["latency_ms"]["join_response"]["count"] == 4
    assert float(join["p99_ms"]) == report["latency_ms"]["join_response"]["p99"]
    header, rows = read_csv(csv_dir / "rooms.csv")
    assert header == list(ROOM_FIELDS) and len(rows) == len(report.get("rooms", []))
    header, rows = read_csv(csv_dir / "failures.csv")
    assert header == list(FAILURE_FIELDS) and rows == []  # nobody failed
    header, rows = read_csv(csv_dir / "timeline.csv")
    assert header[0] == "t_s" and set(TIMELINE_FIELDS) <= set(header)
    assert len(rows) == len((report.get("timeline") or {}).get("t_s", []))
    header, _ = read_csv(csv_dir / "tracks.csv")
    assert header == list(TRACK_CSV_FIELDS)


@pytest.mark.integration
def test_html_of_a_real_run_inlines_plotly_and_loads_nothing_from_the_network(
    real_runs: list[tuple[Path, dict[str, Any]]],
) -> None:
    from plotly.offline import get_plotlyjs

    page = render_html(real_runs[0][1])
    assert get_plotlyjs()[:300] in page
    assert not NETWORK_SCRIPT.search(page)
    assert '<div class="plot" id="join-distribution">' in page
    assert "Plotly.newPlot" in page


@pytest.mark.integration
def test_merge_of_two_real_runs_adds_counts_and_merges_histograms_losslessly(
    real_runs: list[tuple[Path, dict[str, Any]]],
) -> None:
    reports = [report for _, report in real_runs]
    merged = merge_reports(reports)
    p = merged["participants"]
    assert p["scheduled"] == p["joined"] == 7
    assert p["outcomes"]["completed"] == sum(r["participants"]["outcomes"]["completed"] for r in reports)
    assert merged["media"]["packets_received"] == sum(r["media"]["packets_received"] for r in reports)
    for phase in ("ws_connect", "join_response"):
        union = union_histogram(reports, phase)
        assert merged["latency_ms"][phase]["count"] == sum(r["latency_ms"][phase]["count"] for r in reports)
        assert merged["latency_ms"][phase] == summarize(union)
        assert merged["latency_ms"][phase]["p99"] == round(union.get_value_at_percentile(99) / 1000, 3)
        assert summarize(HdrHistogram.decode(merged["histograms"][phase])) == summarize(union)
    assert [m["started_at"] for m in merged["merged_from"]] == [r["started_at"] for r in reports]
    # Each run had its own embedded server, on its own port.
    assert merged["target"]["urls"] == [r["target"]["url"] for r in reports]


@pytest.mark.integration
def test_report_and_merge_commands_round_trip(real_runs: list[tuple[Path, dict[str, Any]]], tmp_path: Path) -> None:
    (first, report), (second, _) = real_runs
    html, copy_json = tmp_path / "out" / "run.html", tmp_path / "copy.json"
    out = cli(
        "report",
        str(first / "report.json"),
        "--html",
        str(html),
        "--csv",
        str(tmp_path / "csv"),
        "--json",
        str(copy_json),
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(copy_json.read_text()) == report
    assert "Plotly.newPlot" in html.read_text() and (tmp_path / "csv" / "phases.csv").is_file()
    out = cli("report", str(first / "report.json"))
    assert out.returncode == 0 and "join_response" in out.stdout, out.stderr
    merged_json, merged_html = tmp_path / "merged.json", tmp_path / "merged.html"
    inputs = [str(first / "report.json"), str(second / "report.json")]
    out = cli("merge", *inputs, "--json", str(merged_json), "--html", str(merged_html))
    assert out.returncode == 0, out.stderr
    merged = json.loads(merged_json.read_text())
    assert merged["participants"]["scheduled"] == 7 and len(merged["merged_from"]) == 2
    assert "Merged from 2 reports" in merged_html.read_text()
    out = cli("report", str(merged_json), "--csv", str(tmp_path / "merged-csv"))
    assert out.returncode == 0, out.stderr  # a merged report is a report


# --- synthetic reports (no server) ----------------------------------------------------------------------


def test_bad_report_files_give_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "lkswarm.report/1", ')
    assert_one_line_error(cli("report", str(bad), "--html", str(tmp_path / "x.html")), 1, "not valid JSON")
    assert_one_line_error(cli("report", str(tmp_path / "missing.json")), 2, "no such file")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema": "k6/summary"}))
    assert_one_line_error(cli("report", str(other)), 1, "k6/summary", "lkswarm.report/1")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(synthetic_report(1)))
    assert_one_line_error(cli("merge", str(good), "--json", str(tmp_path / "m.json")), 2, "at least two")
    assert_one_line_error(cli("merge", str(good), str(good)), 2, "same file")  # before "nothing to write"
    second = tmp_path / "second.json"
    second.write_text(json.dumps(synthetic_report(2)))
    assert_one_line_error(cli("merge", str(good), str(second)), 2, "--json")
    assert_one_line_error(cli("merge", str(good), str(tmp_path / "nope.json"), "--json", "m.json"), 2, "nope.json")
    # The missing report is named whether or not an output was given (it said "nothing to write").
    assert_one_line_error(cli("merge", str(good), str(tmp_path / "nope.json")), 2, "nope.json")
    assert_one_line_error(cli("merge", str(good), str(other), "--json", str(tmp_path / "m.json")), 1, "k6/summary")
    # A file where a folder must go: the output cannot be written.
    out = cli("report", str(good), "--json", str(good / "sub" / "r.json"))
    assert_one_line_error(out, 2, "cannot write")  # checked before any work: a usage error


def test_merge_adds_counts_and_merges_histograms_timelines_and_rooms() -> None:
    a, b = synthetic_report(1, seconds=12), synthetic_report(2, seconds=8)
    b["generator"]["valid"] = False
    merged = merge_reports([a, b])
    assert merged["schema"] == "lkswarm.report/1"
    assert merged["participants"]["outcomes"] == {"completed": 76, "left": 0, "failed": 4, "not_started": 0}
    assert merged["participants"]["failures"] == {"join_timeout": 2, "ice_timeout": 2}
    for phase in ("ws_connect", "join_response", "offer_answer", "active"):
        assert merged["latency_ms"][phase] == summarize(union_histogram([a, b], phase))
    assert merged["latency_ms"]["ping_rtt"]["count"] == 0
    assert merged["generator"]["loop_lag_ms"] == summarize(union_histogram([a, b], "loop_lag"))
    assert merged["generator"]["media_lag_ms"] == summarize(union_histogram([a, b], "media_lag"))
    assert merged["histograms"]["media_lag"] == union_histogram([a, b], "media_lag").encode().decode("ascii")
    assert merged["media"]["frames_skipped"] == 3
    by_kind = merged["media"]["track_subscribed_ms"]
    assert by_kind["video"] == summarize(union_histogram([a, b], "track_subscribed.video"))
    assert by_kind["audio"] == summarize(union_histogram([b], "track_subscribed.audio"))  # a had no audio
    assert by_kind["video"]["count"] == 20 and by_kind["audio"]["count"] == 10
    assert merged["generator"]["valid"] is False and merged["generator"]["fd_limit"] == 2048
    assert merged["generator"]["cpu_s"] == 3.0
    media = merged["media"]
    assert media["packets_lost"] == 3 and media["packets_expected"] == 18003
    assert media["loss_ratio"] == round(3 / 18003, 6)
    timeline = merged["timeline"]
    assert timeline["t_s"] == a["timeline"]["t_s"]  # sample by sample; t_s of the longest run
    # Cumulative counts keep the ended run's last value; current ones drop to the live run's.
    assert timeline["started"][-1] == 80 and timeline["joined"][-1] == 78
    assert timeline["active"][-1] == a["timeline"]["active"][-1]
    a_joins, b_joins = a["timeline"]["join_count"], b["timeline"]["join_count"]
    assert timeline["join_count"] == [a_joins[i] + (b_joins[i] if i < 8 else 0) for i in range(12)]
    assert timeline["cpu_percent"][0] == round(a["timeline"]["cpu_percent"][0] + b["timeline"]["cpu_percent"][0], 3)
    assert timeline["loop_lag_p99_ms"][0] == max(
        a["timeline"]["loop_lag_p99_ms"][0], b["timeline"]["loop_lag_p99_ms"][0]
    )
    assert len(merged["rooms"]) == 4 and len(merged["failed_participants"]) == 4
    assert merged["warnings"] == ["warning of run 1", "warning of run 2"]
    assert merged["notes"].count("a shared note") == 1
    assert any("failed their own thresholds" in note for note in merged["notes"])
    assert merged["thresholds"] == [] and merged["started_at"] == a["started_at"]
    assert merged["duration_s"] == 12.0
    assert "SECRET" not in render_html(merged, plotly_js=STUB_JS)


def test_merge_lists_at_most_the_cap_of_failed_participants_earliest_first() -> None:
    a, b = synthetic_report(1), synthetic_report(2)
    row = {"identity": "p", "room": "r", "outcome": "failed:ice_timeout", "detail": "", "at_s": 0.0}
    a["failed_participants"] = [{**row, "identity": f"a{i}", "at_s": 2.0 + i} for i in range(MAX_FAILED_ROWS)]
    b["failed_participants"] = [{**row, "identity": f"b{i}", "at_s": 1.0 + i} for i in range(MAX_FAILED_ROWS)]
    merged = merge_reports([a, b])
    listed = merged["failed_participants"]
    assert len(listed) == MAX_FAILED_ROWS
    assert listed[0]["identity"] == "b0" and [x["at_s"] for x in listed] == sorted(x["at_s"] for x in listed)
    assert any("earliest failures" in note for note in merged["notes"])


def test_merge_combines_rooms_of_the_same_name_and_bounds_summaries_without_histograms() -> None:
    a, b = synthetic_report(1), synthetic_report(1)
    del b["histograms"]["join_response"]
    merged = merge_reports([a, b])
    assert [room["room"] for room in merged["rooms"]] == ["lkswarm-t1-0", "lkswarm-t1-1"]
    assert merged["rooms"][0]["scheduled"] == 40
    join = merged["latency_ms"]["join_response"]
    assert join["count"] == 80 and join["p99"] == a["latency_ms"]["join_response"]["p99"]
    assert any(note.startswith("latency_ms.join_response: not every input") for note in merged["notes"])
    assert "join_response" not in merged["histograms"]
    assert merged["latency_ms"]["ws_connect"] == summarize(union_histogram([a, b], "ws_connect"))


def test_merge_of_probe_sections_adds_counts_and_bounds_what_does_not_add() -> None:
    a, b = synthetic_report(1), synthetic_report(2)
    for report, (lost, fps, p99) in ((a, (0.01, 24.0, 80.0)), (b, (0.03, 30.0, 60.0))):
        summary = {"count": 10, "min": 5.0, "p50": 20.0, "p90": 40.0, "p99": p99, "p999": p99, "max": p99, "mean": 25.0}
        report["probes"] = {
            "count": 2,
            "frames_decoded": 100,
            "video_loss_ratio": lost,
            "frame_rate_fps": {"mean": fps, "min": fps - 4},
            "audio": {"markers_heard": 3, "marker_latency_ms": summary},
        }
    probes = merge_reports([a, b])["probes"]
    assert probes["count"] == 4 and probes["frames_decoded"] == 200
    assert probes["video_loss_ratio"] == 0.03
    assert probes["frame_rate_fps"] == {"mean": 27.0, "min": 20.0}
    assert probes["audio"]["markers_heard"] == 6
    assert probes["audio"]["marker_latency_ms"]["count"] == 20 and probes["audio"]["marker_latency_ms"]["p99"] == 80.0


def test_merge_divides_the_hubs_summed_system_calls_by_their_summed_datagrams() -> None:
    """A worker that read ten datagrams must not weigh as much as one that read a million."""
    a, b = synthetic_report(1), synthetic_report(2)
    for report, (syscalls, datagrams) in ((a, (10, 10)), (b, (75_000, 1_000_000))):
        hub = {"io": "io_uring", "syscalls": syscalls, "datagrams_received": datagrams}
        report["media"]["hub"] = hub | {"syscalls_per_datagram": round(syscalls / datagrams, 4)}
    hub = merge_reports([a, b])["media"]["hub"]
    assert (hub["syscalls"], hub["datagrams_received"]) == (75_010, 1_000_010)
    assert hub["syscalls_per_datagram"] == round(75_010 / 1_000_010, 4)  # 0.075, not the average 0.5375
    for report in (a, b):  # reports from before the count: their average, as before
        del report["media"]["hub"]["datagrams_received"]
    assert merge_reports([a, b])["media"]["hub"]["syscalls_per_datagram"] == 0.5375


def test_merge_rejects_other_schemas_and_mismatched_timelines() -> None:
    with pytest.raises(ReportError, match=re.escape("report 2 has schema 'lkswarm.report/0'")):
        merge_reports([synthetic_report(1), {**synthetic_report(2), "schema": "lkswarm.report/0"}])
    with pytest.raises(ReportError, match="nothing to merge"):
        merge_reports([])
    b = synthetic_report(2)
    b["timeline"]["interval_s"] = 5.0
    with pytest.raises(ReportError, match="different intervals"):
        merge_reports([synthetic_report(1), b])


def test_html_without_timeline_notes_it_and_escapes_report_strings() -> None:
    report = synthetic_report(3, timeline=False)
    page = render_html(report, plotly_js=STUB_JS)
    assert page.count(NO_TIMELINE) == 4
    assert '<div class="plot" id="join-distribution">' in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "no JoinResponse in 15 s &lt;b&gt;" in page
    assert "SECRET" not in page and "pw@" not in page and "wss://example.test:7880/rtc" in page
    assert "thresholds FAILED" in page and 'class="bad">FAILED' in page
    assert not NETWORK_SCRIPT.search(page)
    assert safe_url("ws://h:port, ws://k:1/") == "(unparsable url)"
    assert safe_url("https://key:secret@host.example/rtc?token=x#f") == "https://host.example/rtc"


def test_html_lists_the_generator_processes_of_a_workers_run() -> None:
    report = synthetic_report(4, timeline=False)
    assert 'id="workers"' not in render_html(report, plotly_js=STUB_JS)
    report["workers"] = [
        {"index": 0, "pid": 101, "exit_code": 0, "crashed": False, "scheduled": 20, "cpu_s": 1.5, "valid": True},
        {"index": 1, "pid": 102, "exit_code": 3, "crashed": True, "scheduled": 20, "cpu_s": None, "valid": False},
    ]
    page = render_html(report, plotly_js=STUB_JS)
    assert 'id="workers"' in page and '<td class="num">102</td>' in page
    assert "<th>media_lag_ms p99</th>" in page


def test_html_and_csv_of_an_old_report_with_only_the_original_keys(tmp_path: Path) -> None:
    report = copy.deepcopy(synthetic_report(4))
    for key in ("timeline", "rooms", "failed_participants", "histograms", "thresholds", "passed", "target"):
        del report[key]
    page = render_html(report, plotly_js=STUB_JS)
    assert "no thresholds were set" in page and '<div class="plot" id="join-distribution">' in page
    write_csv_tables(report, tmp_path)
    _, rows = read_csv(tmp_path / "failures.csv")
    assert {(row["outcome"], row["count"]) for row in rows} == {
        ("failed:join_timeout", "1"),
        ("failed:ice_timeout", "1"),
    }
    assert read_csv(tmp_path / "timeline.csv") == (list(TIMELINE_FIELDS), [])
    assert read_csv(tmp_path / "signal_paths.csv") == (list(SIGNAL_PATH_FIELDS), [])  # a report from before paths


def test_signal_paths_csv_has_a_row_per_path(tmp_path: Path) -> None:
    report = copy.deepcopy(synthetic_report(4))
    figures = {"participants": 3, "outcomes": {"completed": 3, "left": 0, "failed": 0}, "connects": 4, "offers_sent": 5}
    report["signal"]["paths"] = {
        "fallbacks": 2,
        "media_sections_requirements": 0,
        "reoffers_deferred": 0,
        "v1": figures,
        "v0": {**figures, "participants": 1, "outcomes": {"completed": 0, "left": 0, "failed": 1}},
    }
    write_csv_tables(report, tmp_path)
    _, rows = read_csv(tmp_path / "signal_paths.csv")
    assert [(r["path"], r["participants"], r["completed"], r["failed"], r["fallbacks"]) for r in rows] == [
        ("v1", "3", "3", "0", "2"),
        ("v0", "1", "0", "1", "0"),
    ]
    page = render_html(report, plotly_js=STUB_JS)
    assert '<table id="signal-paths">' in page and "<h2>Signaling paths</h2>" in page


def test_csv_tables_of_a_report_with_timeline_rooms_and_failures(tmp_path: Path) -> None:
    report = synthetic_report(5, seconds=9)
    track_rows = [
        {"identity": "p1", "packets": 5},
        {"identity": "p2", "codec": "video/H264", "bitrate_bps": 1997819.97, "jitter_ms": 0.0418408},
    ]
    written = write_csv_tables(report, tmp_path / "tables", track_rows=track_rows)
    assert [path.name for path in written] == [
        "phases.csv",
        "rooms.csv",
        "failures.csv",
        "timeline.csv",
        "signal_paths.csv",
        "tracks.csv",
    ]
    header, rows = read_csv(tmp_path / "tables" / "timeline.csv")
    assert header == list(TIMELINE_FIELDS) and len(rows) == 9
    assert float(rows[-1]["t_s"]) == report["timeline"]["t_s"][-1]
    assert int(rows[-1]["started"]) == report["timeline"]["started"][-1]
    _, rows = read_csv(tmp_path / "tables" / "failures.csv")
    assert [row["identity"] for row in rows] == ["p3-t5", "p7-t5"]
    _, rows = read_csv(tmp_path / "tables" / "rooms.csv")
    assert len(rows) == 2 and rows[0]["join_p99_ms"] == "60.0"
    _, rows = read_csv(tmp_path / "tables" / "tracks.csv")
    assert rows[0]["identity"] == "p1" and rows[0]["packets"] == "5"
    # The codec as the SFU sent it; whole bits per second and microseconds of jitter.
    assert (rows[1]["codec"], rows[1]["bitrate_bps"], rows[1]["jitter_ms"]) == ("video/H264", "1997820", "0.042")
    (tmp_path / "file").write_text("")
    with pytest.raises(ReportError, match="cannot write CSV tables"):
        write_csv_tables(report, tmp_path / "file" / "sub")


def test_a_merge_is_saturated_if_any_part_was_and_valid_only_if_every_part_was() -> None:
    """Booleans merged with all(): one worker whose probes saturated gave a merged report that said they had not."""
    parts = [synthetic_report(seed) for seed in (1, 2)]
    parts[0]["probes"] = {"saturated": False, "frames_decoded": 10}
    parts[1]["probes"] = {"saturated": True, "frames_decoded": 5}
    parts[0]["generator"]["valid"], parts[1]["generator"]["valid"] = True, False
    merged = merge_reports(parts)
    assert merged["probes"]["saturated"] is True and merged["probes"]["frames_decoded"] == 15
    assert merged["generator"]["valid"] is False


def test_failures_csv_says_how_many_failures_the_list_leaves_out() -> None:
    """failures.csv stopped at the report's first 1,000 named failures without a word."""
    from lkswarm.report.csv_tables import failure_rows

    listed = [
        {"identity": f"p{i}", "room": "r", "outcome": "failed:connect_failed", "detail": "", "at_s": 1.0}
        for i in range(2)
    ]
    report = {"participants": {"outcomes": {"failed": 1500}}, "failed_participants": listed}
    rows = failure_rows(report)
    assert len(rows) == 3 and rows[-1]["outcome"] == "failed:(not listed)" and rows[-1]["count"] == 1498
    assert sum(row["count"] for row in rows) == 1500
    report["participants"]["outcomes"]["failed"] = 2
    assert len(failure_rows(report)) == 2, "nothing left out, no extra row"


def test_merging_runs_that_never_ran_together_says_so() -> None:
    """Two runs 16 s apart merged silently into a 31 s run whose rates no load ever had."""
    a, b = synthetic_report(1, seconds=10), synthetic_report(2, seconds=15)
    b["started_at"] = "2099-01-01T00:00:00+00:00"
    a["started_at"] = "2098-12-31T23:59:34+00:00"  # 10 s long: it ended 16 s before b started
    notes = merge_reports([a, b])["notes"]
    assert any("did not run side by side: one started 16.0 s after" in note for note in notes), notes
    b["started_at"] = "2098-12-31T23:59:40+00:00"  # overlapping: a normal merge
    assert not any("side by side" in note for note in merge_reports([a, b])["notes"])
    crashed = synthetic_report(3, seconds=0)  # a crashed worker's stand-in: it never ran, at the parent's start
    crashed["duration_s"], crashed["started_at"] = 0.0, "2098-12-31T23:50:00+00:00"
    assert not any("side by side" in note for note in merge_reports([a, b, crashed])["notes"])
