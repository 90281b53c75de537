"""The report's per-room table counts each started participant's outcome exactly once. No server."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from lkswarm.engine.outcome import Outcome
from lkswarm.engine.record import ParticipantRow
from lkswarm.report.build import room_table


def test_participants_alive_at_the_end_count_as_completed_in_their_room() -> None:
    """The engine takes the rows before it stops the participants still alive (ParticipantRow: outcome None,
    'it then completed'); the table used to count them nowhere, so every room read completed 0."""
    rows = [
        ParticipantRow("r1", 12.0, None, True),  # alive at the end
        ParticipantRow("r1", 15.0, Outcome.left("departure"), False),
        ParticipantRow("r2", None, Outcome.failed("connect_failed"), False),
        ParticipantRow("r2", 11.0, None, False),  # alive, not active
    ]
    record: Any = SimpleNamespace(room_names=["r1", "r1", "r2", "r2", "r2"], participants=rows)
    table = {row["room"]: row for row in room_table(record)}
    assert (table["r1"]["completed"], table["r1"]["left"], table["r1"]["failed"]) == (1, 1, 0)
    assert (table["r2"]["completed"], table["r2"]["left"], table["r2"]["failed"]) == (1, 0, 1)
    assert table["r2"]["scheduled"] == 3, "one of r2's arrivals never started: scheduled, no outcome"
    assert (table["r1"]["active_at_end"], table["r2"]["active_at_end"]) == (1, 0)


def test_a_room_where_nobody_joined_has_no_join_percentiles() -> None:
    """They read 0 ms, which the CSV and HTML showed as a measured join time."""
    rows = [ParticipantRow("r1", None, Outcome.failed("connect_failed"), False), ParticipantRow("r2", 20.0, None, True)]
    record: Any = SimpleNamespace(room_names=["r1", "r2"], participants=rows)
    table = {row["room"]: row for row in room_table(record)}
    assert "join_p50_ms" not in table["r1"] and "join_p99_ms" not in table["r1"]
    assert table["r2"]["join_p50_ms"] == 20.0
