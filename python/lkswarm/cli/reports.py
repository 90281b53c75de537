"""``lkswarm report`` and ``lkswarm merge``, and `write_outputs`, which ``lkswarm run`` uses for its files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from lkswarm.cli.output import fail, print_report, stdout
from lkswarm.errors import ReportError

# The report modules (hdrh, plotly, the media tier's CSV writer) are imported inside the commands, so that
# registering them keeps `lkswarm --help` fast.


JsonOut = Annotated[Path | None, typer.Option("--json", help="Write the report (lkswarm.report/1) here.")]
HtmlOut = Annotated[
    Path | None, typer.Option("--html", help="Write a single-file HTML report with plots (works offline).")
]
CsvOut = Annotated[
    Path | None,
    typer.Option("--csv", help="Write CSV tables (phases, rooms, failures, timeline) into this folder."),
]


def load_report(path: Path) -> dict[str, Any]:
    """Reads one lkswarm.report/1 JSON file; ReportError (one line) when it is missing, not JSON or another schema."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ReportError(f"{path}: is a folder, not a report file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        report = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    from lkswarm.report.merge import check_schema

    return check_schema(report, str(path))


def _write_text(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_outputs(
    report: dict[str, Any],
    *,
    json_path: Path | None = None,
    html_path: Path | None = None,
    csv_dir: Path | None = None,
    track_rows: list[dict[str, Any]] | None = None,
) -> list[Path]:
    """Writes each output asked for; returns the paths written. Raises ReportError when one cannot be written."""
    written: list[Path] = []
    if json_path is not None:
        _write_text(json_path, json.dumps(report, indent=2) + "\n")
        written.append(json_path)
    if csv_dir is not None:
        from lkswarm.report.csv_tables import write_csv_tables

        written += write_csv_tables(report, csv_dir, track_rows=track_rows)
    if html_path is not None:
        from lkswarm.report.html_page import render_html

        _write_text(html_path, render_html(report))
        written.append(html_path)
    return written


def report_command(
    run_json: Annotated[Path, typer.Argument(metavar="RUN.json", help="A report written by `lkswarm run --json`.")],
    html_path: HtmlOut = None,
    csv_dir: CsvOut = None,
    json_path: JsonOut = None,
) -> None:
    """Re-render a saved report: print its summary, or write it as HTML, CSV tables or JSON."""
    try:
        report = load_report(run_json)
        written = write_outputs(report, json_path=json_path, html_path=html_path, csv_dir=csv_dir)
    except ReportError as exc:
        raise fail(str(exc), 2 if not run_json.exists() else 1) from None
    if not written:
        print_report(report)
    for path in written:
        stdout.print(f"wrote {path}", highlight=False)


def merge_command(
    inputs: Annotated[list[Path], typer.Argument(metavar="REPORT.json", help="Reports of runs made side by side.")],
    json_path: JsonOut = None,
    html_path: HtmlOut = None,
    csv_dir: CsvOut = None,
) -> None:
    """Merge reports of several generator processes into one: counts add, histograms merge losslessly."""
    if len(inputs) < 2:
        raise fail("merge needs at least two reports", 2)
    if json_path is None and html_path is None and csv_dir is None:
        raise fail("nothing to write: give --json PATH (and/or --html PATH, --csv DIR)", 2)
    missing = [str(path) for path in inputs if not path.is_file()]
    if missing:
        raise fail(f"no such report file: {', '.join(missing)}", 2)
    from lkswarm.report.merge import merge_reports

    try:
        merged = merge_reports([load_report(path) for path in inputs])
        written = write_outputs(merged, json_path=json_path, html_path=html_path, csv_dir=csv_dir)
    except ReportError as exc:
        raise fail(str(exc), 1) from None
    p = merged["participants"]
    stdout.print(
        f"merged {len(inputs)} reports: {p.get('joined', 0)}/{p.get('scheduled', 0)} joined, "
        f"join_response p99 {merged['latency_ms'].get('join_response', {}).get('p99', 0.0):.1f} ms",
        highlight=False,
    )
    for path in written:
        stdout.print(f"wrote {path}", highlight=False)


def register(app: typer.Typer) -> None:
    """Adds ``report`` and ``merge`` to the ``lkswarm`` command line."""
    app.command("report")(report_command)
    app.command("merge")(merge_command)
