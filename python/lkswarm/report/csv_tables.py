"""The report as CSV tables, one file per table: phases, rooms, failures, timeline and per-track media.

Every table is written even when the report has no rows for it (header only), so scripts that read a
folder of runs find the same files and columns in each.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lkswarm.engine.timeline import TIMELINE_FIELDS
from lkswarm.errors import ReportError

PHASE_FIELDS = ("phase", "count", "min_ms", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms")
ROOM_FIELDS = (
    "room",
    "scheduled",
    "joined",
    "active_at_end",
    "completed",
    "left",
    "failed",
    "join_p50_ms",
    "join_p99_ms",
)
# `count` is 1 for a named participant; reports without `failed_participants` give one row per reason.
FAILURE_FIELDS = ("identity", "room", "outcome", "detail", "at_s", "count")


def phase_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per latency phase (zero counts included, so every run has the same rows)."""
    rows = []
    for phase, stats in (report.get("latency_ms") or {}).items():
        row: dict[str, Any] = {"phase": phase, "count": stats.get("count", 0)}
        for key in ("min", "p50", "p90", "p99", "p999", "max", "mean"):
            row[f"{key}_ms"] = stats.get(key, 0.0)
        rows.append(row)
    return rows


def failure_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Named failed participants when the report has them, else one row per failure reason with its count."""
    named = report.get("failed_participants")
    if named is not None:
        return [{**row, "count": 1} for row in named]
    participants = report.get("participants") or {}
    details = participants.get("failure_details") or {}
    return [
        {"outcome": f"failed:{reason}", "detail": details.get(f"failed:{reason}", ""), "count": count}
        for reason, count in (participants.get("failures") or {}).items()
    ]


def timeline_columns(timeline: dict[str, Any]) -> list[str]:
    """The known series in their usual order, then any series this report adds (one CSV column each)."""
    series = [key for key, value in timeline.items() if isinstance(value, list)]
    return [key for key in TIMELINE_FIELDS if key in series or not series] + [
        key for key in series if key not in TIMELINE_FIELDS
    ]


def timeline_rows(timeline: dict[str, Any], columns: Sequence[str]) -> list[dict[str, Any]]:
    length = len(timeline.get("t_s") or [])
    rows = []
    for i in range(length):
        row = {}
        for column in columns:
            values = timeline.get(column) or []
            row[column] = values[i] if i < len(values) else ""
        rows.append(row)
    return rows


def _write(path: Path, fields: Sequence[str], rows: Iterable[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        # csv writes None (a missing sample) as an empty cell.
        writer.writerows(rows)
    return path


def write_csv_tables(
    report: dict[str, Any], out_dir: Path, track_rows: list[dict[str, Any]] | None = None
) -> list[Path]:
    """Writes phases.csv, rooms.csv, failures.csv, timeline.csv (and tracks.csv given track rows) into ``out_dir``.

    Returns the paths written. Raises ReportError when the folder cannot be created or written.
    """
    timeline = report.get("timeline") or {}
    columns = timeline_columns(timeline)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        written = [
            _write(out_dir / "phases.csv", PHASE_FIELDS, phase_rows(report)),
            _write(out_dir / "rooms.csv", ROOM_FIELDS, report.get("rooms") or []),
            _write(out_dir / "failures.csv", FAILURE_FIELDS, failure_rows(report)),
            _write(out_dir / "timeline.csv", columns, timeline_rows(timeline, columns)),
        ]
        if track_rows is not None:
            write_track_csv(out_dir / "tracks.csv", track_rows)
            written.append(out_dir / "tracks.csv")
    except OSError as exc:
        raise ReportError(f"cannot write CSV tables to {out_dir}: {exc.strerror or exc}") from None
    return written


TRACK_CSV_FIELDS = (
    "identity", "room", "track_id", "kind", "codec", "packets", "bytes", "bitrate_bps", "expected", "lost", "jitter_ms",
)  # fmt: skip
CSV_ROUNDING = (("bitrate_bps", None), ("jitter_ms", 3))


def write_track_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Per-track receive detail: one row per (subscriber, track)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TRACK_CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            # Whole bits per second and microseconds of jitter: the rest is noise in a spreadsheet.
            rounded = {key: round(row[key], digits) for key, digits in CSV_ROUNDING if isinstance(row.get(key), float)}
            writer.writerow({**row, **rounded})
