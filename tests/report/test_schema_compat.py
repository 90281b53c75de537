"""`lkswarm.report/1` across the restructure into layers: a report written by the code before it (fad0167)
is still read and merged, and a report written now keeps every one of its keys, in its order, with its types."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers import run_cli
from lkswarm.app.server import LocalServer
from lkswarm.auth import Credentials
from lkswarm.report.merge import check_schema, merge_reports

BEFORE = Path(__file__).resolve().parents[1] / "data" / "report-before-layers-fad0167.json"
# Keys whose children name runtime things (phases seen, message kinds, codecs, reasons), not the schema.
OPEN_MAPS = frozenset(
    {
        ".histograms",
        ".signal.messages_received",
        ".signal.leave_requests",
        ".media.tracks_by_codec",
        ".media.track_subscribed_ms",
        ".participants.failures",
        ".participants.failure_details",
        ".participants.left_reasons",
    }
)


def shape(value: Any, path: str = "") -> list[str]:
    """Every key path with its JSON type, in document order (so key order counts too)."""
    if isinstance(value, dict):
        if path in OPEN_MAPS:
            return [f"{path}.*"]
        out = [f"{path}{{}}"] if not value else []
        for key, child in value.items():
            out += shape(child, f"{path}.{key}")
        return out
    if isinstance(value, list):
        out = [f"{path}[]"]
        for child in value[:1]:
            out += shape(child, f"{path}[]")
        return out
    kind = "number" if isinstance(value, int | float) and not isinstance(value, bool) else type(value).__name__
    return [f"{path}:{kind}"]


def test_a_report_written_before_the_restructure_is_read_and_merged() -> None:
    before = check_schema(json.loads(BEFORE.read_text()), BEFORE.name)
    other = json.loads(BEFORE.read_text())
    other["started_at"] = "2026-12-04T00:00:00+00:00"  # a second run of the same shape
    merged = merge_reports([before, other])
    assert merged["participants"]["scheduled"] == 2 * before["participants"]["scheduled"]
    assert merged["latency_ms"]["join_response"]["count"] == 2 * before["latency_ms"]["join_response"]["count"]


def test_a_report_written_now_has_the_shape_of_one_written_before(
    tmp_path: Path, livekit_server: LocalServer, credentials: Credentials
) -> None:
    before = json.loads(BEFORE.read_text())
    args = ["--url", livekit_server.url, "--audio-publishers", "1", "--video-publishers", "1"]
    code, now, stderr = run_cli(
        [*args, "--rooms", "2", "--participants", "3", "--duration", "6s"], credentials, tmp_path
    )
    assert code == 0, stderr
    ignored = (".config", ".target")  # the run's own settings and where it ran
    now_paths = [p for p in shape(now) if not p.startswith(ignored)]
    before_paths = [p for p in shape(before) if not p.startswith(ignored)]
    # Every key of the report before is still there, with its type, in its order; keys added since (a new
    # latency phase, new signal counters) may stand between them: readers of the old keys see no change.
    positions = [now_paths.index(p) if p in now_paths else -1 for p in before_paths]
    missing = [p for p, at in zip(before_paths, positions, strict=True) if at < 0]
    assert missing == [] and positions == sorted(positions)
