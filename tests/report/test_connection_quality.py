"""``signal.connection_quality``: what the server told each participant of its own connection, counted,
merged and validated. No server."""

from __future__ import annotations

import copy

from lkswarm.engine.record import ParticipantRow, ServerQuality
from lkswarm.report.build import connection_quality_section
from lkswarm.report.merge import merge_reports
from lkswarm.report.validate import validate_report
from lkswarm.signal.enums import ConnectionQuality
from report_samples import synthetic_report

EXCELLENT, GOOD, POOR, LOST = (
    ConnectionQuality.EXCELLENT,
    ConnectionQuality.GOOD,
    ConnectionQuality.POOR,
    ConnectionQuality.LOST,
)


def row(quality: ServerQuality | None) -> ParticipantRow:
    return ParticipantRow("room", 10.0, None, True, quality)


def told(*reports: tuple[int, float]) -> ServerQuality:
    quality = ServerQuality.first(*reports[0])
    for report in reports[1:]:
        quality.add(*report)
    return quality


def test_participants_are_counted_by_their_last_and_worst_quality() -> None:
    rows = [
        row(told((EXCELLENT, 4.5))),
        row(told((EXCELLENT, 4.5), (GOOD, 3.9), (EXCELLENT, 4.3))),
        row(told((POOR, 2.2), (LOST, 1.0))),
        row(None),  # never told: not counted
    ]
    section = connection_quality_section(rows)
    assert section["participants"] == 3 and section["reports"] == 6
    assert section["worst"] == {"excellent": 1, "good": 1, "poor": 0, "lost": 1}
    assert section["last"] == {"excellent": 2, "good": 0, "poor": 0, "lost": 1}
    # Bins are (lo, hi], the server's livekit_quality_score bounds: 4.5 is in the top bin, 1.0 in the bottom.
    bins = section["worst_score_bins"]
    assert (bins["4.25-4.5"], bins["3.75-4"], bins["0-1"]) == (1, 1, 1) and sum(bins.values()) == 3
    assert section["min_score"] == 1.0


def test_nobody_told_has_no_minimum_score() -> None:
    section = connection_quality_section([row(None)])
    assert section["participants"] == 0 and section["min_score"] is None
    assert set(section["worst"]) == {"excellent", "good", "poor", "lost"}  # the keys are there, at zero


def test_a_quality_a_newer_server_adds_is_counted_under_its_number_and_ranks_worst() -> None:
    section = connection_quality_section([row(told((EXCELLENT, 4.5), (7, 4.4), (LOST, 1.0)))])
    assert section["worst"]["quality_7"] == 1 and section["worst"]["lost"] == 0


def test_merged_reports_add_participants_and_keep_the_lowest_score() -> None:
    reports = []
    for seed, rows in ((1, [row(told((EXCELLENT, 4.5)))]), (2, [row(told((GOOD, 3.6))), row(None)])):
        report = synthetic_report(seed)
        report["signal"]["connection_quality"] = connection_quality_section(rows)
        reports.append(validate_report(copy.deepcopy(report), f"report {seed}"))
    merged = merge_reports(reports)["signal"]["connection_quality"]
    assert merged["participants"] == 2 and merged["reports"] == 2
    assert merged["worst"] == {"excellent": 1, "good": 1, "poor": 0, "lost": 0}
    assert merged["worst_score_bins"]["4.25-4.5"] == 1 and merged["worst_score_bins"]["3.5-3.75"] == 1
    assert merged["min_score"] == 3.6
