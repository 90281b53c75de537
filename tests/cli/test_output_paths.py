"""Outputs of `run`, `report` and `merge`: checked before any work, written whole or not at all, and one that
fails at the end costs not the others (exit 3)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers import LKSWARM
from lkswarm.cli.commands import main
from lkswarm.cli.reports import EXIT_OUTPUT_FAILED, announce_outputs, check_output_paths, write_outputs
from lkswarm.errors import ConfigError
from lkswarm.report.csv_tables import write_atomically
from report_samples import synthetic_report

CliRun = Callable[..., tuple[int, str, str]]


@pytest.fixture
def lkswarm(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> CliRun:
    """``lkswarm ARGS`` in this process, through the script's entry point: (exit code, stdout, stderr).

    An exception the entry point does not turn into one line escapes here and fails the test.
    """

    def invoke(*args: str | Path) -> tuple[int, str, str]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["lkswarm", *map(str, args)])
        with pytest.raises(SystemExit) as exited:
            main()
        out = capsys.readouterr()
        return int(exited.value.code or 0), out.out, out.err

    return invoke


@pytest.fixture
def reports(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(synthetic_report(1)))
    b.write_text(json.dumps(synthetic_report(2)))
    return a, b


def assert_one_error_line(code: int, err: str, expected_code: int, *words: str) -> None:
    assert code == expected_code, (code, err)
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    assert err.startswith("error: "), err
    for word in words:
        assert word in err, err


def listing(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


# --- before any work -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outputs", "words"),
    [
        ({"json_path": "/proc/x/y.json"}, ("--json /proc/x/y.json", "cannot create a folder in /proc")),
        ({"json_path": "/proc/y.json"}, ("--json /proc/y.json", "cannot create files in /proc")),
        ({"html_path": "."}, ("--html . is a folder",)),
        ({"csv_dir": "a.json"}, ("--csv a.json is a file",)),
        ({"json_path": "a.json/sub/r.json"}, ("a.json is a file, not a folder",)),
        ({"csv_dir": "a.json/tables"}, ("a.json is a file, not a folder",)),
        ({"json_path": "out.json", "html_path": "./out.json"}, ("--json and --html both name out.json",)),
        ({"json_path": "t/phases.csv", "csv_dir": "t"}, ("one of the tables --csv t writes",)),
        ({"html_path": "out", "csv_dir": "out/tables"}, ("--html out and --csv out/tables overlap",)),
        ({"json_path": "same", "csv_dir": "same"}, ("overlap",)),
    ],
)
def test_check_output_paths_refuses_what_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outputs: dict[str, str], words: tuple[str, ...]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.json").write_text("{}")
    before = listing(tmp_path)
    with pytest.raises(ConfigError) as refused:
        check_output_paths(**{key: Path(value) for key, value in outputs.items()})
    assert "\n" not in str(refused.value)
    for word in words:
        assert word in str(refused.value)
    assert listing(tmp_path) == before  # no probe file, no folder left behind


def test_check_output_paths_accepts_new_and_existing_paths_and_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "old.json").write_text("{}")
    (tmp_path / "tables").mkdir()
    before = listing(tmp_path)
    check_output_paths(json_path=tmp_path / "old.json", html_path=tmp_path / "new" / "deep" / "r.html")
    check_output_paths(csv_dir=tmp_path / "tables", json_path=tmp_path / "tables" / "report.json")
    check_output_paths(csv_dir=tmp_path / "fresh" / "tables", json_path=Path(os.devnull))
    check_output_paths()
    assert listing(tmp_path) == before


@pytest.mark.parametrize("command", ["run", "report", "merge"])
def test_bad_output_paths_exit_2_before_any_work_within_a_second(
    command: str, tmp_path: Path, reports: tuple[Path, Path], lkswarm: CliRun
) -> None:
    a, b = reports
    args = {
        # 30 s of run: refused after the run, the command could not be this fast.
        "run": ["run", "--participants", "2", "--duration", "30s", "--quiet"],
        "report": ["report", a],
        "merge": ["merge", a, b],
    }[command]
    bad = [*args, "--csv", str(tmp_path / "ok"), "--json", "/proc/x/y.json"]
    lkswarm(*args, "--json", "/proc/x/y.json")  # warm: the command's modules imported once
    started = time.perf_counter()
    code, _, err = lkswarm(*bad)
    elapsed_s = time.perf_counter() - started
    assert_one_error_line(code, err, 2, "--json /proc/x/y.json")
    assert elapsed_s < 1.0, elapsed_s
    assert not (tmp_path / "ok").exists()
    # The same through the installed script, its interpreter's start included (a loose bound: the machine
    # is shared; a run would take 30 s).
    started = time.perf_counter()
    done = subprocess.run([*LKSWARM, *map(str, bad)], capture_output=True, text=True, timeout=60)
    script_s = time.perf_counter() - started
    assert_one_error_line(done.returncode, done.stderr, 2, "--json /proc/x/y.json")
    assert script_s < 10.0, script_s


@pytest.mark.parametrize("command", ["run", "report", "merge"])
def test_two_outputs_on_one_path_are_refused(
    command: str, tmp_path: Path, reports: tuple[Path, Path], lkswarm: CliRun
) -> None:
    a, b = reports
    target = tmp_path / "out.json"
    target.write_text("precious")
    args = {"run": ["run", "--participants", "2"], "report": ["report", a], "merge": ["merge", a, b]}[command]
    code, _, err = lkswarm(*args, "--json", target, "--html", tmp_path / "." / "out.json")
    assert_one_error_line(code, err, 2, "--json and --html both name")
    assert target.read_text() == "precious"


# --- at the end ----------------------------------------------------------------------------------------


def block_folder(folder: Path) -> None:
    """What a user might do during a run: the output's folder becomes a file."""
    if folder.is_dir():
        folder.rmdir()
    folder.write_text("not a folder any more")


def test_write_outputs_writes_the_others_and_returns_the_failure_without_exiting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html_dir = tmp_path / "html"
    html_dir.mkdir()
    json_path, csv_dir, html_path = tmp_path / "r.json", tmp_path / "csv", html_dir / "r.html"
    check_output_paths(json_path=json_path, html_path=html_path, csv_dir=csv_dir)  # all fine before the run
    block_folder(html_dir)  # ... and not at its end
    outputs = write_outputs(synthetic_report(4), json_path=json_path, html_path=html_path, csv_dir=csv_dir)
    assert json.loads(json_path.read_text()) == synthetic_report(4)
    assert outputs.written == [
        json_path,
        *(csv_dir / f"{t}.csv" for t in ("phases", "rooms", "failures", "timeline", "signal_paths")),
    ]
    assert len(outputs.failures) == 1 and outputs.failures[0].startswith(f"cannot write --html {html_path}: ")
    assert capsys.readouterr() == ("", ""), "write_outputs prints nothing: its caller does"
    assert announce_outputs(outputs, quiet=True) == EXIT_OUTPUT_FAILED
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: cannot write --html") and err.count("\n") == 1
    assert announce_outputs(outputs) == EXIT_OUTPUT_FAILED
    assert f"wrote {json_path}" in capsys.readouterr().out
    assert announce_outputs(write_outputs(synthetic_report(4), json_path=json_path)) is None


@pytest.mark.parametrize("quiet", [True, False])
def test_run_writes_the_other_outputs_when_one_fails_at_the_end(
    tmp_path: Path, lkswarm: CliRun, monkeypatch: pytest.MonkeyPatch, quiet: bool
) -> None:
    from lkswarm.app import runner

    html_dir = tmp_path / "html"
    html_dir.mkdir()

    def fake_run(*_args: Any, **_kwargs: Any) -> runner.RunResult:
        block_folder(html_dir)
        return runner.RunResult(synthetic_report(3), [{"identity": "p1", "packets": 5}])

    monkeypatch.setattr(runner, "run_scenario", fake_run)
    json_path, csv_dir = tmp_path / "r.json", tmp_path / "csv"
    code, out, err = lkswarm(
        "run", "--participants", "2", "--json", json_path, "--html", html_dir / "r.html", "--csv", csv_dir,
        *(["--quiet"] if quiet else []),
    )  # fmt: skip
    assert_one_error_line(code, err, EXIT_OUTPUT_FAILED, f"--html {html_dir / 'r.html'}")
    assert code == 3
    assert json.loads(json_path.read_text()) == synthetic_report(3)
    assert (csv_dir / "phases.csv").is_file() and (csv_dir / "tracks.csv").is_file()
    if quiet:
        assert out == "", "--quiet: no summary, no 'wrote' lines; the error line alone, on stderr"
    else:  # the summary first, then what was written
        assert "outcomes: completed" in out and f"wrote {json_path}" in out and f"wrote {csv_dir}" in out
        assert out.index("outcomes: completed") < out.index(f"wrote {json_path}")


def test_report_and_merge_write_the_other_outputs_when_one_fails_at_the_end(
    tmp_path: Path, reports: tuple[Path, Path], lkswarm: CliRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lkswarm.report import html_page

    html_dir = tmp_path / "html"
    render = html_page.render_html

    def render_then_block(report: dict[str, Any], plotly_js: str | None = None) -> str:
        page = render(report, plotly_js="/* stub */")
        block_folder(html_dir)
        return page

    monkeypatch.setattr(html_page, "render_html", render_then_block)
    a, b = reports
    for args in (["report", a], ["merge", a, b]):
        html_dir.unlink(missing_ok=True)  # the file the last command's "user" left
        html_dir.mkdir()
        json_path, csv_dir = tmp_path / f"{args[0]}.json", tmp_path / f"{args[0]}-csv"
        outputs = ["--json", json_path, "--csv", csv_dir, "--html", html_dir / "r.html"]
        code, out, err = lkswarm(*args, *outputs)
        assert_one_error_line(code, err, EXIT_OUTPUT_FAILED, "cannot write --html", "r.html")
        assert json.loads(json_path.read_text())["schema"] == "lkswarm.report/1"
        assert (csv_dir / "timeline.csv").is_file()
        assert f"wrote {json_path}" in out


def test_merge_never_writes_a_non_finite_number(tmp_path: Path, reports: tuple[Path, Path], lkswarm: CliRun) -> None:
    a, b = reports
    (tmp_path / "x").mkdir()
    huge = synthetic_report(1)
    huge["generator"]["cpu_s"] = 1e308  # two of them add up to infinity, which JSON cannot hold
    a.write_text(json.dumps(huge))
    other = {**huge, "started_at": "2025-02-02T00:00:00+00:00"}
    b.write_text(json.dumps(other))
    code, _, err = lkswarm("merge", a, b, "--json", tmp_path / "m.json", "--html", tmp_path / "x" / "m.html")
    assert code == EXIT_OUTPUT_FAILED
    # The JSON fails (no NaN or Infinity is ever written); the HTML is written.
    assert "cannot write --json" in err and "non-finite number at generator.cpu_s" in err
    assert err.count("\n") == 1 and not (tmp_path / "m.json").exists()
    assert (tmp_path / "x" / "m.html").is_file()


# --- whole or not at all ---------------------------------------------------------------------------------


def test_write_atomically_keeps_the_old_file_when_the_write_fails_midway(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text("the good report")
    path.chmod(0o640)

    def half_then_fail(handle: Any) -> None:
        handle.write("the new rep")
        handle.flush()
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(path, half_then_fail)
    assert path.read_text() == "the good report" and listing(tmp_path) == ["report.json"]
    write_atomically(path, lambda handle: handle.write("the new report"))
    assert path.read_text() == "the new report" and listing(tmp_path) == ["report.json"]
    assert path.stat().st_mode & 0o777 == 0o640  # a replaced file keeps its mode


def limit_file_size(limit_bytes: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def test_under_a_file_size_limit_existing_outputs_survive(tmp_path: Path) -> None:
    """`ulimit -f`: a write past the limit fails (Python ignores SIGXFSZ, so it is EFBIG, not a kill)."""
    source = tmp_path / "run.json"
    source.write_text(json.dumps(synthetic_report(1)))
    old_json, old_html, csv_dir = tmp_path / "old.json", tmp_path / "old.html", tmp_path / "csv"
    old_json.write_text('{"the": "good old report"}')
    old_html.write_text("<p>the good old page</p>")
    csv_dir.mkdir()
    (csv_dir / "timeline.csv").write_text("t_s\n1\n")
    # 64 KiB: the JSON (~20 KB) and the small tables fit, the HTML (plotly inlined, MBs) does not.
    done = subprocess.run(
        [*LKSWARM, "report", str(source), "--json", str(old_json), "--html", str(old_html), "--csv", str(csv_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_file_size(64 * 1024),
    )
    assert_one_error_line(done.returncode, done.stderr, EXIT_OUTPUT_FAILED, "cannot write --html", "too large")
    assert old_html.read_text() == "<p>the good old page</p>"  # not truncated in place
    assert json.loads(old_json.read_text()) == synthetic_report(1)
    assert (csv_dir / "timeline.csv").read_text().startswith("t_s,started")
    assert listing(tmp_path) == sorted(
        [
            "run.json",
            "old.json",
            "old.html",
            "csv",
            *(f"csv/{t}.csv" for t in ("phases", "rooms", "failures", "timeline", "signal_paths")),
        ]
    )  # no temporary file left behind
    # Under a limit that even the JSON passes: it fails too, and the old file is intact.
    done = subprocess.run(
        [*LKSWARM, "report", str(source), "--json", str(old_json)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_file_size(4 * 1024),
    )
    assert_one_error_line(done.returncode, done.stderr, EXIT_OUTPUT_FAILED, "cannot write --json")
    assert json.loads(old_json.read_text()) == synthetic_report(1)


def test_the_summary_splits_the_generator_cpu_into_the_media_thread_and_the_rest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Where a generator's CPU goes (media thread, or Python and signaling) is the first question of sizing."""
    from lkswarm.cli.output import print_report

    report = synthetic_report(2)
    report["generator"]["cpu_s"] = 1.4
    report["media"]["hub"] = {"wakeups": 10, "timeouts": 4, "io": "io_uring", "thread_cpu_s": 0.871}
    print_report(report)
    assert "generator: cpu 1.40 s (media thread 0.87 s), max rss" in capsys.readouterr().out
    del report["media"]["hub"]["thread_cpu_s"]  # no thread clock: no split, never a made-up one
    print_report(report)
    out = capsys.readouterr().out
    assert "generator: cpu 1.40 s, max rss" in out and "media thread 0" not in out
