"""Reports read from files are checked against the schema's TypedDicts: a broken one is one line naming the
file and the key (exit 1), never a traceback or a merged report whose counts do not add up; merge refuses a
run given twice (exit 2)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from helpers import LKSWARM, run_cli
from lkswarm.app.server import LocalServer
from lkswarm.app.workers import crashed_report
from lkswarm.auth import Credentials
from lkswarm.cli.commands import main
from lkswarm.cli.reports import load_report
from lkswarm.config import RunConfig
from lkswarm.errors import ReportError
from lkswarm.report.merge import find_duplicate, merge_reports
from lkswarm.report.schema import as_json
from lkswarm.report.validate import parse_report_json, validate_report
from report_samples import synthetic_report

DATA = Path(__file__).resolve().parents[1] / "data"
CORPUS = DATA / "broken_reports"
# Each broken report and what its one error line says (after its file name).
BROKEN = {
    "missing_section.json": "participants: missing (expected an object)",
    "missing_nested_section.json": "participants.outcomes: missing (expected an object)",
    "missing_schema.json": "has schema None; this lkswarm reads 'lkswarm.report/1'",
    "wrong_schema.json": "has schema 'lkswarm.report/2'",
    "wrong_type_section.json": "generator: expected an object, got a list",
    "wrong_type_count.json": 'participants.joined: expected a non-negative integer, got "6"',
    "negative_count.json": "participants.outcomes.failed: expected a non-negative integer, got -3",
    "nan.json": "media.loss_ratio: expected a finite number, got NaN",
    "infinity.json": "generator.cpu_s: expected a finite number, got Infinity",
    "negative_infinity.json": "duration_s: expected a finite number, got -Infinity",
    "outcomes_not_adding_up.json": (
        "participants.outcomes: expected outcomes that add up to participants.scheduled (6), "
        "got completed + left + failed + not_started = 7"
    ),
    "failures_not_adding_up.json": "participants.failures: expected counts that add up to participants.outcomes.failed",
    "bad_latency_summary.json": 'latency_ms.join_response.p99: expected a finite number, got "fast"',
    "bad_timeline.json": 'timeline.t_s: expected a list of numbers, got "1,2,3"',
    "not_json.json": "not valid JSON (line",
    "empty.json": "not valid JSON (line 1, column 1",
    "not_an_object.json": "is not a report (expected a JSON object",
}

CliRun = Callable[..., tuple[int, str, str]]


@pytest.fixture
def lkswarm(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> CliRun:
    """``lkswarm ARGS`` in this process, through the script's entry point: (exit code, stdout, stderr)."""

    def invoke(*args: str | Path) -> tuple[int, str, str]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["lkswarm", *map(str, args)])
        with pytest.raises(SystemExit) as exited:
            main()
        out = capsys.readouterr()
        return int(exited.value.code or 0), out.out, out.err

    return invoke


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.json"
    path.write_text(json.dumps(synthetic_report(1)))
    return path


def assert_one_error_line(code: int, err: str, expected_code: int, *words: str) -> None:
    assert code == expected_code, (code, err)
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    for word in words:
        assert word in err, err


def roundtrip(report: Any) -> Any:
    return parse_report_json(json.dumps(report), "r.json")


# --- the corpus --------------------------------------------------------------------------------------------


def test_the_corpus_holds_every_kind_of_broken_report() -> None:
    assert sorted(path.name for path in CORPUS.glob("*.json")) == sorted(BROKEN)
    assert len(BROKEN) >= 8


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_report_is_one_line_from_report_and_merge(
    name: str, good: Path, tmp_path: Path, lkswarm: CliRun
) -> None:
    broken = CORPUS / name
    line = f"{broken}: {BROKEN[name]}" if not BROKEN[name].startswith(("has", "is")) else f"{broken} {BROKEN[name]}"
    code, _, err = lkswarm("report", broken)
    assert_one_error_line(code, err, 1, line)
    code, _, err = lkswarm("report", broken, "--html", tmp_path / "r.html", "--csv", tmp_path / "csv")
    assert_one_error_line(code, err, 1, line)
    for inputs in ((broken, good), (good, broken)):
        code, _, err = lkswarm("merge", *inputs, "--json", tmp_path / "merged.json")
        assert_one_error_line(code, err, 1, line)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.json"]  # nothing written


def test_the_script_itself_gives_one_line_without_traceback(good: Path, tmp_path: Path) -> None:
    for name in ("nan.json", "negative_count.json", "missing_section.json"):
        for args in (["report", str(CORPUS / name)], ["merge", str(good), str(CORPUS / name), "--json", "m.json"]):
            done = subprocess.run([*LKSWARM, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path)
            assert_one_error_line(done.returncode, done.stderr, 1, name, BROKEN[name])


# --- what still validates ------------------------------------------------------------------------------------


def crashed(index: int = 1) -> dict[str, Any]:
    config = RunConfig(rooms=3, participants=4, run_tag="c")
    return as_json(crashed_report(config, index, 2, "exit status -9: killed", datetime(2026, 1, 2, tzinfo=UTC)))


def test_reports_written_by_todays_code_and_before_still_validate(tmp_path: Path) -> None:
    written = [
        json.loads((DATA / "report-before-layers-fad0167.json").read_text()),
        *(synthetic_report(seed) for seed in range(1, 6)),  # without participants.departed: before it existed
        synthetic_report(6, timeline=False),
        crashed(),
        merge_reports([synthetic_report(1), synthetic_report(2), crashed()]),
        merge_reports([crashed(0), crashed(1)]),
    ]
    workers_run = merge_reports([synthetic_report(7), crashed()])
    workers_run["workers"] = [
        {"index": 0, "pid": 11, "exit_code": 0, "crashed": False, "scheduled": 40, "cpu_s": 1.5, "valid": True},
        {"index": 1, "pid": 12, "exit_code": -9, "crashed": True, "scheduled": 6, "cpu_s": None, "valid": None},
    ]
    written.append(workers_run)
    for i, report in enumerate(written):
        validate_report(report, f"report {i}")
        path = tmp_path / f"r{i}.json"
        path.write_text(json.dumps(report, indent=2))
        assert load_report(path) == report


@pytest.mark.integration
def test_a_real_run_json_validates(tmp_path: Path, livekit_server: LocalServer, credentials: Credentials) -> None:
    args = ["--url", livekit_server.url, "--rooms", "1", "--participants", "3", "--duration", "4s"]
    code, report, stderr = run_cli([*args, "--audio-publishers", "1"], credentials, tmp_path)
    assert code == 0, stderr
    assert load_report(tmp_path / "report.json") == report


def test_keys_the_schema_does_not_name_are_accepted_and_added_keys_may_be_missing() -> None:
    report = synthetic_report(1)
    report["a_future_section"] = {"counts": [1, 2, None], "label": "x"}
    report["participants"]["a_future_count"] = 3
    for key in ("timeline", "rooms", "failed_participants"):
        del report[key]
    validate_report(roundtrip(report), "r.json")
    report["a_future_section"]["counts"].append(float("nan"))
    with pytest.raises(
        ReportError, match=r"^r\.json: a_future_section\.counts\[3\]: expected a finite number, got NaN$"
    ):
        validate_report(roundtrip(report), "r.json")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda r: r["participants"].pop("scheduled"),
            "participants.scheduled: missing (expected a non-negative integer)",
        ),
        (
            lambda r: r["participants"]["outcomes"].update(completed=40, failed=-2),
            "outcomes.failed: expected a non-neg",
        ),
        (lambda r: r["participants"]["left_reasons"].update(KICKED=1), "participants.left_reasons: expected counts"),
        (lambda r: r["participants"]["failures"].update(join_timeout=-1), "failures.join_timeout: expected a non-neg"),
        (lambda r: r.update(passed="yes"), 'passed: expected true or false, got "yes"'),
        (lambda r: r["rooms"][1].update(failed=1.5), "rooms[1].failed: expected a non-negative integer, got 1.5"),
        (lambda r: r["target"].update(urls="wss://x"), 'target.urls: expected a list, got "wss://x"'),
        (lambda r: r["media"].update(packets_expected="x"), "media.packets_expected: expected a non-negative integer"),
        (lambda r: r["thresholds"][0].pop("passed"), "thresholds[0].passed: missing (expected true or false)"),
        (lambda r: r["generator"]["loop_lag_ms"].pop("count"), "generator.loop_lag_ms.count: missing"),
        (lambda r: r["timeline"].update(interval_s=0), "timeline.interval_s: expected a positive number of seconds"),
        (lambda r: r["timeline"]["rss_mb"].__setitem__(2, "x"), "timeline.rss_mb[2]: expected a finite number or null"),
        (lambda r: r.update(interrupted={"signal": "SIGINT", "at_s": None}), "interrupted.at_s: expected a finite"),
        (lambda r: r.update(merged_from=[{"passed": True}]), "merged_from[0].started_at: missing"),
        # Checked now: a histogram that does not decode failed the HTML only after the CSVs were written (exit 3),
        # and series of unequal length were cut to the shortest in timeline.csv without a word.
        (lambda r: r["histograms"].update(join_response="!!!notbase64"), "histograms.join_response: expected an"),
        (lambda r: r["timeline"]["rss_mb"].pop(), "timeline.rss_mb: expected as many samples as timeline."),
    ],
)
def test_an_error_names_the_file_and_the_key_path(change: Callable[[dict[str, Any]], Any], message: str) -> None:
    report = copy.deepcopy(synthetic_report(1))
    change(report)
    with pytest.raises(ReportError) as refused:
        validate_report(roundtrip(report), "r.json")
    assert str(refused.value).startswith("r.json: ") and message in str(refused.value)
    assert "\n" not in str(refused.value)


# --- merge refuses a run given twice ---------------------------------------------------------------------------


def test_merge_refuses_the_same_run_twice(tmp_path: Path, good: Path, lkswarm: CliRun) -> None:
    out = tmp_path / "m.json"
    code, _, err = lkswarm("merge", good, good, "--json", out)
    assert_one_error_line(code, err, 2, "is the same file as", "doubles its counts")
    code, _, err = lkswarm("merge", good, tmp_path / "." / "good.json", "--json", out)
    assert_one_error_line(code, err, 2, "is the same file as")
    # The same content in another file, differently laid out: key order and whitespace do not matter.
    copied = tmp_path / "copy.json"
    copied.write_text(json.dumps(dict(reversed(list(synthetic_report(1).items()))), indent=4))
    code, _, err = lkswarm("merge", good, copied, "--json", out)
    assert_one_error_line(code, err, 2, f"{copied} and {good} hold one run (identical content)")
    # The same run with a field changed (an edited copy): the same start, config and rooms.
    edited = synthetic_report(1)
    edited["notes"].append("edited")
    copied.write_text(json.dumps(edited))
    code, _, err = lkswarm("merge", good, copied, "--json", out)
    assert_one_error_line(code, err, 2, "hold one run (the same run: the same started_at, config and rooms)")
    # A run merged again with a merge that holds it.
    other, merged = tmp_path / "other.json", tmp_path / "merged.json"
    other.write_text(json.dumps(synthetic_report(2)))
    assert lkswarm("merge", good, other, "--json", merged)[0] == 0
    code, _, err = lkswarm("merge", merged, good, "--json", out)
    assert_one_error_line(code, err, 2, f"{good} and {merged} hold one run (one already merges the other's run)")
    assert not out.exists()
    third = tmp_path / "third.json"
    third.write_text(json.dumps(synthetic_report(3)))
    code, _, err = lkswarm("merge", merged, third, "--json", out)
    assert code == 0, err
    assert json.loads(out.read_text())["participants"]["scheduled"] == 120


def test_find_duplicate_names_the_pair() -> None:
    a, b, c = synthetic_report(1), synthetic_report(2), synthetic_report(3)
    assert find_duplicate([a, b, c]) is None
    assert find_duplicate([a, b, copy.deepcopy(b)]) == (1, 2, "identical content")
    assert find_duplicate([a, b, {**a, "notes": []}])[:2] == (0, 2)  # type: ignore[index]
    assert find_duplicate([merge_reports([a, b]), c, copy.deepcopy(b)])[:2] == (0, 2)  # type: ignore[index]
    assert find_duplicate([crashed(0), crashed(1)]) is None  # two workers of one run: one start, other rooms


def test_merge_refuses_to_write_over_one_of_its_inputs(tmp_path: Path, good: Path, lkswarm: CliRun) -> None:
    """`merge a.json b.json --json a.json` wrote the merge over a.json and exited 0: that report was gone."""
    other = tmp_path / "other.json"
    other.write_text(json.dumps(synthetic_report(2)))
    before = other.read_text()
    code, _, err = lkswarm("merge", good, other, "--json", other)
    assert_one_error_line(code, err, 2, f"--json {other} is one of the reports to merge")
    code, _, err = lkswarm("merge", good, other, "--html", tmp_path / "." / "other.json")
    assert_one_error_line(code, err, 2, "is one of the reports to merge")
    assert other.read_text() == before


@pytest.mark.parametrize(
    ("change", "outputs"),
    [
        (lambda r: r.update(data={**(r.get("data") or {}), "channels": [1]}), ["--html", "r.html"]),
        (lambda r: r.update(data={**(r.get("data") or {}), "tracks": [1]}), ["--html", "r.html"]),
        (lambda r: r.update(probes={"count": 2}), []),  # the printed summary
    ],
)
def test_a_free_form_section_of_the_wrong_shape_is_one_line_not_a_traceback(
    change: Callable[[dict[str, Any]], Any], outputs: list[str], tmp_path: Path, lkswarm: CliRun
) -> None:
    """Validation leaves data, probes and capacity free-form; rendering them indexed in and raised."""
    report = copy.deepcopy(synthetic_report(1))
    change(report)
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(report))
    code, _, err = lkswarm("report", path, *(str(tmp_path / o) if o.endswith(".html") else o for o in outputs))
    assert_one_error_line(code, err, 1, f"{path}: a section does not have a report's shape (")
