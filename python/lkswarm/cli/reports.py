"""``lkswarm report`` and ``lkswarm merge``; `check_output_paths` and `write_outputs`, which ``lkswarm run`` uses too.

The outputs' contract, for all three commands:

- every output path is checked before any work (`check_output_paths`): a path that cannot be written, or
  two outputs on one path, is a usage error (exit 2) that costs nobody a run;
- every file is written whole or not at all (`lkswarm.report.csv_tables.write_atomically`): a failed
  write leaves the file that was there;
- an output that still fails at the end does not cost the others: they are written (`write_outputs`
  returns what was written and what failed, and never ends the command itself), the command prints its
  summary as usual, then each failure as one error line (`announce_outputs`), and exits
  `EXIT_OUTPUT_FAILED`.

Report files read back are checked against the schema (`lkswarm.report.validate`): a broken one is a
one-line error naming the file and the key (exit 1, like any report that cannot be read), never a traceback.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from lkswarm.cli.output import fail, print_capacity, print_report, stdout
from lkswarm.errors import ConfigError, ReportError, one_line

# The report modules (hdrh, plotly, the media tier's CSV writer) are imported inside the commands, so that
# registering them keeps `lkswarm --help` fast.

EXIT_OUTPUT_FAILED = 3  # an output could not be written at the end; the others were (0/1/2/99/128+N are taken)
# The files `--csv DIR` writes: an output of another kind must not be one of them.
CSV_TABLE_FILES = ("phases.csv", "rooms.csv", "failures.csv", "timeline.csv", "tracks.csv")

JsonOut = Annotated[Path | None, typer.Option("--json", help="Write the report (lkswarm.report/1) here.")]
HtmlOut = Annotated[
    Path | None, typer.Option("--html", help="Write a single-file HTML report with plots (works offline).")
]
CsvOut = Annotated[
    Path | None,
    typer.Option("--csv", help="Write CSV tables (phases, rooms, failures, timeline) into this folder."),
]


# -- before any work: can every output be written? ------------------------------------------------------


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (through links and relative parts); False when either is missing."""
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_paths(
    *, json_path: Path | None = None, html_path: Path | None = None, csv_dir: Path | None = None
) -> None:
    """Raises ConfigError (one line: a usage error, exit 2) unless every output given can be written.

    A file output must not be a folder, a ``--csv`` folder not a file, each needs a folder it can create
    files in (or a missing one it can create), and no two outputs may name the same path. It tries rather
    than trusts permission bits (root ignores them; ``/proc`` refuses root): it creates, then removes, a
    probe file or folder, and leaves nothing behind.
    """
    files = [(flag, path) for flag, path in (("--json", json_path), ("--html", html_path)) if path is not None]
    for flag, path in files:
        _check_file_output(flag, path)
    if csv_dir is not None:
        _check_folder_output(csv_dir)
    _check_distinct(files, csv_dir)


def _check_file_output(flag: str, path: Path) -> None:
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file path")
    if path.exists() and not path.is_file():  # /dev/stdout, a FIFO: written in place, if writable
        if not os.access(path, os.W_OK):
            raise ConfigError(f"cannot write {flag} {path}: permission denied")
        return
    if path.is_file() and not os.access(path, os.W_OK):  # replacing it would work, but its mode says no
        raise ConfigError(f"cannot write {flag} {path}: the file is read-only")
    _check_can_create_in(flag, path, path.parent)


def _check_folder_output(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--csv {folder} is a file; give a folder for the CSV tables")
    _check_can_create_in("--csv", folder, folder)


def _check_can_create_in(flag: str, path: Path, folder: Path) -> None:
    """A file can be created in ``folder``, or ``folder`` (and the folders above it that are missing) can be."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"cannot write {flag} {path}: {existing} is a file, not a folder")
    probe = existing / f".lkswarm-probe-{secrets.token_hex(4)}"
    try:
        if existing == folder:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            probe.unlink()
        else:
            probe.mkdir()
            probe.rmdir()
    except OSError as exc:
        what = "create files in" if existing == folder else "create a folder in"
        raise ConfigError(f"cannot write {flag} {path}: cannot {what} {existing} ({exc.strerror or exc})") from None


def _check_distinct(files: list[tuple[str, Path]], csv_dir: Path | None) -> None:
    """No two outputs on one path: one would overwrite the other."""
    real = [(flag, path, Path(os.path.realpath(path))) for flag, path in files]
    for i, (flag, path, where) in enumerate(real):
        for other_flag, _, other_where in real[i + 1 :]:
            if where == other_where:
                raise ConfigError(f"{flag} and {other_flag} both name {path}; give each output its own path")
    if csv_dir is None:
        return
    folder = Path(os.path.realpath(csv_dir))
    for flag, path, where in real:
        if folder.is_relative_to(where):  # the same path, or the folder inside the file's path
            raise ConfigError(f"{flag} {path} and --csv {csv_dir} overlap; give each output its own path")
        if where.parent == folder and where.name in CSV_TABLE_FILES:
            raise ConfigError(f"{flag} {path} is one of the tables --csv {csv_dir} writes; give it another path")


# -- reading reports -----------------------------------------------------------------------------------


def load_report(path: Path) -> dict[str, Any]:
    """Reads one lkswarm.report/1 JSON file and checks it against the schema; ReportError (one line) otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ReportError(f"{path}: is a folder, not a report file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    from lkswarm.report.validate import parse_report_json, validate_report

    return validate_report(parse_report_json(text, str(path)), str(path))


# -- writing outputs -------------------------------------------------------------------------------------


def _report_json(report: dict[str, Any], path: Path) -> str:
    """The report as JSON text; ReportError where it holds a NaN or an infinity, which JSON has no way to say."""
    try:
        return json.dumps(report, indent=2, allow_nan=False) + "\n"
    except ValueError:
        from lkswarm.report.validate import non_finite_path

        where = non_finite_path(report)
        raise ReportError(f"cannot write --json {path}: the report holds a non-finite number at {where}") from None


def _write_text(flag: str, path: Path, text: str) -> None:
    from lkswarm.report.csv_tables import write_atomically

    def fill(handle: TextIO) -> None:
        handle.write(text)

    try:
        write_atomically(path, fill)
    except OSError as exc:
        raise ReportError(f"cannot write {flag} {path}: {exc.strerror or exc}") from None


@dataclass(slots=True)
class Outputs:
    """What `write_outputs` did: the files written, and one error line per output that failed."""

    written: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def write_outputs(
    report: dict[str, Any],
    *,
    json_path: Path | None = None,
    html_path: Path | None = None,
    csv_dir: Path | None = None,
    track_rows: list[dict[str, Any]] | None = None,
    data_rows: list[dict[str, Any]] | None = None,
) -> Outputs:
    """Writes each output asked for, each file whole or not at all; returns what was written and what failed.

    One that fails does not stop the others, and nothing is printed here: the caller prints its summary,
    then `announce_outputs`, which says what was written and what failed and gives the exit code.
    """
    outputs = Outputs()
    written, failures = outputs.written, outputs.failures
    if json_path is not None:
        try:
            _write_text("--json", json_path, _report_json(report, json_path))
            written.append(json_path)
        except ReportError as exc:
            failures.append(str(exc))
    if csv_dir is not None:
        from lkswarm.report.csv_tables import write_csv_tables

        try:
            written += write_csv_tables(report, csv_dir, track_rows=track_rows, data_rows=data_rows)
            if isinstance(report.get("capacity"), dict):  # `lkswarm capacity`: one row per level
                from lkswarm.report.capacity_text import write_levels_csv

                written.append(write_levels_csv(csv_dir / "levels.csv", report["capacity"]))
        except ReportError as exc:
            failures.append(str(exc))
    if html_path is not None:
        from lkswarm.report.html_page import render_html

        try:
            _write_text("--html", html_path, render_html(report))
            written.append(html_path)
        except ReportError as exc:
            failures.append(str(exc))
    return outputs


def announce_outputs(outputs: Outputs, *, quiet: bool = False) -> int | None:
    """Prints ``wrote PATH`` for each file written (not with ``quiet``), then each failure as one error line
    (always: on stderr); returns `EXIT_OUTPUT_FAILED` if an output failed, else None."""
    if not quiet:
        for path in outputs.written:
            stdout.print(f"wrote {path}", highlight=False)
    for failure in outputs.failures:
        fail(failure)  # prints its error line; the caller exits
    return EXIT_OUTPUT_FAILED if outputs.failures else None


# -- the commands ----------------------------------------------------------------------------------------


def report_command(
    run_json: Annotated[Path, typer.Argument(metavar="RUN.json", help="A report written by `lkswarm run --json`.")],
    html_path: HtmlOut = None,
    csv_dir: CsvOut = None,
    json_path: JsonOut = None,
) -> None:
    """Re-render a saved report: print its summary, or write it as HTML, CSV tables or JSON.

    Exit codes: 0 done; 1 the report cannot be read (not JSON, another schema, a key that breaks it);
    2 bad usage (no such file, an output path that cannot be written); 3 an output failed at the end.
    """
    try:
        check_output_paths(json_path=json_path, html_path=html_path, csv_dir=csv_dir)
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    try:
        report = load_report(run_json)
    except ReportError as exc:
        raise fail(str(exc), 2 if not run_json.exists() else 1) from None
    try:
        outputs = write_outputs(report, json_path=json_path, html_path=html_path, csv_dir=csv_dir)
        if json_path is None and html_path is None and csv_dir is None:
            print_report(report)
            if isinstance(report.get("capacity"), dict):  # a search's: its levels and verdict, as it printed them
                print_capacity(report, with_warnings=False)
    except _SHAPE_ERRORS as exc:
        raise fail(f"{run_json}: a section does not have a report's shape ({one_line(exc)[:200]})", 1) from None
    code = announce_outputs(outputs)
    if code is not None:
        raise typer.Exit(code)


# What rendering a section of the wrong shape raises: validation checks the sections everything reads, not every
# key of the free-form ones (``data``, ``probes``, ``capacity``) that the HTML and CSV tables index into.
_SHAPE_ERRORS = (KeyError, TypeError, AttributeError, ValueError, IndexError)


def _check_inputs(inputs: list[Path]) -> None:
    """Usage errors of ``merge``'s inputs: too few, missing, or one file given twice."""
    if len(inputs) < 2:
        raise fail("merge needs at least two reports", 2)
    missing = [str(path) for path in inputs if not path.is_file()]
    if missing:
        raise fail(f"no such report file: {', '.join(missing)}", 2)
    seen: dict[Path, Path] = {}
    for path in inputs:
        real = Path(os.path.realpath(path))
        if real in seen:
            raise fail(f"{path} is the same file as {seen[real]}: merging a run twice doubles its counts", 2)
        seen[real] = path


def merge_command(
    inputs: Annotated[list[Path], typer.Argument(metavar="REPORT.json", help="Reports of runs made side by side.")],
    json_path: JsonOut = None,
    html_path: HtmlOut = None,
    csv_dir: CsvOut = None,
) -> None:
    """Merge reports of several generator processes into one: counts add, histograms merge losslessly.

    Exit codes: 0 done; 1 a report cannot be read or merged; 2 bad usage (fewer than two reports, a
    missing file, the same run twice, an output path that cannot be written); 3 an output failed at the end.
    """
    # The inputs first: a missing, unreadable or repeated report is the error to name, with or without an output.
    _check_inputs(inputs)
    from lkswarm.report.merge import find_duplicate, merge_reports

    try:
        reports = [load_report(path) for path in inputs]
    except ReportError as exc:
        raise fail(str(exc), 1) from None
    duplicate = find_duplicate(reports)
    if duplicate is not None:
        first, second, how = duplicate
        raise fail(f"{inputs[second]} and {inputs[first]} hold one run ({how}): merging it twice doubles its counts", 2)
    if json_path is None and html_path is None and csv_dir is None:
        raise fail("nothing to write: give --json PATH (and/or --html PATH, --csv DIR)", 2)
    try:
        check_output_paths(json_path=json_path, html_path=html_path, csv_dir=csv_dir)
    except ConfigError as exc:
        raise fail(str(exc), 2) from None
    for flag, output in (("--json", json_path), ("--html", html_path)):
        if output is not None and any(_same_file(output, path) for path in inputs):
            raise fail(f"{flag} {output} is one of the reports to merge: writing it would lose that report", 2)
    try:
        merged = merge_reports(reports)
        p = merged["participants"]
        outputs = write_outputs(merged, json_path=json_path, html_path=html_path, csv_dir=csv_dir)
    except ReportError as exc:
        raise fail(str(exc), 1) from None
    except _SHAPE_ERRORS as exc:
        shape = one_line(exc)[:200]
        raise fail(f"a section of one of the reports does not have a report's shape ({shape})", 1) from None
    stdout.print(
        f"merged {len(inputs)} reports: {p.get('joined', 0)}/{p.get('scheduled', 0)} joined, "
        f"join_response p99 {merged['latency_ms'].get('join_response', {}).get('p99', 0.0):.1f} ms",
        highlight=False,
    )
    code = announce_outputs(outputs)
    if code is not None:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Adds ``report`` and ``merge`` to the ``lkswarm`` command line."""
    app.command("report")(report_command)
    app.command("merge")(merge_command)
