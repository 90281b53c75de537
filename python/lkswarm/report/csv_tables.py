"""The report as CSV tables, one file per table: phases, rooms, failures, timeline, signaling paths and per-track
media.

Every table is written even when the report has no rows for it (header only), so scripts that read a
folder of runs find the same files and columns in each.

`write_atomically` is how every output file is written (these tables, and the JSON and HTML of
`lkswarm.cli.reports`): whole or not at all.
"""

from __future__ import annotations

import contextlib
import csv
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

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
# One row per (receiver, sender, channel) of data messages (lkswarm.media.data).
DATA_CSV_FIELDS = (
    "receiver", "room", "sender", "channel", "received", "expected", "missing", "duplicates", "out_of_order",
    "bytes", "foreign", "slow_reader",
)  # fmt: skip
SIGNAL_PATH_FIELDS = (
    "path", "participants", "completed", "left", "failed", "connects", "resumes", "offers_sent", "fallbacks",
)  # fmt: skip
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
        rows = [{**row, "count": 1} for row in named]
        failed = ((report.get("participants") or {}).get("outcomes") or {}).get("failed", 0)
        if failed > len(rows):  # the report lists the first ones only: say how many more, not nothing
            rows.append(
                {"outcome": "failed:(not listed)", "detail": "beyond the report's list", "count": failed - len(rows)}
            )
        return rows
    participants = report.get("participants") or {}
    details = participants.get("failure_details") or {}
    return [
        {"outcome": f"failed:{reason}", "detail": details.get(f"failed:{reason}", ""), "count": count}
        for reason, count in (participants.get("failures") or {}).items()
    ]


def signal_path_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per signaling path (v1, v0); ``fallbacks`` (auto: v1 answered 404) is counted on v1's row."""
    paths = (report.get("signal") or {}).get("paths") or {}
    rows = []
    for path in ("v1", "v0"):
        figures = paths.get(path)
        if figures is None:
            continue
        outcomes = figures.get("outcomes") or {}
        rows.append(
            {
                "path": path,
                "participants": figures.get("participants", 0),
                **{kind: outcomes.get(kind, 0) for kind in ("completed", "left", "failed")},
                "connects": figures.get("connects", 0),
                "resumes": figures.get("resumes", 0),
                "offers_sent": figures.get("offers_sent", 0),
                "fallbacks": paths.get("fallbacks", 0) if path == "v1" else 0,
            }
        )
    return rows


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


def write_atomically(path: Path, write: Callable[[TextIO], None]) -> None:
    """Writes ``path`` (UTF-8) whole or not at all: ``write`` fills a temporary file beside it, renamed over it.

    A write that fails midway (a full disk, ``ulimit -f``, an exception in ``write``) leaves the file that
    was at ``path`` as it was, and no temporary file. Creates the parent folders. Raises OSError.
    """
    # Through a symlink to the file it names, as a plain write would; the rename must stay on its filesystem.
    path = Path(os.path.realpath(path))
    if path.exists() and not path.is_file() and not path.is_dir():
        # /dev/stdout, a FIFO: there is no file to keep, and renaming over a device would replace it.
        with path.open("w", encoding="utf-8", newline="") as handle:
            write(handle)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            # 0o666 less the umask, as for any new file; an existing file keeps its mode below.
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            with contextlib.suppress(FileNotFoundError):
                os.fchmod(handle.fileno(), stat.S_IMODE(os.stat(path).st_mode))
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())  # on disk before the rename, or a crash could leave an empty file
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def _write(path: Path, fields: Sequence[str], rows: Iterable[dict[str, Any]]) -> Path:
    def fill(handle: TextIO) -> None:
        writer = csv.DictWriter(handle, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        # csv writes None (a missing sample) as an empty cell.
        writer.writerows(rows)

    write_atomically(path, fill)
    return path


def write_csv_tables(
    report: dict[str, Any],
    out_dir: Path,
    track_rows: list[dict[str, Any]] | None = None,
    data_rows: list[dict[str, Any]] | None = None,
) -> list[Path]:
    """Writes phases.csv, rooms.csv, failures.csv, timeline.csv, signal_paths.csv (and tracks.csv given track rows)
    into ``out_dir``.

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
            _write(out_dir / "signal_paths.csv", SIGNAL_PATH_FIELDS, signal_path_rows(report)),
        ]
        if track_rows is not None:
            write_track_csv(out_dir / "tracks.csv", track_rows)
            written.append(out_dir / "tracks.csv")
        if data_rows is not None and (data_rows or report.get("data")):
            written.append(_write(out_dir / "data.csv", DATA_CSV_FIELDS, data_rows))
    except OSError as exc:
        raise ReportError(f"cannot write CSV tables to {out_dir}: {exc.strerror or exc}") from None
    return written


TRACK_CSV_FIELDS = (
    "identity", "room", "track_id", "kind", "codec", "packets", "bytes", "bitrate_bps", "expected", "lost", "jitter_ms",
)  # fmt: skip
CSV_ROUNDING = (("bitrate_bps", None), ("jitter_ms", 3))


def write_track_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Per-track receive detail: one row per (subscriber, track)."""

    def fill(handle: TextIO) -> None:
        writer = csv.DictWriter(handle, fieldnames=TRACK_CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            # Whole bits per second and microseconds of jitter: the rest is noise in a spreadsheet.
            rounded = {key: round(row[key], digits) for key, digits in CSV_ROUNDING if isinstance(row.get(key), float)}
            writer.writerow({**row, **rounded})

    write_atomically(path, fill)
